"""The map's points as the page reads them: typed arrays in base64, text in chunks.

A million points would be ~60 MB as JSON lists of numbers and names; here every number a point
needs to be drawn is a little-endian typed array, base64-encoded (what ``atob`` + a
``Float32Array`` view decode without parsing): coordinates as ``float32``, the trace (legend
group) as ``uint16``, cluster as ``int32``, probability as ``float32``, the thumbnail's cell in
the atlas as ``int32`` — 22 bytes a point, 29 as base64 (29 MB at 1M points).

The text of each point (file name, title, artist, year, date, record link, label, thumbnail
URL) is cut into chunks of :data:`CHUNK` rows. Small maps carry every chunk inline; large ones
write each chunk to its own script file beside the page, loaded only when a point of it is
hovered or a search or a selection needs it (a page opened from disk may load scripts from files beside it, but may
not ``fetch`` them: Chromium treats every ``file://`` URL as its own origin).

Zoom tiles
----------
From :data:`~stylecluster.viz.umap_map.DENSITY_FROM` points the page draws a density raster of
every point (:mod:`~stylecluster.viz.density`) and only a seeded sample of the points
(``points.js``, each set with its points' global ``index``); the rest come in tiles
(:func:`zoom_tiles`: a quadtree cut until each tile holds at most :data:`TILE_POINTS`), written
as ``tiles/<k>.js`` and loaded when the view is small enough that the tiles it touches hold at
most :data:`TILE_BUDGET` points together. Every point is in exactly one tile, so at enough zoom
every point is drawn and can be hovered.
"""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import save_atomic
from .html import script_json

#: Rows of text per chunk file: ~300 KB of names and titles, loaded in a few ms from disk.
CHUNK = 2048

#: The arrays and their dtypes, as the page's script decodes them.
DTYPES = {"x": "<f4", "y": "<f4", "trace": "<u2", "cluster": "<i4", "prob": "<f4", "thumb": "<i4", "index": "<i4"}
JS_TYPES = {"<f4": "Float32Array", "<u2": "Uint16Array", "<i4": "Int32Array"}


def encode_array(values, dtype: str) -> str:
    """``values`` as little-endian ``dtype`` bytes in base64."""
    return base64.b64encode(np.ascontiguousarray(values, dtype=np.dtype(dtype)).tobytes()).decode("ascii")


def decode_array(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype))


def point_arrays(coords: np.ndarray, trace: np.ndarray, points: pd.DataFrame, thumb: np.ndarray) -> dict:
    """Every per-point number of the map, encoded: {name: {"dtype", "type", "data"}}."""
    columns = {
        "x": coords[:, 0],
        "y": coords[:, 1],
        "trace": trace,
        "cluster": points["cluster"].to_numpy(),
        "prob": points["probability"].fillna(0.0).to_numpy(),
        "thumb": thumb,
    }
    return {name: {"dtype": DTYPES[name], "type": JS_TYPES[DTYPES[name]], "data": encode_array(values, DTYPES[name])}
            for name, values in columns.items()}


def point_arrays_of(rows: np.ndarray, coords: np.ndarray, trace: np.ndarray, cluster: np.ndarray, prob: np.ndarray,
                    thumb: np.ndarray) -> dict:
    """The arrays of the points ``rows`` only (a sample or a tile), with their global ``index``."""
    columns = {"x": coords[rows, 0], "y": coords[rows, 1], "trace": trace[rows], "cluster": cluster[rows],
               "prob": prob[rows], "thumb": thumb[rows], "index": rows}
    return {name: {"dtype": DTYPES[name], "type": JS_TYPES[DTYPES[name]], "data": encode_array(values, DTYPES[name])}
            for name, values in columns.items()}


#: Most points in a zoom tile: ~3 MB of script, decoded in a few tens of ms.
TILE_POINTS = 50_000
#: Most points drawn from tiles at once; a view touching more shows the sample.
TILE_BUDGET = 400_000
#: A tile is not cut below this depth (2^-16 of the extent), whatever it holds: points stacked on
#: one spot cannot be separated by cutting.
MAX_TILE_DEPTH = 16


def zoom_tiles(coords: np.ndarray, extent: tuple[float, float, float, float], capacity: int | None = None) -> list[tuple]:
    """The quadtree leaves over ``extent`` holding at most ``capacity`` points each (deeper than
    :data:`MAX_TILE_DEPTH` they hold what is left): ``[(x0, x1, y0, y1, rows), ...]``, ``rows``
    ascending ``int64`` positions. Every point inside the extent is in exactly one leaf (a point
    on a cut belongs to the upper/right side; one on the extent's far edge to the last leaf)."""
    capacity = TILE_POINTS if capacity is None else capacity
    tiles = []
    stack = [(extent, np.arange(len(coords), dtype=np.int64), 0)]
    while stack:
        (x0, x1, y0, y1), rows, depth = stack.pop()
        if len(rows) <= capacity or depth >= MAX_TILE_DEPTH:
            if len(rows):
                tiles.append((x0, x1, y0, y1, rows))
            continue
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        right, top = coords[rows, 0] >= xm, coords[rows, 1] >= ym
        for box, keep in (((x0, xm, y0, ym), ~right & ~top), ((xm, x1, y0, ym), right & ~top),
                          ((x0, xm, ym, y1), ~right & top), ((xm, x1, ym, y1), right & top)):
            stack.append((box, rows[keep], depth + 1))
    return sorted(tiles, key=lambda t: t[4][0])


