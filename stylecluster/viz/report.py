"""A static HTML explorer of a clustering: a folder that opens offline from ``index.html``.

Layout of ``OUT/``::

    index.html              the style map, the metrics (with labels), one row per cluster
    clusters/cluster-3.html one page per cluster (``cluster-outliers.html`` for cluster -1):
                            label composition, most typical / least certain / outliers, each image
                            with the 5 DoG patches its local-branch vector was computed from
    thumbs/<sha256>.jpg     thumbnails (named by content hash: no file name reaches a URL)
    patches/<sha256>.png    DoG patch strips of the images shown on cluster pages
    strokes/cluster-3.png   each cluster's typical strokes (:mod:`~stylecluster.viz.strokes`)
                            (a store of imported vectors, :mod:`stylecluster.importer`, has neither)
    montages/cluster-3.jpg  each cluster's most typical works in a row
    compare.html            each cluster beside its nearest: works between, typical patches, distances
    atlas.js                every thumbnail in one texture, for the map's images mode (:mod:`~stylecluster.viz.atlas`;
                            up to 65,536 images)
    map/                    above 2,500 images, the map's points (:mod:`~stylecluster.viz.payload`): the index
                            stays ~5 MB (plotly.js) whatever the size of the collection
    CLUSTERS.names.csv      the clusters' names (:mod:`~stylecluster.viz.names`), sizes, compositions, spans

Clusters are named from their data, or by a names JSON file; with years, the index also shows
the timeline and each cluster's share of every decade (:mod:`~stylecluster.viz.chronology`).

Every file name and label goes through :func:`~stylecluster.viz.html.esc`; the map's data goes
through :func:`~stylecluster.viz.html.script_json` and is written into the page as text only.

The folder is written whole or not at all: it is built under a hidden name beside ``OUT`` and
renamed into place when complete (an earlier report there is replaced only then), so a crash or
a full disk leaves the previous report, or nothing, and the rerun is never refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..evaluate import composition, evaluate_clusters
from ..importer import imported_from
from ..io import OutputError, check_writable, printable, save_atomic, staged_folder
from .atlas import ATLAS_LIMIT, build_atlas
from .chronology import time_fragment
from .comparison import dendrogram_figure, geometry
from .comparison_page import compare_page
from .data import NO_LABEL
from .html import bar_chart, esc, page, table
from .members import ClusterMembers, cluster_members
from .montage import write_montage
from .names import cluster_names, label_of, spreadsheet_safe
from .patch_strip import PatchStrip, write_patch_strips
from .strokes import write_typical_strokes
from .provenance import config_for_store
from .thumbs import ensure_thumbnails
from .works import record_link, when
from .umap_map import EMBED_LIMIT, Sidecar, UmapParams, copy_thumbnails, map_fragment, thumbnail_order, umap_coordinates
from ..errors import InputError

#: Labels shown per cluster in the composition chart; the rest are summed as "other labels".
TOP_LABELS = 12


@dataclass
class ReportResult:
    folder: Path
    index: Path
    pages: dict[int, Path] = field(default_factory=dict)
    metrics: dict | None = None
    n_images: int = 0
    n_shown: int = 0  # images shown on cluster pages (each with its patch strip)


def page_name(cluster: int) -> str:
    return "cluster-outliers.html" if cluster < 0 else f"cluster-{cluster}.html"


def cluster_title(cluster: int) -> str:
    return "Outliers (no cluster)" if cluster < 0 else f"Cluster {cluster}"


def montage_name(cluster: int) -> str:
    return page_name(cluster).replace(".html", ".jpg")


# ----------------------------------------------------------------------------- cluster pages


def _card(row, label_column: str | None, thumbs: dict, strips: dict[str, PatchStrip]) -> str:
    name = esc(row.path)
    if row.sha256 in thumbs:
        image = f'<img class="thumb" src="../thumbs/{row.sha256}.jpg" alt="{name}">'
    else:
        image = '<div class="missing">image not available</div>'
    facts = [f"probability {row.probability:.3f}"]
    if hasattr(row, "relative_distance"):
        facts.append(f"distance {row.relative_distance:.2f}× the median")
    label = f"<div>{esc(label_column)}: {esc(row.label)}</div>" if label_column else ""
    work = _work_lines(row)
    strip = strips.get(row.sha256)
    if strip is not None:
        where = "; ".join(f"({x}, {y}) {w}×{h}px" for x, y, w, h in strip.boxes.tolist())
        patches = f'<img class="patches" src="../patches/{row.sha256}.png" alt="DoG patches of {name}" title="patches at {esc(where)}">'
    else:
        patches = ""
    return (
        f'<div class="card">{image}<div class="name">{name}</div>'
        f'<div>{work}{label}<div class="muted">{" · ".join(facts)}</div></div>{patches}</div>'
    )


def _work_lines(row) -> str:
    """Title, artist and date, and a link to the work's record, for what the labels give."""
    title, artist, link = (getattr(row, name, "") for name in ("title", "artist", "link"))
    who = ", ".join(v for v in (artist, when(getattr(row, "year", np.nan), getattr(row, "date", ""))) if v)
    lines = [f"<div>{esc(title)}</div>" if title else "", f'<div class="muted">{esc(who)}</div>' if who else ""]
    if record_link(link):
        lines.append(f'<div><a href="{esc(record_link(link))}" rel="noopener noreferrer" target="_blank">record</a></div>')
    return "".join(lines)


