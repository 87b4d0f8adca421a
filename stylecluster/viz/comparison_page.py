"""The report's comparison page (``compare.html``): for each cluster and its nearest neighbour,
the works between them and their most typical works' brush-stroke patches side by side; then
every pair's distance. Static HTML (no script): it opens anywhere, and prints."""
from __future__ import annotations

import pandas as pd

from .comparison import ClusterGeometry, compare_clusters, pair_distances
from .html import esc, page, table

#: Pairs shown in full; the table lists them all.
MAX_PAIRS = 10
BETWEEN = 8
TYPICAL = 3


def nearest_pairs(geo: ClusterGeometry, limit: int = MAX_PAIRS) -> list[tuple[int, int, float]]:
    """Each cluster with its nearest other cluster, each pair once, nearest first."""
    pairs = pair_distances(geo)
    chosen: dict[tuple[int, int], float] = {}
    for c in geo.clusters:
        mine = pairs[(pairs["a"] == c) | (pairs["b"] == c)]
        if not mine.empty:
            row = mine.iloc[0]
            chosen[(int(row["a"]), int(row["b"]))] = float(row["distance"])
    return sorted(((a, b, d) for (a, b), d in chosen.items()), key=lambda t: t[2])[:limit]


def _thumb(row, thumbs: dict, note: str) -> str:
    name = esc(row.path)
    image = f'<img class="thumb" src="thumbs/{row.sha256}.jpg" alt="{name}">' if row.sha256 in thumbs else '<div class="missing">image not available</div>'
    return f'<div class="card">{image}<div class="name">{name}</div><div class="muted">{esc(note)}</div></div>'


def _typical(typical: pd.DataFrame, strips: dict) -> str:
    rows = [f'<img class="patches" src="patches/{sha}.png" alt="DoG patches of {esc(path)}" style="width:100%;image-rendering:pixelated;background:#000">'
            for path, sha in zip(typical["path"], typical["sha256"]) if sha in strips]
    return "".join(rows) or '<p class="muted">no patches</p>'


def compare_page(points: pd.DataFrame, fused, geo: ClusterGeometry, names: dict[int, str], typical: dict[int, pd.DataFrame],
                 thumbs: dict, strips: dict, href) -> str:
    """``typical``: each cluster's most typical rows; ``href(cluster)``: its page, relative to the report."""
    parts = [
        '<nav><a href="index.html">← all clusters</a></nav>',
        "<h1>Clusters compared</h1>",
        '<p class="muted">Distance: between the clusters\' centres in the fused style space, in units of their spread '
        "along one direction (below ~2 they overlap). Works between: highest membership in both clusters (see the documentation of "
        "<code>stylecluster.viz.comparison</code>).</p>",
    ]
    for a, b, distance in nearest_pairs(geo):
        comparison = compare_clusters(points, fused, a, b, BETWEEN, geo)
        title = f"{names.get(a, a)} ↔ {names.get(b, b)}"
        cards = "".join(
            _thumb(row, thumbs, f"membership {row.membership_a:.2f} / {row.membership_b:.2f}") for row in comparison.between.itertuples(index=False)
        )
        side = "".join(
            f'<div><h3><a href="{href(c)}">{esc(names.get(c, c))}</a></h3>{_typical(typical.get(c, points.head(0)).head(TYPICAL), strips)}</div>'
            for c in (a, b)
        )
        parts += [
            f"<section><h2>{esc(title)} <span class=\"muted\">distance {distance:.2f}</span></h2>",
            f'<h3>Works between ({len(comparison.between)})</h3><div class="grid">{cards or "<p class=muted>none</p>"}</div>',
            f'<h3>Most typical brush-stroke patches</h3><div style="display:grid;grid-template-columns:1fr 1fr;gap:16px">{side}</div></section>',
        ]
    pairs = pair_distances(geo)
    parts += ["<h2>Every pair</h2>", table(("cluster", "cluster", "distance"),
                                           [(names.get(a, a), names.get(b, b), f"{d:.2f}") for a, b, d in pairs.itertuples(index=False)], numeric=(2,))]
    return page("Clusters compared — stylecluster report", "\n".join(parts))
