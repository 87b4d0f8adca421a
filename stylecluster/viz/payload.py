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
DTYPES = {"x": "<f4", "y": "<f4", "trace": "<u2", "cluster": "<i4", "prob": "<f4", "thumb": "<i4"}
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


def text_chunks(points: pd.DataFrame, thumb_src: list[str] | None = None) -> list[dict]:
    """The points' text, :data:`CHUNK` rows at a time; ``thumb_src`` is each point's thumbnail URL
    ("" for none) when the page does not carry the thumbnails itself."""
    columns = {
        "name": points["path"].tolist(),
        "title": points["title"].tolist(),
        "artist": points["artist"].tolist(),
        "year": [None if np.isnan(y) else int(y) for y in points["year"]],
    }
    for optional in ("date", "link"):  # only when some work has one: a map without them stays as small
        if optional in points and points[optional].astype(bool).any():
            columns[optional] = points[optional].tolist()
    if "label" in points:
        columns["label"] = points["label"].tolist()
    if thumb_src is not None:
        columns["src"] = thumb_src
    return [{k: v[start : start + CHUNK] for k, v in columns.items()} for start in range(0, len(points), CHUNK)]


def write_sidecar(folder: Path, arrays: dict, chunks: list[dict]) -> None:
    """``points.js`` (the arrays) and ``text/<k>.js`` (chunk k) in ``folder``, each written atomically."""
    save_atomic(folder / "points.js", f"window.styleMapArrays = {script_json(arrays)};\n")
    for k, chunk in enumerate(chunks):
        save_atomic(folder / "text" / f"{k}.js", f"window.styleMapText({k}, {script_json(chunk)});\n")


# Decodes the arrays and fetches text chunks on demand; defines `arrays`, `chunkOf`, `record`,
# `withRecords` for the scripts that follow (the hover panel, the tools, the atlas).
PAYLOAD_JS = """
function decodeArray(a) {
  var bin = atob(a.data), bytes = new Uint8Array(bin.length);
  for (var b = 0; b < bin.length; b++) { bytes[b] = bin.charCodeAt(b); }
  return new window[a.type](bytes.buffer);
}
var arrays = {}, rawArrays = data.arrays || window.styleMapArrays;
Object.keys(rawArrays).forEach(function (k) { arrays[k] = decodeArray(rawArrays[k]); });
var nPoints = arrays.x.length, chunks = data.text || [], pending = {};
window.styleMapText = function (k, chunk) { chunks[k] = chunk; };
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