def _composition(members: ClusterMembers, points: pd.DataFrame) -> str:
    labels = points.loc[points["cluster"] == members.cluster, "label"]
    (entry,) = composition(labels.to_numpy(), [members.cluster] * len(labels), top=TOP_LABELS)
    counts = dict(entry["labels"])
    shown = sum(counts.values())
    if shown < entry["size"]:
        others = labels[~labels.isin(counts.keys())].nunique()
        counts[f"{others} other labels"] = entry["size"] - shown
    return bar_chart(counts, entry["size"])


def cluster_page(
    members: ClusterMembers,
    neighbours: tuple[int | None, int | None],
    points: pd.DataFrame,
    label_column: str | None,
    thumbs: dict,
    strips: dict[str, PatchStrip],
    patch_note: str = "",
    name: str = "",
    strokes: str = "",
) -> str:
    title = cluster_title(members.cluster)
    nav = ['<a href="../index.html">← all clusters</a>']
    for word, other in zip(("previous", "next"), neighbours):
        if other is not None:
            nav.append(f'<a href="{page_name(other)}">{word}: {esc(cluster_title(other))}</a>')
    parts = [
        f"<nav>{''.join(nav)}</nav>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sc-name" style="font-size:17px;margin:0">{esc(name)}</p>' if name else "",
        f'<p class="muted">{members.size} images · mean probability {members.mean_probability:.3f} · {esc(patch_note)}</p>',
    ]
    if label_column:
        parts += [f"<h2>{esc(label_column)} composition</h2>", _composition(members, points)]
    if strokes:
        parts.append(
            '<section class="strokes"><h2>Typical strokes</h2><p class="muted">the patches of its most probable members nearest the '
            f'cluster\'s centroid in the brush-stroke code space</p><img src="{esc(strokes)}" alt="typical strokes"></section>'
        )
    for section, rows in members.sections.items():
        cards = "".join(_card(row, label_column, thumbs, strips) for row in rows.itertuples(index=False))
        parts.append(f'<section><h2>{esc(section)} <span class="muted">({len(rows)})</span></h2><div class="grid">{cards or "<p class=muted>none</p>"}</div></section>')
    rest = members.size - sum(len(rows) for rows in members.sections.values())
    if rest > 0:  # a page lists at most 3 x per_section works, whatever the size of the cluster
        parts.append(f'<p class="muted sc-rest">{rest} more members are not listed here: find them on the map (search, lasso) and in CLUSTERS.csv.</p>')
    return page(f"{title} — stylecluster report", "\n".join(parts))


# ----------------------------------------------------------------------------- index


def _metrics_table(metrics: dict) -> str:
    rows = [
        ("images scored", metrics["n_images"]),
        (f"{metrics['label_column']} labels", metrics["n_labels"]),
        ("clusters", metrics["n_clusters"]),
        ("outliers", f"{metrics['outlier_share']:.1%}"),
        ("purity", f"{metrics['purity']:.3f}"),
        ("NMI", f"{metrics['nmi']:.3f}"),
        ("ARI", f"{metrics['ari']:.3f}"),
        ("accuracy (Hungarian)", f"{metrics['accuracy']:.3f}"),
    ]
    return table(("metric", "value"), rows, numeric=(1,))


