"""k-means: the baseline every other method is compared with."""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans as _KMeans

from .base import ClusterMethod, capped_k, nearest_centroid, register_method, student_t_assignments


@register_method("kmeans")
class KMeansClustering(ClusterMethod):
    """Lloyd k-means with k-means++ seeding; soft assignments from a Student-t kernel.

    Parameters
    ----------
    k : int or None
        Number of clusters; None uses ``default_k`` (10, the order of the number of major
        movements in a typical collection; use ``--k auto`` to choose it from the data). Never
        more than the number of distinct points (see :func:`~.base.capped_k`).
    n_init : int
        k-means++ restarts; the run with the lowest inertia is kept.
    max_iter : int
    alpha : float
        Degrees of freedom of the Student-t kernel behind ``probabilities_``.
    random_state : int
    """

    k_meaning = "exact"
    has_proba = True
    default_k = 10

    def __init__(self, k: int | None = None, n_init: int = 4, max_iter: int = 300, alpha: float = 1.0, random_state: int = 0):
        self.k = k
        self.n_init = n_init
        self.max_iter = max_iter
        self.alpha = alpha
        self.random_state = random_state

    def fit(self, X: np.ndarray, y=None) -> "KMeansClustering":
        X = np.asarray(X, dtype=np.float32)
        k = capped_k(self.default_k if self.k is None else int(self.k), X, "kmeans")
        fitted = _KMeans(n_clusters=k, n_init=self.n_init, max_iter=self.max_iter, random_state=self.random_state).fit(X)
        self.cluster_centers_ = fitted.cluster_centers_
        self.labels_ = fitted.labels_.astype(np.int64)
        proba = student_t_assignments(X, self.cluster_centers_, self.alpha)
        self.probabilities_ = proba[np.arange(len(X)), self.labels_]
        self.n_clusters_ = k
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return nearest_centroid(X, self.cluster_centers_).astype(np.int64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return student_t_assignments(np.asarray(X, dtype=np.float32), self.cluster_centers_, self.alpha)
