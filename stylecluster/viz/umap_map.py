"""The style map: UMAP of the fused embedding to 2-D, drawn as an interactive WebGL scatter.

One file or a folder
--------------------
Up to :data:`EMBED_LIMIT` images the map is **one self-contained HTML file**: plotly.js (4.7 MB)
and every thumbnail (128 px JPEG, ~4 KB; ~5.4 KB as base64) are inlined, so the file opens
offline and can be mailed, archived or attached as one thing: ~18 MB at 2,500 images. Larger
collections get ``map.html`` plus a ``map_files/`` folder (copy the two together): the points'
typed arrays (``points.js``), their text in chunks (``text/<k>.js``) and the thumbnails
(``thumbs/``), the text and the thumbnails loaded only when a point is hovered, selected or
searched (:mod:`~stylecluster.viz.payload`). The page itself is then ~5 MB (plotly.js) whatever
the number of points. The reason is size, not speed: measured on 10k synthetic images, the
self-contained file is 46 MB against 6 MB + a folder, and headless Chromium draws both in about
5 s — but a 46 MB file is past most mail and upload limits, and every re-plot rewrites it whole.

Points are drawn with ``Scattergl`` (WebGL, plotly.js as shipped inside the plotly package: no
network), one trace per legend group, built in the page from the typed arrays. SVG scatter
becomes sluggish past a few thousand points; WebGL draws a million: headless Chromium (software
WebGL) showed 1M synthetic points 7.0–9.8 s after navigation (two runs), 100k after 4.6 s, and a
hovered point's text chunk arrived in 10–14 ms (``benchmarks/scale_map.py``, 2 cores busy with other work;
the page 4.8 MB at both sizes, ``points.js`` 29 MB and the text 158 MB at 1M). The hover
panel is filled by our own script with ``textContent`` (never ``innerHTML``), so file names and
labels are always text.

From :data:`DENSITY_FROM` (500k) points the page no longer carries every point: it draws a
density raster of all of them (:mod:`~stylecluster.viz.density`, counted in batches, coloured by
the groups' shares, log-scaled opacity) under a seeded sample of :data:`OVERVIEW_SAMPLE` points,
and loads quadtree tiles of points (:func:`~stylecluster.viz.payload.zoom_tiles`) once the view
is small enough to draw every point in it; hover, click and selection work on what is drawn.
Ten million points would be ~290 MB of ``points.js``; the sampled page's is ~3.5 MB whatever
the collection (see :func:`_sampled_fragment` and ``benchmarks/RESULTS.md``).

The 2-D embedding is cached beside the store (see :mod:`stylecluster.viz.cache`) as a plain
``.npy`` array (read with ``allow_pickle=False``), keyed by the fused matrix and the UMAP
parameters, so re-drawing with another colouring, or the report after the map, does not refit.
The fitted reducer itself is not kept: fitted on an exact neighbour graph it cannot place new
points anyway, and a pickled reducer under a predictable name in a shared store would run
whatever code it held when the map was drawn. Older ``umap-*.joblib`` files are never read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import OutputError, check_writable, printable, save_atomic
from ..vectors import import_faiss, unit_rows
from .html import esc, page, script_json
from .atlas import ATLAS_JS, ATLAS_LIMIT, BUTTON_HTML, build_atlas
from .map_tools import SELECTION_HTML, TOOLS_HTML, TOOLS_JS
from .names import cluster_names, label_of
from .density import DensityRaster, padded_extent
from .payload import (CHUNK, PAYLOAD_JS, SAMPLED_PAYLOAD_JS, TILE_BUDGET, point_arrays, point_arrays_of, text_chunks,
                      write_sidecar, write_tiles, zoom_tiles)
from .thumbs import data_uri, ensure_thumbnails

log = logging.getLogger("stylecluster")

#: Largest collection drawn as one self-contained file (see the module docstring).
EMBED_LIMIT = 2500
#: From this many points the page draws a density raster of every point with a sample of points
#: on top, and the points of a zoomed-in view in tiles (see :func:`map_fragment`).
DENSITY_FROM = 500_000
#: Points drawn over the density raster before the reader zooms in.
OVERVIEW_SAMPLE = 100_000
#: Legend entries beyond this many groups are merged into one "other" group.
MAX_GROUPS = 40
OUTLIER_NAME = "outliers"
OTHER_NAME = "other"


# ----------------------------------------------------------------------------- UMAP


@dataclass(frozen=True)
class UmapParams:
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"  # the fused space's geometry, as in `similar`
    seed: int = 0


#: Up to this many points the neighbour graph is computed exactly (see :func:`_exact_knn`).
EXACT_KNN_LIMIT = 30_000


def _cache_key(fused: np.ndarray, params: UmapParams) -> str:
    from importlib.metadata import version

    digest = hashlib.sha256()
    for start in range(0, len(fused), PLACE_BATCH):  # the same digest as the whole matrix's bytes, without its copy
        digest.update(np.ascontiguousarray(fused[start : start + PLACE_BATCH], dtype=np.float32).tobytes())
    # The approximate placement's settings join the key only where they are used: smaller maps keep their caches.
    approximate = [PLACE_EXACT_LIMIT, PLACE_LISTS, PLACE_PROBES] if len(fused) > PLACE_EXACT_LIMIT else []
    digest.update(json.dumps([fused.shape, params.__dict__, version("umap-learn"), EXACT_KNN_LIMIT, LAYOUT_SAMPLE, PLACE_NEIGHBOURS, *approximate]).encode())
    return digest.hexdigest()[:20]


def _exact_knn(fused: np.ndarray, params: UmapParams):
    """UMAP's neighbour graph by brute force (each point is its own first neighbour, as in umap).

    Below ~30k points this is faster than umap's approximate NN-descent, mostly because the
    latter's numba code must be compiled in every new process (measured on 10k x 64 points, 2
    busy cores: 9 s exact vs 73 s NN-descent including compilation).
    """
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=params.n_neighbors, metric=params.metric, algorithm="brute").fit(fused)
    distance, index = nn.kneighbors(fused)
    return index, distance.astype(np.float32), None


#: Above this many points UMAP is fitted on a seeded sample of this size and every other point
#: is placed among its nearest sampled neighbours (see :func:`place_by_neighbours`).
LAYOUT_SAMPLE = 20_000
#: Sampled neighbours a placed point is averaged from.
PLACE_NEIGHBOURS = 10
#: Points placed per batch: bounds the unit-normalised copy and the search's results (~20 MB).
PLACE_BATCH = 65_536
#: Up to this many points the neighbours are exact; above, an inverted-file index over the sample
#: (:data:`PLACE_LISTS` lists, :data:`PLACE_PROBES` probed). See :func:`place_by_neighbours`.
PLACE_EXACT_LIMIT = 1_000_000
PLACE_LISTS = 256
PLACE_PROBES = 8


def umap_coordinates(fused: np.ndarray, cache: Path | None = None, params: UmapParams = UmapParams()) -> np.ndarray:
    """(n, 2) map coordinates, cached in ``cache`` as ``umap-<key>.npy``.

    Fewer than 10 points give UMAP no neighbourhood to learn from; they are placed by PCA. Above
    :data:`LAYOUT_SAMPLE` points UMAP lays out a seeded sample and the rest are placed by
    :func:`place_by_neighbours`. Measured on 100k synthetic 64-d points in 40 clusters (one run,
    2 busy cores): 31 s of CPU for the sample and the placement against 98 s for UMAP on all
    points (NN-descent), with the same 2-D neighbourhoods (each of 5,000 points' 10 nearest on
    the map are mostly of its own cluster in both: 100 %); UMAP's cost grows with n, the
    placement's only with n x 20k. At 1M points the layout took 141 s of CPU (349 s of wall
    clock on a machine loaded ~3x over its 2 cores), peak RSS 2.9 GB (``benchmarks/scale_map.py``). 20k is where the
    exact neighbour graph (:data:`EXACT_KNN_LIMIT`) still fits in memory and time (a 10k fit:
    36 s of wall clock, numba compilation included, same run).
    """
    if fused.dtype != np.float32:  # a memory-mapped float32 matrix stays mapped
        fused = np.asarray(fused, dtype=np.float32)
    if len(fused) < 10:
        return _pca_2d(fused)
    path = cache / f"umap-{_cache_key(fused, params)}.npy" if cache is not None else None
    if path is not None and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(fused), 2) and cached.dtype == np.float32:
                return cached
            log.warning("ignoring a UMAP cache of another shape: %s", printable(path))
        except (OSError, ValueError) as exc:  # a truncated or foreign cache file is refitted, not fatal
            log.warning("ignoring unreadable UMAP cache %s: %s", printable(path), printable(exc))
    if len(fused) > LAYOUT_SAMPLE:
        sample = np.sort(np.random.default_rng(params.seed).choice(len(fused), LAYOUT_SAMPLE, replace=False))
        approximate = len(fused) > PLACE_EXACT_LIMIT
        embedding = place_by_neighbours(fused, sample, _fit_umap(np.asarray(fused[sample]), params), params.metric,
                                        lists=PLACE_LISTS if approximate else 0, probes=PLACE_PROBES)
    else:
        embedding = _fit_umap(fused, params)
    if path is not None:
        try:
            save_atomic(path, lambda tmp: np.save(tmp, embedding, allow_pickle=False))
        except OutputError as exc:  # a cache that cannot be written costs a refit next time, nothing more
            log.warning("the map layout is not cached: %s", exc)
    return embedding


def _fit_umap(fused: np.ndarray, params: UmapParams) -> np.ndarray:
    import umap

    params = replace(params, n_neighbors=min(params.n_neighbors, len(fused) - 1))
    n = len(fused)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=params.n_neighbors,
        min_dist=params.min_dist,
        metric=params.metric,
        # umap's default is 500 epochs up to 10k points and 200 above; 200 already converges
        # for a map and halves the layout time of mid-sized collections.
        n_epochs=None if n <= 4096 else 200,
        precomputed_knn=_exact_knn(fused, params) if n <= EXACT_KNN_LIMIT else (None, None, None),
        random_state=params.seed,  # fixes the layout; umap then runs single-threaded
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # Expected with an exact graph: the reducer cannot place new points (style search works
        # in the fused space, not on the map).
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return np.asarray(reducer.fit_transform(fused), dtype=np.float32)


def place_by_neighbours(fused: np.ndarray, sample: np.ndarray, sample_coords: np.ndarray, metric: str = "cosine",
                        k: int = PLACE_NEIGHBOURS, lists: int = 0, probes: int = PLACE_PROBES,
                        batch_rows: int = PLACE_BATCH) -> np.ndarray:
    """Map coordinates of every point: the sampled points keep ``sample_coords``, each other point
    goes to the mean of its ``k`` nearest sampled points' coordinates, weighted by 1 / distance
    (cosine distance for ``metric="cosine"``, else Euclidean).

    This is where umap's own ``transform`` starts before refining with further epochs; that
    refinement is left out: it needs the approximate NN-descent index of a fit on the sample
    (not the exact graph used up to :data:`EXACT_KNN_LIMIT`), and at a million points a marker
    is wider than the moves it makes. The neighbours come from an exact faiss flat index
    (``IndexFlatIP`` on unit vectors): for 100k points among 10k sampled ones, 2.2 s of CPU
    against 14.6 s for numpy's ``argpartition`` over the same distance blocks, most of that spent
    in the partition (one run, 2 busy cores; 4.6 s vs 35.1 s among 20k).

    The points are read ``batch_rows`` at a time (a memory-mapped matrix stays on disk), so the
    memory is the output's 8 bytes a point plus one batch. Exact search costs n x 20k distances:
    ~1,400 s of CPU at 10M points. With ``lists`` > 0 the sample is held in an inverted-file index
    (``IndexIVFFlat``, ``lists`` k-means cells trained on the sample itself, ``probes`` of them
    searched). Measured on 200k synthetic 64-d points in 40 clusters among a 20k sample, one
    thread, machine shared (load ~3): exact 14.4 s of CPU; 256 lists / 8 probed 2.7 s (5.4x),
    recall@10 of the exact neighbours 0.992, median placement unchanged and the 99th percentile
    moved by 0.06 of the map's standard deviation; 128 / 4: 5.8x but recall 0.966 and 0.10;
    128 / 8: recall 1.000 but only 2.8x; exact with 5 neighbours instead of 10 only 1.6x and the
    median placement moved by 0.06. :func:`umap_coordinates` uses 256 / 8 above
    :data:`PLACE_EXACT_LIMIT` points, where a marker is a pixel or less and the exact search
    would cost more than the rest of the map together.
    """
    faiss = import_faiss()
    reference = np.ascontiguousarray(fused[sample], dtype=np.float32)
    if metric == "cosine":
        reference = unit_rows(reference)
    d, measure = reference.shape[1], faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    lists = min(lists, len(sample) // 39)  # faiss wants ~39 training points a list
    if lists > 0:
        quantiser = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantiser, d, lists, measure)
        index.train(reference)
        index.nprobe = probes
    else:
        index = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
    index.add(reference)
    k = min(k, len(sample))
    out = np.empty((len(fused), 2), np.float32)
    for start in range(0, len(fused), batch_rows):
        queries = np.ascontiguousarray(fused[start : start + batch_rows], dtype=np.float32)
        if metric == "cosine":
            queries = unit_rows(queries)
        score, near = index.search(queries, k)
        found = near >= 0  # an inverted-file search may find fewer than k in the probed lists
        distance = 1.0 - score if metric == "cosine" else np.sqrt(np.maximum(score, 0.0))
        weight = np.where(found, 1.0 / (np.maximum(distance, 0.0) + 1e-6), 0.0)
        out[start : start + batch_rows] = (sample_coords[np.maximum(near, 0)] * weight[..., None]).sum(axis=1) / weight.sum(axis=1, keepdims=True)
    out[sample] = sample_coords
    return out


def _pca_2d(fused: np.ndarray) -> np.ndarray:
    centred = fused - fused.mean(axis=0)
    if len(fused) < 2:
        return np.zeros((len(fused), 2), np.float32)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))).astype(np.float32)


# ----------------------------------------------------------------------------- figure


def group_names(points: pd.DataFrame, color_by: str, cluster_labels: dict[int, str] | None = None) -> pd.Series:
    """The legend group of every point: its cluster (named by ``cluster_labels`` where given) or
    its label, the smallest groups as "other"."""
    if color_by == "cluster":
        cluster_labels = cluster_labels or {}
        names = points["cluster"].map(lambda c: OUTLIER_NAME if c < 0 else cluster_labels.get(int(c), f"cluster {c}"))
    elif color_by == "label":
        names = points["label"].astype(str)
    else:
        raise ValueError(f"color_by must be 'cluster' or 'label', got {color_by!r}")
    sizes = names.value_counts()
    if len(sizes) > MAX_GROUPS:
        keep = set(sizes.index[: MAX_GROUPS - 1])
        names = names.where(names.isin(keep), OTHER_NAME)
    return names


def _palette() -> list[str]:
    from plotly.colors import qualitative

    return list(qualitative.Dark24) + list(qualitative.Light24)


def trace_groups(points: pd.DataFrame, color_by: str = "cluster", cluster_labels: dict[int, str] | None = None,
                 legend_title: str | None = None) -> tuple[np.ndarray, list[dict]]:
    """Each point's trace (``uint16``) and the traces' plotly attributes (name, marker), largest first.

    Outliers and "other" are drawn last, in grey, so the real groups keep the palette.
    """
    groups = group_names(points, color_by, cluster_labels)
    order = groups.value_counts().index.tolist()
    order = [g for g in order if g not in (OUTLIER_NAME, OTHER_NAME)] + [g for g in (OTHER_NAME, OUTLIER_NAME) if g in set(order)]
    palette = _palette()
    n = len(points)
    size = 9 if n <= 500 else 6 if n <= 3000 else 4 if n <= 100_000 else 3
    index = {g: i for i, g in enumerate(order)}
    trace = groups.map(index).to_numpy().astype(np.uint16)
    counts = np.bincount(trace, minlength=len(order))
    specs = []
    for i, group in enumerate(order):
        grey = group in (OUTLIER_NAME, OTHER_NAME)
        specs.append({
            # Legend text is rendered by plotly's HTML-like label code: escape it.
            "name": f"{esc(group)} ({counts[i]})",
            "marker": {"size": size, "opacity": 0.85, "color": "#9a9a9a" if grey else palette[i % len(palette)], "line": {"width": 0}},
        })
    return trace, specs


def map_layout(title: str = "", legend_title: str = "cluster") -> dict:
    """The plot's layout (plotly's ``plotly_white`` template, no axes: map coordinates mean nothing)."""
    import plotly.graph_objects as go

    layout = go.Layout(
        title={"text": esc(title), "x": 0.01} if title else None,
        template="plotly_white",
        height=720,
        margin={"l": 10, "r": 10, "t": 50 if title else 36, "b": 10},  # room for the mode bar
        hovermode="closest",
        legend={"itemsizing": "constant", "title": {"text": esc(legend_title)}},
        xaxis={"showticklabels": False, "zeroline": False, "showgrid": False, "title": None},
        yaxis={"showticklabels": False, "zeroline": False, "showgrid": False, "title": None, "scaleanchor": "x"},
    )
    return layout.to_plotly_json()


def map_figure(
    points: pd.DataFrame,
    coords: np.ndarray,
    color_by: str = "cluster",
    title: str = "",
    legend_title: str | None = None,
    cluster_labels: dict[int, str] | None = None,
):
    """The map as a plotly figure, for notebooks: the page's traces (:func:`trace_groups`) with
    their points in Python; ``customdata`` is the point's position."""
    import plotly.graph_objects as go

    trace, specs = trace_groups(points, color_by, cluster_labels)
    fig = go.Figure(layout=map_layout(title, legend_title or color_by))
    for k, spec in enumerate(specs):
        members = np.flatnonzero(trace == k)
        fig.add_trace(go.Scattergl(x=coords[members, 0], y=coords[members, 1], mode="markers", customdata=members, hoverinfo="none", **spec))
    return fig