def _sizes_table(all_members: list[ClusterMembers], points: pd.DataFrame, label_column: str | None, names: dict[int, str], montages: set[int]) -> str:
    total = len(points)
    head = ["cluster", "name", "most typical", "images", "share", "mean probability"] + ([f"majority {label_column}", "its share"] if label_column else [])
    rows = []
    for m in all_members:
        montage = f'<img src="montages/{montage_name(m.cluster)}" alt="" style="height:48px">' if m.cluster in montages else ""
        cells = [f'<td><a href="clusters/{page_name(m.cluster)}">{esc(cluster_title(m.cluster))}</a></td>', f"<td>{esc(names.get(m.cluster, ''))}</td>", f"<td>{montage}</td>"]
        cells += [f'<td class="num">{v}</td>' for v in (m.size, f"{m.size / total:.1%}", f"{m.mean_probability:.3f}")]
        if label_column:
            counts = points.loc[points["cluster"] == m.cluster, "label"].value_counts()
            cells += [f"<td>{esc(counts.index[0])}</td>", f'<td class="num">{counts.iloc[0] / m.size:.0%}</td>']
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _summary_line(explorer, all_members: list[ClusterMembers]) -> str:
    # Counted from the assignments: a method's own count may include empty components (BGMM).
    clusters = sum(m.cluster >= 0 for m in all_members)
    unclaimed = sum(m.size for m in all_members if m.cluster < 0)
    method = getattr(getattr(explorer.fusion, "cluster", None), "method", None)
    line = f"{len(explorer.points)} images in {clusters} clusters" + (f" by {esc(method)}" if method else "")
    return line + (f", {unclaimed} not claimed by any" if unclaimed else "") + "."


def index_page(explorer, all_members, metrics, map_html: str, names: dict[int, str], montages: set[int], time_html: str = "", tree_html: str = "") -> str:
    store_name = Path(explorer.store.path).name
    parts = [
        f"<h1>Style clusters of {esc(store_name)}</h1>",
        f'<p class="muted">{_summary_line(explorer, all_members)} Hover the map for a painting; click a point to open its cluster.</p>',
        map_html,
    ]
    if metrics is not None:
        parts += [f"<h2>Agreement with the {esc(explorer.label_column)} labels</h2>", _metrics_table(metrics)]
    parts += [
        "<h2>Clusters</h2>",
        '<p class="muted">Names are made from each cluster\'s labels and years; override them with a names file '
        '(<code>--names names.json</code>). All of them are in <a href="CLUSTERS.names.csv">CLUSTERS.names.csv</a>.</p>',
        _sizes_table(all_members, explorer.points, explorer.label_column, names, montages),
    ]
    if tree_html:
        parts += ["<h2>How the clusters relate</h2>", '<p><a href="compare.html">Compare neighbouring clusters: the works between them and their brush strokes</a></p>', tree_html]
    if time_html:
        parts += ["<h2>Time</h2>", time_html]
    return page(f"Style clusters of {store_name}", "\n".join(parts))


# ----------------------------------------------------------------------------- the whole report


MARKER = ".stylecluster-report"


