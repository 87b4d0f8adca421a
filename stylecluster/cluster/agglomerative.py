"""Ward agglomerative clustering with its merge tree kept, so the hierarchy can be cut at any level.

Ward's algorithm needs all pairwise distances (memory and time grow as n²: at 384 dimensions
10k points took ~400 MB and 42 s here, 100k would need 40 GB). Above ``max_fit_samples`` points
(default 5,000: ~100 MB, ~10 s) the tree is therefore built on a seeded random subsample, and the
remaining points join the cluster whose centroid is nearest — the same rule ``predict`` uses for
new images. A few thousand images determine a hierarchy of tens of styles well. At a million
images (``benchmarks/scale.py``) the fit took 15 s: the tree on 5,000, then every image labelled
a batch at a time.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import linkage

from .base import ClusterMethod, capped_k, nearest_centroid, register_method, student_t_assignments
from .reduce import subsample
from ..errors import InputError


def cut_tree(children: np.ndarray, n_clusters: int) -> np.ndarray:
    """Cluster of every leaf when a merge tree is cut into ``n_clusters`` clusters.

    ``children`` is a (n_leaves - 1, 2) merge sequence in scikit-learn / SciPy convention: row i
    merges two nodes into node ``n_leaves + i``; nodes below ``n_leaves`` are leaves. Cutting keeps
    the first ``n_leaves - n_clusters`` merges. Clusters are numbered by their smallest leaf.
    """
    children = np.asarray(children, dtype=np.int64)
    n_leaves = len(children) + 1
    if not 1 <= n_clusters <= n_leaves:
        raise InputError(f"n_clusters must be between 1 and {n_leaves}, got {n_clusters}")
    root = np.arange(2 * n_leaves - 1)
    # Later nodes first, so a node's root is final before it is handed down to its children.
    for i in range(n_leaves - n_clusters - 1, -1, -1):
        root[children[i]] = root[n_leaves + i]
    _, first, labels = np.unique(root[:n_leaves], return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[labels]


@register_method("agglomerative")
class WardClustering(ClusterMethod):
    """Ward linkage (minimum increase of within-cluster variance at every merge).

    Parameters
    ----------
    k : int or None
        Where the tree is cut (None: ``default_k`` = 10). Any other cut: :meth:`cut`.
    max_fit_samples : int
        Build the tree on at most this many points (0: all; mind the n² memory).
    alpha : float
        Degrees of freedom of the Student-t kernel behind the soft assignments.
    random_state : int
        Seeds the subsample.

    Attributes
    ----------
    children_ : (n_leaves - 1, 2) merge tree (scikit-learn convention), distances_ : (n_leaves - 1,)
    Ward merge heights, counts_ : (n_leaves - 1,) points under each merge, leaf_rows_ : rows of the
    fitted X that are the tree's leaves, leaf_points_ : their coordinates (for cuts at other levels),
    cluster_centers_, labels_, probabilities_, n_clusters_.
    """

    k_meaning = "exact"
    has_proba = True
    default_k = 10
    fits_subsample = True

    def __init__(self, k: int | None = None, max_fit_samples: int = 5_000, alpha: float = 1.0, random_state: int = 0):
        self.k = k
        self.max_fit_samples = max_fit_samples
        self.alpha = alpha
        self.random_state = random_state

    def fit(self, X: np.ndarray, y=None) -> "WardClustering":
        X = np.asarray(X, dtype=np.float32)
        if len(X) < 2:
            raise InputError(f"agglomerative clustering needs at least 2 points, got {len(X)}")
        k = capped_k(self.default_k if self.k is None else int(self.k), X, "agglomerative")
        self.leaf_rows_ = subsample(len(X), self.max_fit_samples, self.random_state)
        self.leaf_points_ = X[self.leaf_rows_]
        tree = linkage(self.leaf_points_.astype(np.float64), method="ward")
        self.children_ = tree[:, :2].astype(np.int64)
        self.distances_ = tree[:, 2]
        self.counts_ = tree[:, 3].astype(np.int64)
        leaf_labels = self.cut(k)
        self.cluster_centers_ = self.centroids(leaf_labels)
        labels = nearest_centroid(X, self.cluster_centers_)
        labels[self.leaf_rows_] = leaf_labels
        self.labels_ = labels.astype(np.int64)
        self.probabilities_ = student_t_assignments(X, self.cluster_centers_, self.alpha)[np.arange(len(X)), self.labels_]
        self.n_clusters_ = k
        return self

    def cut(self, n_clusters: int) -> np.ndarray:
        """Cluster of each tree leaf (``leaf_rows_``) with the hierarchy cut into ``n_clusters``."""
        return cut_tree(self.children_, n_clusters)

    def centroids(self, leaf_labels: np.ndarray) -> np.ndarray:
        """Mean of the leaf points of each cluster of a cut."""
        n = int(leaf_labels.max()) + 1
        sums = np.zeros((n, self.leaf_points_.shape[1]))
        np.add.at(sums, leaf_labels, self.leaf_points_)
        return sums / np.bincount(leaf_labels, minlength=n)[:, None]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return nearest_centroid(X, self.cluster_centers_).astype(np.int64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return student_t_assignments(np.asarray(X, dtype=np.float32), self.cluster_centers_, self.alpha)

    def tables(self) -> dict[str, pd.DataFrame]:
        n_leaves = len(self.leaf_rows_)
        tree = pd.DataFrame(
            {
                "node": np.arange(n_leaves, 2 * n_leaves - 1),
                "left": self.children_[:, 0],
                "right": self.children_[:, 1],
                "distance": self.distances_,
                "size": self.counts_,
            }
        )
        leaves = pd.DataFrame({"node": np.arange(n_leaves), "row": self.leaf_rows_})
        return {"merge_tree": tree, "tree_leaves": leaves}