PLOT_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": True}

# The data element and the panel come before the plot: the plot is drawn while the page is
# still being parsed.
_PANEL = """
<script type="application/json" id="sc-points">{data}</script>
<div style="display:flex;gap:12px;align-items:center">{mode}{tools}</div>
<div class="sc-map-wrap" style="display:flex;gap:12px;align-items:flex-start">
  <aside id="sc-panel" style="order:2;width:230px;flex:none;background:#fff;border:1px solid #d9d9de;border-radius:6px;padding:10px;position:sticky;top:10px">
    <div class="muted" id="sc-hint">Hover a point to see the painting.</div>
    <img id="sc-thumb" alt="" style="display:none;max-width:208px;max-height:208px;margin:0 auto 6px">
    <div id="sc-name" style="font-weight:600;overflow-wrap:anywhere"></div>
    <div id="sc-title"></div><div id="sc-artist" class="muted"></div>
    <div id="sc-label"></div><div id="sc-cluster"></div><div id="sc-prob" class="muted"></div>
    <a id="sc-record" style="display:none" rel="noopener noreferrer" target="_blank">the work's record</a>
    <a id="sc-link" style="display:none">open cluster page</a>
  </aside>
  <div style="flex:1;min-width:0"><div id="sc-map" class="plotly-graph-div" style="height:720px;width:100%"></div></div>
</div>
{selection}
{plotlyjs}{sidecar}<script>
(function () {{
var gd = document.getElementById('sc-map');
var data = JSON.parse(document.getElementById('sc-points').textContent);
{script}
}})();
</script>
"""