def check_folder(out: Path, overwrite: bool = False) -> None:
    """Raise unless a report may be written to ``out``: an existing report there is replaced only
    with ``overwrite``; a non-empty folder that is not a report is never touched (its files are
    not ours); the folder and the one it is in must be writable."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{printable(out)}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise InputError(f"{printable(out)}: folder is not empty and is not a stylecluster report; choose another --out")
        if not overwrite:
            raise InputError(f"{printable(out)}: a report exists there; pass --overwrite to replace it")
    check_writable(out, folder=True)
    check_writable(out.parent / f".{out.name}.staging", folder=True)


def write_report(
    explorer,
    out: str | Path,
    per_section: int = 12,
    config: Config | None = None,
    cache: Path | None = None,
    umap_params: UmapParams = UmapParams(),
    workers: int = 2,
    overwrite: bool = False,
    names: str | Path | dict[int, str] | None = None,
) -> ReportResult:
    """Write the explorer for an :class:`~stylecluster.viz.data.Explorer` into the folder ``out``.

    ``config`` is the base for the store's embedding settings (see
    :func:`~stylecluster.viz.provenance.config_for_store`); it decides which patches are drawn.
    ``names`` overrides the clusters' names (a JSON file or a dict; see :mod:`.names`).
    """
    from .cache import cache_dir

    out = Path(out)
    check_folder(out, overwrite)
    cache = cache if cache is not None else cache_dir(explorer.store)
    table = cluster_names(explorer, names)  # a bad names file fails before any work
    with staged_folder(out) as folder:
        (folder / "clusters").mkdir()
        result = _write_report(explorer, folder, per_section, config, cache, umap_params, workers, table)
    result.folder, result.index = out, out / "index.html"
    result.pages = {c: out / "clusters" / page_name(c) for c in result.pages}
    return result


def _write_report(explorer, out: Path, per_section: int, config: Config | None, cache: Path, umap_params: UmapParams, workers: int,
                  table: pd.DataFrame) -> ReportResult:
    points, label_column = explorer.points, explorer.label_column
    names = dict(zip(table["cluster"].astype(int), table["name"]))
    save_atomic(out / "CLUSTERS.names.csv", lambda tmp: spreadsheet_safe(table).to_csv(tmp, index=False))
    (out / MARKER).write_text("made by stylecluster report; replaced by `stylecluster report --overwrite`\n")

    thumbs = ensure_thumbnails(explorer.images_root, zip(points["path"], points["sha256"]), cache, workers)
    copy_thumbnails(thumbs, out / "thumbs")
    all_members = cluster_members(points, explorer.fused, per_section)
    shown = pd.concat([rows for m in all_members for rows in m.sections.values()])
    store_config = config_for_store(explorer.store, config)
    imported = imported_from(explorer.store)
    if imported is not None:  # no branch of ours made these vectors: no patches behind them
        strips, strokes = {}, {}
    else:
        strips = write_patch_strips(explorer.images_root, zip(shown["path"], shown["sha256"]), out / "patches", store_config, workers)
        strokes = write_typical_strokes(explorer.images_root, points, out / "strokes", store_config)
    n = store_config.local.n_patches
    if imported is not None:
        patch_note = f"vectors imported from {imported.get('source')}, without brush-stroke patches"
    elif store_config.local.enabled:
        patch_note = f"each image with the {n} Difference-of-Gaussians patches its brush-stroke vector was computed from"
    else:
        patch_note = f"each image with the {n} Difference-of-Gaussians patches the brush-stroke branch would use (this store was embedded without it)"

    result = ReportResult(out, out / "index.html", n_images=len(points), n_shown=len(shown))
    order = [m.cluster for m in all_members]
    for i, members in enumerate(all_members):
        neighbours = (order[i - 1] if i > 0 else None, order[i + 1] if i + 1 < len(order) else None)
        path = out / "clusters" / page_name(members.cluster)
        stroke_src = f"../strokes/{strokes[members.cluster].name}" if members.cluster in strokes else ""
        page_html = cluster_page(members, neighbours, points, label_column, thumbs, strips, patch_note, names.get(members.cluster, ""), stroke_src)
        path.write_text(page_html, encoding="utf-8")
        result.pages[members.cluster] = path

    if explorer.has_labels:
        labelled = points.loc[points["label"] != NO_LABEL, ["path", "label"]].rename(columns={"label": label_column})
        result.metrics = evaluate_clusters(points[["path", "cluster"]], labelled, label_column)
    coords = umap_coordinates(explorer.fused, cache, umap_params)
    thumb_src = {sha: f"thumbs/{f.name}" for sha, f in thumbs.items()}
    hrefs = {c: f"clusters/{page_name(c)}" for c in order}
    distinct = thumbnail_order(thumbs)
    atlas = None
    if len(distinct) <= ATLAS_LIMIT:
        built = build_atlas([thumbs[sha] for sha in distinct], workers)
        save_atomic(out / "atlas.js", built.script_text())
        atlas = built.data("atlas.js")
    sidecar = Sidecar(out / "map", "map") if len(points) > EMBED_LIMIT else None
    map_html = map_fragment(points, coords, thumb_src, "cluster", label_column, "", hrefs, label_of(table), atlas, sidecar)
    montages = set()
    for members in all_members:
        typical = next(iter(members.sections.values()))
        files = [thumbs[sha] for sha in typical["sha256"] if sha in thumbs]
        if write_montage(files, out / "montages" / montage_name(members.cluster)) is not None:
            montages.add(members.cluster)
    time_html = time_fragment(points, table, include_plotlyjs=False) if explorer.has_years else ""
    tree_html = _write_comparison(explorer, out, all_members, label_of(table), thumbs, strips)
    result.index.write_text(index_page(explorer, all_members, result.metrics, map_html, names, montages, time_html, tree_html), encoding="utf-8")
    return result


def _write_comparison(explorer, out: Path, all_members: list[ClusterMembers], names: dict[int, str], thumbs: dict, strips: dict) -> str:
    """Write compare.html; return the merge tree for the index ("" with fewer than two clusters)."""
    import plotly.io as pio

    if sum(m.cluster >= 0 for m in all_members) < 2:
        return ""
    geo = geometry(explorer.points, explorer.fused)
    typical = {m.cluster: next(iter(m.sections.values())) for m in all_members if m.cluster >= 0}
    html = compare_page(explorer.points, explorer.fused, geo, names, typical, thumbs, strips, lambda c: f"clusters/{page_name(c)}")
    save_atomic(out / "compare.html", html)
    return pio.to_html(dendrogram_figure(geo, names), include_plotlyjs=False, full_html=False, div_id="sc-tree",
                       config={"displaylogo": False, "responsive": True})
