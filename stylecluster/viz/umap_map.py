"""The style map: UMAP of the fused embedding to 2-D, drawn as an interactive WebGL scatter.

One file or a folder
--------------------
Up to :data:`EMBED_LIMIT` images the map is **one self-contained HTML file**: plotly.js (4.7 MB)
and every thumbnail (128 px JPEG, ~4 KB; ~5.4 KB as base64) are inlined, so the file opens
offline and can be mailed, archived or attached as one thing: ~18 MB at 2,500 images. Larger
collections get ``map.html`` plus a ``map_files/thumbs/`` folder of JPEGs linked relatively
(copy the two together). The reason is size, not speed: measured on 10k synthetic images, the
self-contained file is 46 MB against 6 MB + a folder, and headless Chromium draws both in about
5 s — but a 46 MB file is past most mail and upload limits, and every re-plot rewrites it whole.

Points are drawn with ``Scattergl`` (WebGL): SVG scatter becomes sluggish past a few thousand
points, WebGL pans and hovers over 10k+ smoothly. The hover panel is filled by our own script
with ``textContent`` (never ``innerHTML``), so file names and labels are always text.

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
from .html import esc, page, script_json
from .atlas import ATLAS_JS, BUTTON_HTML, build_atlas
from .map_tools import SELECTION_HTML, TOOLS_HTML, TOOLS_JS
from .names import cluster_names, label_of
from .thumbs import data_uri, ensure_thumbnails

log = logging.getLogger("stylecluster")

#: Largest collection drawn as one self-contained file (see the module docstring).
EMBED_LIMIT = 2500
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

    digest = hashlib.sha256(np.ascontiguousarray(fused, dtype=np.float32).tobytes())
    digest.update(json.dumps([fused.shape, params.__dict__, version("umap-learn"), EXACT_KNN_LIMIT]).encode())
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


def umap_coordinates(fused: np.ndarray, cache: Path | None = None, params: UmapParams = UmapParams()) -> np.ndarray:
    """(n, 2) map coordinates, cached in ``cache`` as ``umap-<key>.npy``.

    Fewer than 10 points give UMAP no neighbourhood to learn from; they are placed by PCA.
    """
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
        embedding = np.asarray(reducer.fit_transform(fused), dtype=np.float32)
    if path is not None:
        try:
            save_atomic(path, lambda tmp: np.save(tmp, embedding, allow_pickle=False))
        except OutputError as exc:  # a cache that cannot be written costs a refit next time, nothing more
            log.warning("the map layout is not cached: %s", exc)
    return embedding


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


def map_figure(
    points: pd.DataFrame,
    coords: np.ndarray,
    color_by: str = "cluster",
    title: str = "",
    legend_title: str | None = None,
    cluster_labels: dict[int, str] | None = None,
):
    """A plotly figure: one ``Scattergl`` trace per group; ``customdata`` is the point's position."""
    import plotly.graph_objects as go

    groups = group_names(points, color_by, cluster_labels)
    order = groups.value_counts().index.tolist()
    # Outliers and "other" are drawn last, in grey, so the real groups keep the palette.
    order = [g for g in order if g not in (OUTLIER_NAME, OTHER_NAME)] + [g for g in (OTHER_NAME, OUTLIER_NAME) if g in set(order)]
    palette = _palette()
    n = len(points)
    size = 9 if n <= 500 else 6 if n <= 3000 else 4
    fig = go.Figure()
    for i, group in enumerate(order):
        members = np.flatnonzero((groups == group).to_numpy())
        grey = group in (OUTLIER_NAME, OTHER_NAME)
        fig.add_trace(
            go.Scattergl(
                x=coords[members, 0],
                y=coords[members, 1],
                mode="markers",
                # Legend text is rendered by plotly's HTML-like label code: escape it.
                name=f"{esc(group)} ({len(members)})",
                customdata=members,
                hoverinfo="none",
                marker={"size": size, "opacity": 0.85, "color": "#9a9a9a" if grey else palette[i % len(palette)], "line": {"width": 0}},
            )
        )
    fig.update_layout(
        title={"text": esc(title), "x": 0.01} if title else None,
        template="plotly_white",
        height=720,
        margin={"l": 10, "r": 10, "t": 50 if title else 36, "b": 10},  # room for the mode bar
        hovermode="closest",
        legend={"itemsizing": "constant", "title": {"text": esc(legend_title or color_by)}},
        xaxis={"showticklabels": False, "zeroline": False, "showgrid": False, "title": None},
        yaxis={"showticklabels": False, "zeroline": False, "showgrid": False, "title": None, "scaleanchor": "x"},
    )
    return fig


# The data element and the panel come before the plot: plotly sizes the plot and runs the
# post-script while the page is still being parsed.
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
    <a id="sc-link" style="display:none">open cluster page</a>
  </aside>
  <div style="flex:1;min-width:0">{plot}</div>