# Builds one scattergl trace per legend group from the typed arrays (customdata: the point's
# index), draws them, then wires the panel, the tools and the atlas.
_PLOT_JS = """
var counts = new Int32Array(data.traces.length);
for (var i = 0; i < nPoints; i++) { counts[arrays.trace[i]]++; }
var traces = data.traces.map(function (spec, k) {
  return Object.assign({type: 'scattergl', mode: 'markers', hoverinfo: 'none', x: new Float32Array(counts[k]),
                        y: new Float32Array(counts[k]), customdata: new Int32Array(counts[k])}, spec);
});
var filled = new Int32Array(data.traces.length);
for (var i = 0; i < nPoints; i++) {
  var k = arrays.trace[i], j = filled[k]++;
  traces[k].x[j] = arrays.x[i]; traces[k].y[j] = arrays.y[i]; traces[k].customdata[j] = i;
}
Plotly.newPlot(gd, traces, data.layout, data.config).then(function () {
%(after)s
window.styleMap.ready = performance.now();
});
"""

_HOVER_JS = """
function set(id, text) { document.getElementById(id).textContent = text; }
function clusterOf(i) { return arrays.cluster[i]; }
function fillPanel(i, r) {
  document.getElementById('sc-hint').style.display = 'none';
  var img = document.getElementById('sc-thumb');
  if (r.src) { img.src = r.src; img.style.display = 'block'; } else { img.removeAttribute('src'); img.style.display = 'none'; }
  set('sc-name', r.name);
  set('sc-label', r.label !== null ? data.labelColumn + ': ' + r.label : '');
  set('sc-title', r.title);
  set('sc-artist', [r.artist, r.date || r.year].filter(function (v) { return v !== null && v !== ''; }).join(', '));
  var record = document.getElementById('sc-record');  // links are http(s) only (viz/works.py); checked again here
  if (r.link && /^https?:[/][/]/i.test(r.link)) { record.href = r.link; record.style.display = 'block'; } else { record.removeAttribute('href'); record.style.display = 'none'; }
  var cname = data.clusterName && data.clusterName[r.cluster];
  set('sc-cluster', r.cluster < 0 ? 'outlier (no cluster)' : cname || 'cluster ' + r.cluster);
  set('sc-prob', 'probability ' + r.prob.toFixed(3));
  var link = document.getElementById('sc-link'), href = data.clusterHref && data.clusterHref[r.cluster];
  if (href) { link.href = href; link.style.display = 'inline'; } else { link.style.display = 'none'; }
}
var hovered = -1;
function show(i) {
  hovered = i;
  // A large map fetches the point's text (and with it its thumbnail's URL) now; only the
  // latest hovered point is shown.
  return withRecords([i]).then(function (r) { if (hovered === i) { fillPanel(i, r[0]); } });
}
gd.on('plotly_hover', function (ev) { show(ev.points[0].customdata); });
gd.on('plotly_click', function (ev) {
  var href = data.clusterHref && data.clusterHref[clusterOf(ev.points[0].customdata)];
  if (href) { window.location.href = href; }
});
window.styleMap = {data: data, arrays: arrays, record: record, records: withRecords, show: show, plot: gd, nPoints: nPoints};
"""


