"""Comparing clusters: how far apart two are, which works sit between them, and how all of them
merge into a tree (the module is not named ``compare`` so that ``viz.compare`` is the function).

Works are placed in the fused style space (where the clusters were found; the map's 2-D layout
distorts distances). Each cluster is modelled as a spherical Gaussian — its centre, and the spread
``σ`` of its members along any one direction (mean squared distance to the centre over the
dimensions) — weighted by its size, as a Gaussian mixture with ``spherical`` covariances would be.
A work's *membership* in every cluster is that mixture's posterior. The same for every clustering
method: CLUSTERS.csv holds only the probability of the assigned cluster, which cannot say what a
work is *between*. Measured on a 200-image synthetic collection (32 dimensions), a first attempt —
distances in units of each cluster's median radius — gave every work about equal membership: in
many dimensions every point is about one radius from every centre. Spreads per direction do not
have that problem.

* :func:`compare_clusters` — the works whose two highest memberships are the two clusters, ranked
  by the smaller of the two, and the distance between the centres in units of the clusters'
  pooled ``σ`` (along the line joining them, below ~2 the two overlap);
* :func:`linkage` / :func:`dendrogram_figure` — Ward's merge tree of the cluster centres, each
  centre weighted by its cluster's size, drawn with the clusters' names.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import InputError
from .html import esc


@dataclass
class ClusterGeometry:
    clusters: list[int]  # real clusters (no -1), in the order of the rows below
    centres: np.ndarray  # (k, d)
    sigma: np.ndarray  # (k,) spread along one direction
    sizes: np.ndarray  # (k,)


def geometry(points: pd.DataFrame, fused: np.ndarray) -> ClusterGeometry:
    labels = points["cluster"].to_numpy()
    clusters = sorted(int(c) for c in np.unique(labels) if c >= 0)
    if not clusters:
        raise InputError("no clusters to compare: every work is an outlier or the store was not clustered")
    centres = np.stack([fused[labels == c].mean(axis=0) for c in clusters])
    sigma = np.array([np.sqrt(np.mean((fused[labels == c] - centres[i]) ** 2)) for i, c in enumerate(clusters)])
    sizes = np.array([(labels == c).sum() for c in clusters])
    return ClusterGeometry(clusters, centres, np.maximum(sigma, 1e-9), sizes)


def separation(geo: ClusterGeometry, i: int, j: int) -> float:
    """Distance between the centres of rows ``i`` and ``j`` in units of their pooled ``σ``."""
    return float(np.linalg.norm(geo.centres[i] - geo.centres[j]) / np.sqrt((geo.sigma[i] ** 2 + geo.sigma[j] ** 2) / 2))


def memberships(fused: np.ndarray, geo: ClusterGeometry) -> np.ndarray:
    """(n, k) soft memberships, rows summing to 1 (see the module docstring)."""
    d = fused.shape[1]
    # ‖x − c‖² expanded: no (n, k, d) array (10k works × 40 clusters × 256 dims would be 800 MB)
    squared = (fused**2).sum(axis=1)[:, None] - 2 * fused @ geo.centres.T + (geo.centres**2).sum(axis=1)[None, :]
    variance = geo.sigma**2
    logits = np.log(geo.sizes / geo.sizes.sum())[None, :] - 0.5 * d * np.log(variance)[None, :] - 0.5 * np.maximum(squared, 0.0) / variance[None, :]
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


@dataclass
class Comparison:
    a: int
    b: int
    distance: float  # between the centres, in units of the two clusters' pooled σ
    between: pd.DataFrame  # rows of points + membership_a, membership_b; most balanced first


def compare_clusters(points: pd.DataFrame, fused: np.ndarray, a: int, b: int, n: int = 12, geo: ClusterGeometry | None = None) -> Comparison:
    """The works between clusters ``a`` and ``b`` (at most ``n``) and how far apart they are."""
    geo = geo or geometry(points, fused)
    for c in (a, b):
        if c not in geo.clusters:
            raise InputError(f"no cluster {c}; clusters: {', '.join(map(str, geo.clusters))}")
    if a == b:
        raise InputError("compare two different clusters")
    ia, ib = geo.clusters.index(a), geo.clusters.index(b)
    member = memberships(fused, geo)
    top_two = np.argsort(-member, axis=1)[:, :2]
    pair = ((top_two[:, 0] == ia) & (top_two[:, 1] == ib)) | ((top_two[:, 0] == ib) & (top_two[:, 1] == ia))
    found = points[pair].assign(membership_a=member[pair, ia], membership_b=member[pair, ib])
    found = found.assign(_balance=np.minimum(found["membership_a"], found["membership_b"]))
    between = found.sort_values("_balance", ascending=False, kind="stable").drop(columns="_balance").head(n)
    return Comparison(a, b, separation(geo, ia, ib), between)


def pair_distances(geo: ClusterGeometry) -> pd.DataFrame:
    """Every pair of clusters with its distance (as in :class:`Comparison`), nearest first."""
    rows = []
    for i in range(len(geo.clusters)):
        for j in range(i + 1, len(geo.clusters)):
            rows.append({"a": geo.clusters[i], "b": geo.clusters[j], "distance": round(separation(geo, i, j), 3)})
    return pd.DataFrame(rows, columns=["a", "b", "distance"]).sort_values("distance", kind="stable", ignore_index=True)


def linkage(geo: ClusterGeometry) -> np.ndarray:
    """Ward's merge tree of the centres, each weighted by its cluster's size (scipy linkage format).

    Ward on the centres alone would treat a 20-work cluster like a 2,000-work one; the merge cost
    of Ward between groups A and B is ``|A||B|/(|A|+|B|) · ‖c_A − c_B‖²``, which is computed here
    from the sizes exactly as if every work were present.
    """
    k = len(geo.clusters)
    if k < 2:
        return np.zeros((0, 4))
    centres = {i: geo.centres[i] for i in range(k)}
    sizes = {i: float(geo.sizes[i]) for i in range(k)}
    leaves = {i: 1 for i in range(k)}  # scipy's 4th column counts leaves (clusters), not works
    merges = []
    for step in range(k - 1):
        alive = sorted(centres)
        best = None
        for x in range(len(alive)):
            for y in range(x + 1, len(alive)):
                p, q = alive[x], alive[y]
                cost = sizes[p] * sizes[q] / (sizes[p] + sizes[q]) * float(np.sum((centres[p] - centres[q]) ** 2))
                if best is None or cost < best[0]:
                    best = (cost, p, q)
        cost, p, q = best
        new = k + step
        centres[new] = (sizes[p] * centres[p] + sizes[q] * centres[q]) / (sizes[p] + sizes[q])
        sizes[new] = sizes[p] + sizes[q]
        leaves[new] = leaves.pop(p) + leaves.pop(q)
        merges.append([p, q, np.sqrt(2 * cost), leaves[new]])
        del centres[p], centres[q], sizes[p], sizes[q]
    return np.array(merges, dtype=np.float64)


def dendrogram_figure(geo: ClusterGeometry, names: dict[int, str]):
    """The merge tree with the clusters' names as leaves (text escaped)."""
    import plotly.graph_objects as go
    from scipy.cluster.hierarchy import dendrogram

    if len(geo.clusters) < 2:
        raise InputError("a tree needs at least two clusters")
    tree = dendrogram(linkage(geo), no_plot=True, orientation="left")
    fig = go.Figure()
    for xs, ys in zip(tree["dcoord"], tree["icoord"]):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#3a5ba0", "width": 1.5}, hoverinfo="skip", showlegend=False))
    leaves = [geo.clusters[i] for i in tree["leaves"]]
    fig.update_layout(
        title={"text": "How the clusters merge (Ward, in the fused style space)", "x": 0.01},
        template="plotly_white",
        height=max(300, 40 + 26 * len(leaves)),
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        xaxis={"title": "merge distance", "zeroline": False},
        yaxis={"tickvals": [5 + 10 * i for i in range(len(leaves))], "ticktext": [esc(names.get(c, f"cluster {c}")) for c in leaves],
               "zeroline": False, "showgrid": False},
    )
    return fig


def compare(explorer, a: int, b: int, n: int = 12) -> Comparison:
    """:func:`compare_clusters` for an explorer."""
    return compare_clusters(explorer.points, explorer.fused, a, b, n)


def dendrogram(explorer, names=None):
    """The named merge tree of an explorer's clusters (``names``: overrides, see :mod:`.names`)."""
    from .names import cluster_names, label_of

    return dendrogram_figure(geometry(explorer.points, explorer.fused), label_of(cluster_names(explorer, names)))