</div>
{selection}
"""

# Runs once plotly has drawn the figure ({plot_id} is filled in by plotly).
_HOVER_JS = """
var gd = document.getElementById('{plot_id}');
var data = JSON.parse(document.getElementById('sc-points').textContent);
function set(id, text) { document.getElementById(id).textContent = text; }
function show(i) {
  document.getElementById('sc-hint').style.display = 'none';
  var img = document.getElementById('sc-thumb');
  var t = data.thumb[i];
  if (t >= 0) { img.src = data.thumbs[t]; img.style.display = 'block'; } else { img.removeAttribute('src'); img.style.display = 'none'; }
  set('sc-name', data.name[i]);
  set('sc-label', data.label ? data.labelColumn + ': ' + data.label[i] : '');
  set('sc-title', data.title[i]);
  set('sc-artist', [data.artist[i], data.year[i]].filter(function (v) { return v !== null && v !== ''; }).join(', '));
  var cname = data.clusterName && data.clusterName[data.cluster[i]];
  set('sc-cluster', data.cluster[i] < 0 ? 'outlier (no cluster)' : cname || 'cluster ' + data.cluster[i]);
  set('sc-prob', 'probability ' + data.prob[i].toFixed(3));
  var link = document.getElementById('sc-link'), href = data.clusterHref && data.clusterHref[data.cluster[i]];
  if (href) { link.href = href; link.style.display = 'inline'; } else { link.style.display = 'none'; }
}
gd.on('plotly_hover', function (ev) { show(ev.points[0].customdata); });
gd.on('plotly_click', function (ev) {
  var href = data.clusterHref && data.clusterHref[data.cluster[ev.points[0].customdata]];
  if (href) { window.location.href = href; }
});
window.styleMap = {data: data, show: show, plot: gd};
"""


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
) -> str:
    """The map as an HTML fragment (plotly.js inlined) with its hover panel, search box and
    selection list (:mod:`~stylecluster.viz.map_tools`).

    ``thumb_src`` maps a sha256 to the thumbnail's URL (a data URI or a relative path);
    ``cluster_labels`` names the clusters (see :func:`~stylecluster.viz.names.label_of`);
    ``atlas`` is :meth:`~stylecluster.viz.atlas.Atlas.data` of the thumbnails in
    :func:`thumbnail_order`, drawn when the reader switches to images.
    """
    import plotly.io as pio

    shas = points["sha256"].tolist()
    distinct = thumbnail_order(thumb_src)
    position = {s: i for i, s in enumerate(distinct)}
    data = {
        "name": points["path"].tolist(),
        "label": points["label"].tolist() if "label" in points else None,
        "labelColumn": label_column,
        "cluster": points["cluster"].astype(int).tolist(),
        "prob": [round(float(p), 4) for p in points["probability"].fillna(0.0)],
        "thumbs": [thumb_src[s] for s in distinct],
        "thumb": [position.get(s, -1) for s in shas],
        "clusterHref": {str(k): v for k, v in (cluster_href or {}).items()},
        "clusterName": {str(k): v for k, v in (cluster_labels or {}).items()},
        "title": points["title"].tolist(),
        "artist": points["artist"].tolist(),
        "year": [None if np.isnan(y) else int(y) for y in points["year"]],
        "atlas": atlas,
    }
    if atlas is not None and len(atlas["rect"]) != len(distinct):
        raise ValueError(f"the atlas has {len(atlas['rect'])} thumbnails, the map {len(distinct)}")
    plot = pio.to_html(
        map_figure(points, coords, color_by, title, label_column if color_by == "label" else "cluster", cluster_labels),
        include_plotlyjs=True,
        full_html=False,
        div_id="sc-map",
        config={"displaylogo": False, "responsive": True, "scrollZoom": True},
        post_script=_HOVER_JS + TOOLS_JS + ATLAS_JS,
    )
    return _PANEL.format(plot=plot, data=script_json(data), mode=BUTTON_HTML, tools=TOOLS_HTML, selection=SELECTION_HTML)


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
) -> MapResult:
    """Write the map of an :class:`~stylecluster.viz.data.Explorer` to ``out`` (an .html file).

    Self-contained up to ``embed_limit`` images; otherwise thumbnails go to ``<stem>_files/thumbs/``.
    Clusters are named from their data (:mod:`~stylecluster.viz.names`); ``names`` overrides
    them (a JSON file or a dict).
    """
    from .cache import cache_dir

    if color_by == "label" and not explorer.has_labels:
        raise ValueError("colouring by label needs a labels table")
    out = check_writable(out)
    cache = cache if cache is not None else cache_dir(explorer.store)
    points = explorer.points
    coords = umap_coordinates(explorer.fused, cache, umap_params)
    thumbs = ensure_thumbnails(explorer.images_root, zip(points["path"], points["sha256"]), cache, workers)
    thumbs_dir = None
    atlas = build_atlas([thumbs[sha] for sha in thumbnail_order(thumbs)], workers)
    if len(points) <= embed_limit:
        thumb_src = {sha: data_uri(f) for sha, f in thumbs.items()}
        atlas_data = atlas.data()
    else:
        thumbs_dir = out.parent / f"{out.stem}_files" / "thumbs"
        copy_thumbnails(thumbs, thumbs_dir)
        rel = thumbs_dir.relative_to(out.parent).as_posix()
        thumb_src = {sha: f"{rel}/{f.name}" for sha, f in thumbs.items()}
        atlas_data = atlas.data(save_atomic(thumbs_dir.parent / "atlas.js", atlas.script_text()).relative_to(out.parent).as_posix())
    store_name = Path(explorer.store.path).name
    colouring = explorer.label_column if color_by == "label" else "cluster"
    title = f"Style map of {store_name}: {len(points)} images by {colouring}"
    labels = label_of(cluster_names(explorer, names)) if explorer.has_clusters else None
    fragment = map_fragment(points, coords, thumb_src, color_by, explorer.label_column, title, cluster_labels=labels,
                            atlas=atlas_data)
    save_atomic(out, page(title, fragment))
    return MapResult(out, thumbs_dir, len(points), len(thumbs))