# The sampled page: the sample is drawn first; after each zoom or pan the tiles the view touches
# are loaded and drawn instead when they hold at most `data.tileBudget` points together (every
# point in view is then drawn), else the sample again. `generation` drops answers to old views.
_SAMPLED_PLOT_JS = """
function tracesOf(sets) {
  var counts = new Int32Array(data.traces.length);
  sets.forEach(function (s) { for (var j = 0; j < s.trace.length; j++) { counts[s.trace[j]]++; } });
  var traces = data.traces.map(function (spec, k) {
    return Object.assign({type: 'scattergl', mode: 'markers', hoverinfo: 'none', x: new Float32Array(counts[k]),
                          y: new Float32Array(counts[k]), customdata: new Int32Array(counts[k])}, spec);
  });
  var filled = new Int32Array(data.traces.length);
  sets.forEach(function (s) {
    for (var j = 0; j < s.trace.length; j++) {
      var k = s.trace[j], m = filled[k]++;
      traces[k].x[m] = s.x[j]; traces[k].y[m] = s.y[j]; traces[k].customdata[m] = s.index[j];
    }
  });
  return traces;
}
var tiles = {}, tilePending = {}, showing = 'sample', generation = 0;
window.styleMapTile = function (k, raw) { tiles[k] = decodeSet(raw); };
function tileOf(k) {
  if (tiles[k]) { return Promise.resolve(tiles[k]); }
  if (!tilePending[k]) {
    tilePending[k] = new Promise(function (resolve, reject) {
      var s = document.createElement('script');
      s.src = data.tileBase + k + '.js';
      s.onload = function () { tiles[k] ? resolve(tiles[k]) : reject(new Error('no points in ' + s.src)); };
      s.onerror = function () { delete tilePending[k]; reject(new Error('cannot load ' + s.src)); };
      document.head.appendChild(s);
    });
  }
  return tilePending[k];
}
function tilesInView() {
  var xr = gd._fullLayout.xaxis.range, yr = gd._fullLayout.yaxis.range, want = [], total = 0;
  var xa = Math.min(xr[0], xr[1]), xb = Math.max(xr[0], xr[1]), ya = Math.min(yr[0], yr[1]), yb = Math.max(yr[0], yr[1]);
  data.tiles.forEach(function (t, k) {
    if (t[0] <= xb && t[1] >= xa && t[2] <= yb && t[3] >= ya) { want.push(k); total += t[4]; }
  });
  return {tiles: want, points: total};
}
function follow() {
  var view = tilesInView(), g = ++generation;
  var key = view.points > data.tileBudget ? 'sample' : view.tiles.join(',');
  if (key === showing) { return Promise.resolve(); }
  var sets = key === 'sample' ? Promise.resolve([sample]) : Promise.all(view.tiles.map(tileOf));
  return sets.then(function (sets) {
    if (g !== generation) { return; }
    showing = key;
    return Plotly.react(gd, tracesOf(sets), gd.layout, data.config);
  }).then(function () { if (g === generation) { window.styleMap.drawn = showing; } });
}
Plotly.newPlot(gd, tracesOf([sample]), data.layout, data.config).then(function () {
%(after)s
gd.on('plotly_relayout', function (ev) { if (ev && Object.keys(ev).some(function (k) { return k.indexOf('axis') >= 0; })) { follow(); } });
window.styleMap.follow = follow;
window.styleMap.tilesInView = tilesInView;
window.styleMap.drawn = 'sample';
window.styleMap.ready = performance.now();
});
"""


