"""HDBSCAN: clusters as regions of high density; points in none of them are outliers (-1).

HDBSCAN's nearest-neighbour search degrades sharply above a few tens of dimensions, so the fused
vectors are first reduced: by PCA (default, fast and deterministic) or by UMAP to a 5–15 dimensional
manifold embedding (the pattern BERTopic and PixPlot use; slower, often denser clusters).
"""
from __future__ import annotations

import warnings

import hdbscan
import numpy as np

from .base import ClusterMethod, register_method
from .reduce import make_reducer

REDUCTIONS = ("pca", "umap", "none")


def default_min_cluster_size(n: int) -> int:
    """Smallest group worth calling a style: 0.5 % of the collection, at least 5 images
    (5 of 100, 50 of 10k, 500 of 100k)."""
    return max(5, int(round(0.005 * n)))


@register_method("hdbscan")
class HDBSCANClustering(ClusterMethod):
    """HDBSCAN on a low-dimensional reduction of the fused vectors.

    Parameters
    ----------
    min_cluster_size : int or None
        None scales it to the collection (:func:`default_min_cluster_size`).
    min_samples : int or None
        Neighbourhood size of the core distance; smaller means fewer outliers. None uses
        ``min(min_cluster_size, 10)``.
    reduction : {"pca", "umap", "none"}
    n_components : int
        Dimensions kept by the reduction (5–15 suits HDBSCAN).
    umap_neighbors : int
        ``n_neighbors`` of UMAP when ``reduction="umap"``.
    cluster_selection_method : {"eom", "leaf"}
    cluster_selection_epsilon : float
    soft_clustering : bool
        Compute ``membership_vectors_`` (soft membership of every fitted point in every cluster);
        costs one pass over all points per cluster exemplar set.
    random_state : int
        Seeds PCA/UMAP (HDBSCAN itself is deterministic).

    Attributes
    ----------
    labels_, probabilities_ (membership strength; 0 for outliers), n_clusters_,
    outlier_scores_ : GLOSH outlier score of each point (higher = more outlying),
    membership_vectors_ : (n, n_clusters_) soft memberships, when ``soft_clustering``,
    reducer_ : the fitted reduction, clusterer_ : the fitted ``hdbscan.HDBSCAN``.
    """

    k_meaning = None
    has_proba = True

    def __init__(
        self,
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        reduction: str = "pca",
        n_components: int = 10,
        umap_neighbors: int = 15,
        cluster_selection_method: str = "eom",
        cluster_selection_epsilon: float = 0.0,
        soft_clustering: bool = True,
        random_state: int = 0,
    ):
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.reduction = reduction
        self.n_components = n_components
        self.umap_neighbors = umap_neighbors
        self.cluster_selection_method = cluster_selection_method
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.soft_clustering = soft_clustering
        self.random_state = random_state

    def _make_reducer(self, n_samples: int, n_features: int):
        if self.reduction == "pca":
            # not whitened: HDBSCAN's densities live in the fused space's own distances
            return make_reducer(self.n_components, n_samples, n_features, whiten=False, random_state=self.random_state)
        if self.reduction == "umap":
            import umap  # imported here: numba compilation makes the import slow

            return umap.UMAP(
                n_components=min(self.n_components, n_features),
                n_neighbors=min(self.umap_neighbors, n_samples - 1),
                min_dist=0.0,  # packed clusters suit density-based clustering
                random_state=self.random_state,
                n_jobs=1,  # a seeded UMAP is only reproducible single-threaded
            )
        if self.reduction == "none":
            return None
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")

    def _reduce(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        return np.asarray(X if self.reducer_ is None else self.reducer_.transform(X), dtype=np.float64)

    def fit(self, X: np.ndarray, y=None) -> "HDBSCANClustering":
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        self.reducer_ = self._make_reducer(n, X.shape[1])
        Z = X if self.reducer_ is None else self.reducer_.fit_transform(X)
        Z = np.asarray(Z, dtype=np.float64)
        mcs = default_min_cluster_size(n) if self.min_cluster_size is None else int(self.min_cluster_size)
        min_samples = min(mcs, 10) if self.min_samples is None else int(self.min_samples)
        self.min_cluster_size_ = mcs
        self.clusterer_ = hdbscan.HDBSCAN(
            min_cluster_size=mcs,
            min_samples=min_samples,
            cluster_selection_method=self.cluster_selection_method,
            cluster_selection_epsilon=self.cluster_selection_epsilon,
            prediction_data=True,
            core_dist_n_jobs=1,
        ).fit(Z)
        self.labels_ = self.clusterer_.labels_.astype(np.int64)
        self.probabilities_ = np.asarray(self.clusterer_.probabilities_, dtype=np.float64)
        self.n_clusters_ = int(self.labels_.max() + 1)
        self.outlier_scores_ = np.nan_to_num(np.asarray(self.clusterer_.outlier_scores_, dtype=np.float64))
        if self.soft_clustering and self.n_clusters_ > 0:
            self.membership_vectors_ = np.atleast_2d(hdbscan.all_points_membership_vectors(self.clusterer_)).reshape(n, self.n_clusters_)
        else:
            self.membership_vectors_ = None
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.assign(X)[0]

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.n_clusters_ == 0:
            return np.full(len(X), -1, dtype=np.int64), np.zeros(len(X))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # hdbscan warns about the data type of X
            labels, strengths = hdbscan.approximate_predict(self.clusterer_, self._reduce(X))
        return labels.astype(np.int64), np.asarray(strengths, dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Soft membership of new points in each cluster (rows sum to at most 1)."""
        if self.n_clusters_ == 0:
            return np.zeros((len(X), 0))
        return np.atleast_2d(hdbscan.membership_vector(self.clusterer_, self._reduce(X))).reshape(len(X), self.n_clusters_)

    def point_details(self) -> dict[str, np.ndarray]:
        return {"outlier_score": self.outlier_scores_}