def text_chunks(points: pd.DataFrame, thumb_src: dict[str, str] | None = None):
    """The points' text, :data:`CHUNK` rows at a time (a generator: ten million rows' text is
    ~1.6 GB as Python lists); ``thumb_src`` maps a sha256 to its thumbnail's URL when the page
    does not carry the thumbnails itself ("" for none)."""
    optional = [c for c in ("date", "link") if c in points and points[c].astype(bool).any()]  # only when some work has one
    for start in range(0, len(points), CHUNK):
        rows = points.iloc[start : start + CHUNK]
        chunk = {
            "name": rows["path"].tolist(),
            "title": rows["title"].tolist(),
            "artist": rows["artist"].tolist(),
            "year": [None if np.isnan(y) else int(y) for y in rows["year"]],
        }
        for column in optional:
            chunk[column] = rows[column].tolist()
        if "label" in points:
            chunk["label"] = rows["label"].tolist()
        if thumb_src is not None:
            chunk["src"] = [thumb_src.get(s, "") for s in rows["sha256"]]
        yield chunk


def write_sidecar(folder: Path, arrays: dict, chunks) -> None:
    """``points.js`` (the arrays) and ``text/<k>.js`` (chunk k) in ``folder``, each written atomically."""
    save_atomic(folder / "points.js", f"window.styleMapArrays = {script_json(arrays)};\n")
    for k, chunk in enumerate(chunks):
        save_atomic(folder / "text" / f"{k}.js", f"window.styleMapText({k}, {script_json(chunk)});\n")


def write_tiles(folder: Path, tiles: list[tuple], arrays_of) -> list[list[float]]:
    """``tiles/<k>.js`` for each tile (``arrays_of(rows)`` its arrays); returns the page's tile
    table, ``[x0, x1, y0, y1, points]`` per tile."""
    table = []
    for k, (x0, x1, y0, y1, rows) in enumerate(tiles):
        save_atomic(folder / "tiles" / f"{k}.js", f"window.styleMapTile({k}, {script_json(arrays_of(rows))});\n")
        table.append([x0, x1, y0, y1, len(rows)])
    return table


# Decodes the arrays and fetches text chunks on demand; defines `arrays`, `chunkOf`, `record`,
# `withRecords` for the scripts that follow (the hover panel, the tools, the atlas).
_DECODE_JS = """
function decodeArray(a) {
  var bin = atob(a.data), bytes = new Uint8Array(bin.length);
  for (var b = 0; b < bin.length; b++) { bytes[b] = bin.charCodeAt(b); }
  return new window[a.type](bytes.buffer);
}
var arrays = {}, rawArrays = data.arrays || window.styleMapArrays;
Object.keys(rawArrays).forEach(function (k) { arrays[k] = decodeArray(rawArrays[k]); });
var nPoints = arrays.x.length, chunks = data.text || [], pending = {};
"""

# A large map decodes sets of points (the sample, then tiles) as they come; `arrays` then maps a
# point's global index to its cluster, probability and thumbnail for the points loaded so far,
# which are the only ones that can be hovered or selected.
_SET_DECODE_JS = """
function decodeArray(a) {
  var bin = atob(a.data), bytes = new Uint8Array(bin.length);
  for (var b = 0; b < bin.length; b++) { bytes[b] = bin.charCodeAt(b); }
  return new window[a.type](bytes.buffer);
}
var arrays = {cluster: {}, prob: {}, thumb: {}};
function decodeSet(raw) {
  var set = {};
  Object.keys(raw).forEach(function (k) { set[k] = decodeArray(raw[k]); });
  for (var j = 0; j < set.index.length; j++) {
    var i = set.index[j];
    arrays.cluster[i] = set.cluster[j]; arrays.prob[i] = set.prob[j]; arrays.thumb[i] = set.thumb[j];
  }
  return set;
}
var sample = decodeSet(window.styleMapArrays);
var nPoints = data.nPoints, chunks = [], pending = {};
"""

_RECORDS_JS = """window.styleMapText = function (k, chunk) { chunks[k] = chunk; };
function chunkOf(k) {
  if (chunks[k]) { return Promise.resolve(chunks[k]); }
  if (!pending[k]) {
    pending[k] = new Promise(function (resolve, reject) {
      var s = document.createElement('script');
      s.src = data.textBase + k + '.js';
      s.onload = function () { chunks[k] ? resolve(chunks[k]) : reject(new Error('no text in ' + s.src)); };
      s.onerror = function () { delete pending[k]; reject(new Error('cannot load ' + s.src)); };
      document.head.appendChild(s);
    });
  }
  return pending[k];
}
function record(i) {
  var c = chunks[Math.floor(i / data.chunk)], j = i % data.chunk;
  if (!c) { return null; }
  var t = arrays.thumb[i];
  return {name: c.name[j], title: c.title[j], artist: c.artist[j], year: c.year[j], label: c.label ? c.label[j] : null,
          date: c.date ? c.date[j] : '', link: c.link ? c.link[j] || null : null,
          src: c.src ? c.src[j] || null : (t >= 0 && data.thumbs ? data.thumbs[t] : null),
          cluster: arrays.cluster[i], prob: arrays.prob[i]};
}
function withRecords(rows) {
  var need = {};
  rows.forEach(function (i) { need[Math.floor(i / data.chunk)] = true; });
  return Promise.all(Object.keys(need).map(function (k) { return chunkOf(+k); })).then(function () { return rows.map(record); });
}
function allRecords() {
  var all = [];
  for (var k = 0; k * data.chunk < nPoints; k++) { all.push(chunkOf(k)); }
  return Promise.all(all);
}
"""

PAYLOAD_JS = _DECODE_JS + _RECORDS_JS
SAMPLED_PAYLOAD_JS = _SET_DECODE_JS + _RECORDS_JS