def _thumbnail_index(shas: list[str], distinct: list[str]) -> np.ndarray:
    position = {s: i for i, s in enumerate(distinct)}
    return np.array([position.get(s, -1) for s in shas], dtype=np.int32)


@dataclass(frozen=True)
class Sidecar:
    """Where a large map's data goes: ``folder`` on disk, ``url`` the same folder relative to the page."""

    folder: Path
    url: str


def map_fragment(
    points: pd.DataFrame,
    coords: np.ndarray,
    thumb_src: dict[str, str],
    color_by: str = "cluster",
    label_column: str | None = None,
    title: str = "",
    cluster_href: dict[int, str] | None = None,
    cluster_labels: dict[int, str] | None = None,
    atlas: dict | None = None,
    sidecar: Sidecar | None = None,
    density_from: int = DENSITY_FROM,
) -> str:
    """The map as an HTML fragment (plotly.js inlined) with its hover panel, search box and
    selection list (:mod:`~stylecluster.viz.map_tools`).

    ``thumb_src`` maps a sha256 to the thumbnail's URL (a data URI or a relative path);
    ``cluster_labels`` names the clusters (see :func:`~stylecluster.viz.names.label_of`);
    ``atlas`` is :meth:`~stylecluster.viz.atlas.Atlas.data` of the thumbnails in
    :func:`thumbnail_order`, drawn when the reader switches to images. With ``sidecar`` the
    points' arrays and text are written there (:mod:`~stylecluster.viz.payload`) and the page
    stays the same size whatever the number of points; each thumbnail URL is then in the text of
    its point, read when the point is hovered or selected. From ``density_from`` points (with a
    sidecar) the page is :func:`_sampled_fragment`'s.
    """
    from plotly.offline import get_plotlyjs

    shas = points["sha256"].tolist()
    distinct = thumbnail_order(thumb_src)
    if atlas is not None and len(atlas["rect"]) != len(distinct):
        raise ValueError(f"the atlas has {len(atlas['rect'])} thumbnails, the map {len(distinct)}")
    legend_title = label_column if color_by == "label" else "cluster"
    trace, specs = trace_groups(points, color_by, cluster_labels)
    data = {
        "labelColumn": label_column,
        "chunk": CHUNK,
        "traces": specs,
        "layout": map_layout(title, legend_title or "cluster"),
        "config": PLOT_CONFIG,
        "clusterHref": {str(k): v for k, v in (cluster_href or {}).items()},
        "clusterName": {str(k): v for k, v in (cluster_labels or {}).items()},
        "atlas": atlas,
    }
    if sidecar is not None and len(points) >= density_from:
        return _sampled_fragment(points, coords, trace, specs, _thumbnail_index(shas, distinct), thumb_src, sidecar, data)
    arrays = point_arrays(coords, trace, points, _thumbnail_index(shas, distinct))
    if sidecar is None:
        data.update(arrays=arrays, text=list(text_chunks(points)), thumbs=[thumb_src[s] for s in distinct])
        sidecar_html = ""
    else:
        write_sidecar(sidecar.folder, arrays, text_chunks(points, thumb_src))
        data["textBase"] = f"{sidecar.url}/text/"
        sidecar_html = f'<script src="{esc(sidecar.url)}/points.js"></script>\n'
    script = PAYLOAD_JS + _PLOT_JS % {"after": _HOVER_JS + TOOLS_JS + ATLAS_JS}
    return _PANEL.format(data=script_json(data), mode=BUTTON_HTML, tools=TOOLS_HTML, selection=SELECTION_HTML,
                         plotlyjs=f"<script>{get_plotlyjs()}</script>\n", sidecar=sidecar_html, script=script)


def _sampled_fragment(points: pd.DataFrame, coords: np.ndarray, trace: np.ndarray, specs: list[dict], thumb: np.ndarray,
                      thumb_src: dict[str, str], sidecar: Sidecar, data: dict, seed: int = 0) -> str:
    """The page of a large map: a density raster of every point as the plot's background image
    (:mod:`~stylecluster.viz.density`), a seeded sample of :data:`OVERVIEW_SAMPLE` points drawn
    over it, and every point in zoom tiles (:func:`~stylecluster.viz.payload.zoom_tiles`), loaded
    when the reader zooms in. The points' text is in chunks as on the full page.

    Why: at a million points ``points.js`` is 29 MB and the full page drew in 7.0-9.8 s in
    headless Chromium (on the edge of the 10 s target), 100k points in 4.6 s; ten million would be
    ~290 MB. :data:`DENSITY_FROM` (500k) keeps the full page where it draws in about 5 s.
    """
    from plotly.offline import get_plotlyjs

    n = len(points)
    cluster = points["cluster"].to_numpy().astype(np.int32)
    prob = points["probability"].fillna(0.0).to_numpy().astype(np.float32)
    extent = padded_extent(coords)
    colours = [spec["marker"]["color"] for spec in specs]
    raster = DensityRaster(extent, len(specs)).fit(coords, trace)
    sample = np.sort(np.random.default_rng(seed).choice(n, min(OVERVIEW_SAMPLE, n), replace=False))

    def arrays_of(rows: np.ndarray) -> dict:
        return point_arrays_of(rows, coords, trace, cluster, prob, thumb)

    tile_table = write_tiles(sidecar.folder, zoom_tiles(coords, extent), arrays_of)
    write_sidecar(sidecar.folder, arrays_of(sample), text_chunks(points, thumb_src))
    x0, x1, y0, y1 = extent
    layout = data["layout"]
    layout["xaxis"].update(range=[x0, x1], autorange=False)
    layout["yaxis"].update(range=[y0, y1], autorange=False)
    layout["images"] = [{"source": raster.png_uri(colours), "xref": "x", "yref": "y", "x": x0, "y": y1, "sizex": x1 - x0,
                         "sizey": y1 - y0, "sizing": "stretch", "layer": "below", "opacity": 1}]
    for spec in data["traces"]:
        spec["marker"] = {**spec["marker"], "size": 3, "opacity": 0.6}
    data.update(nPoints=n, tiles=tile_table, tileBudget=TILE_BUDGET, textBase=f"{sidecar.url}/text/",
                tileBase=f"{sidecar.url}/tiles/", config={**data["config"], "doubleClick": "reset"},
                overview={"sample": len(sample), "raster": list(raster.counts_.shape[1:]), "extent": list(extent)})
    script = SAMPLED_PAYLOAD_JS + _SAMPLED_PLOT_JS % {"after": _HOVER_JS + TOOLS_JS + ATLAS_JS}
    return _PANEL.format(data=script_json(data), mode=BUTTON_HTML, tools=TOOLS_HTML, selection=SELECTION_HTML,
                         plotlyjs=f"<script>{get_plotlyjs()}</script>\n",
                         sidecar=f'<script src="{esc(sidecar.url)}/points.js"></script>\n', script=script)


def thumbnail_order(thumbs: dict) -> list[str]:
    """The order of the page's thumbnails (and of the atlas's cells): by sha256."""
    return sorted(thumbs)


@dataclass
class MapResult:
    html: Path
    thumbs_dir: Path | None  # set in folder mode
    n_points: int
    n_thumbnails: int

    @property
    def self_contained(self) -> bool:
        return self.thumbs_dir is None


def copy_thumbnails(thumbs: dict[str, Path], folder: Path) -> None:
    """Copy cached thumbnails into an output folder (hard links where the filesystem allows)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sha, source in thumbs.items():
        target = folder / source.name
        if target.exists():
            continue
        try:
            target.hardlink_to(source)
        except OSError:
            save_atomic(target, lambda tmp: shutil.copyfile(source, tmp))


def write_map(
    explorer,
    out: str | Path,
    color_by: str = "cluster",
    embed_limit: int = EMBED_LIMIT,
    cache: Path | None = None,
    umap_params: UmapParams = UmapParams(),
    workers: int = 2,
    names: str | Path | dict[int, str] | None = None,
    density_from: int = DENSITY_FROM,
) -> MapResult:
    """Write the map of an :class:`~stylecluster.viz.data.Explorer` to ``out`` (an .html file).

    Self-contained up to ``embed_limit`` images; otherwise the points' data goes to ``<stem>_files/``
    (:mod:`~stylecluster.viz.payload`) and the thumbnails to ``<stem>_files/thumbs/``, loaded on hover.
    Clusters are named from their data (:mod:`~stylecluster.viz.names`); ``names`` overrides
    them (a JSON file or a dict). From ``density_from`` points the page shows a density raster of
    every point under a sample, with tiles of points loaded as the reader zooms in (:func:`map_fragment`).
    """
    from .cache import cache_dir

    if color_by == "label" and not explorer.has_labels:
        raise ValueError("colouring by label needs a labels table")
    out = check_writable(out)
    cache = cache if cache is not None else cache_dir(explorer.store)
    points = explorer.points
    coords = umap_coordinates(explorer.fused, cache, umap_params)
    thumbs = ensure_thumbnails(explorer.images_root, zip(points["path"], points["sha256"]), cache, workers)
    distinct = thumbnail_order(thumbs)
    atlas = build_atlas([thumbs[sha] for sha in distinct], workers) if len(distinct) <= ATLAS_LIMIT else None
    if len(points) <= embed_limit:
        thumbs_dir, sidecar = None, None
        thumb_src = {sha: data_uri(f) for sha, f in thumbs.items()}
        atlas_data = atlas.data() if atlas is not None else None
    else:
        files = out.parent / f"{out.stem}_files"
        thumbs_dir, sidecar = files / "thumbs", Sidecar(files, files.relative_to(out.parent).as_posix())
        copy_thumbnails(thumbs, thumbs_dir)
        thumb_src = {sha: f"{sidecar.url}/thumbs/{f.name}" for sha, f in thumbs.items()}
        atlas_data = atlas.data(save_atomic(files / "atlas.js", atlas.script_text()).relative_to(out.parent).as_posix()) if atlas is not None else None
    store_name = Path(explorer.store.path).name
    colouring = explorer.label_column if color_by == "label" else "cluster"
    title = f"Style map of {store_name}: {len(points)} images by {colouring}"
    labels = label_of(cluster_names(explorer, names)) if explorer.has_clusters else None
    fragment = map_fragment(points, coords, thumb_src, color_by, explorer.label_column, title, cluster_labels=labels,
                            atlas=atlas_data, sidecar=sidecar, density_from=density_from)
    save_atomic(out, page(title, fragment))
    return MapResult(out, thumbs_dir, len(points), len(thumbs))
