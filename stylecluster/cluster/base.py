"""One estimator interface for every clustering method, and the registry behind ``--method``.

Every method follows scikit-learn: ``__init__`` only stores parameters; ``fit(X)`` returns self
and sets

* ``labels_``        (n,) int cluster per point, ``-1`` for outliers where the method has them;
* ``probabilities_`` (n,) float in [0, 1], how sure the assignment of each point is;
* ``n_clusters_``    number of clusters found (outliers not counted).

``predict(X)`` assigns new points; ``predict_proba(X)`` returns (n, n_clusters_) soft
assignments where the method defines them (``has_proba``).

Methods differ in what ``k`` means to them (``k_meaning``): ``"exact"`` (k-means), ``"upper_bound"``
(BGMM infers the number, k caps it) or ``None`` (HDBSCAN infers it from density; k is refused).

A million points: methods whose fit grows faster than n (``fits_subsample``) build their model on
a seeded subsample of at most ``max_fit_samples`` points and label every other point as a new one
(``assign``); ``assign`` and the helpers below work ``BATCH_ROWS`` points at a time, so no float64
copy of the whole matrix is ever made.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin

from ..errors import ConfigError
from ..registry import Registry

log = logging.getLogger("stylecluster")

METHODS: Registry[type["ClusterMethod"]] = Registry("cluster method")

#: Points labelled at a time: 65,536 x 128 fused dimensions is 64 MB in float64, where a million
#: points at once took 1 GB for each float64 copy.
BATCH_ROWS = 65_536


def row_batches(n: int, batch_rows: int | None = None) -> list[slice]:
    """Consecutive slices of at most ``batch_rows`` (default ``BATCH_ROWS``) rows covering
    ``range(n)`` (one empty slice for n = 0)."""
    batch_rows = batch_rows or BATCH_ROWS
    return [slice(start, start + batch_rows) for start in range(0, max(n, 1), batch_rows)]


class ClusterMethod(BaseEstimator, ClusterMixin):
    #: what ``k`` means to this method: "exact", "upper_bound" or None (k not used)
    k_meaning: str | None = "exact"
    #: whether predict_proba is defined
    has_proba: bool = True
    #: default k when the user gives none (None: the method needs no k)
    default_k: int | None = None
    #: for ``k="auto"``: a cheaper registered method whose clusterings stand in for this one's
    #: when candidate k are scored (None: this method itself is fitted for every candidate)
    k_selection_proxy: str | None = None
    #: whether ``fit`` builds the model on a seeded subsample of at most ``max_fit_samples`` points
    #: (a parameter of such methods) and labels the others as new points, with ``assign``
    fits_subsample: bool = False

    def fit(self, X: np.ndarray, y: Any = None) -> "ClusterMethod":  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} defines no soft assignment")

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels of new points and how sure each is: for new points what ``labels_`` and
        ``probabilities_`` are for the fitted ones (``assign`` on the CLI). Works ``BATCH_ROWS``
        points at a time."""
        if len(X) <= BATCH_ROWS:
            return self._assign_batch(X)
        labels, probabilities = zip(*(self._assign_batch(X[rows]) for rows in row_batches(len(X))))
        return np.concatenate(labels), np.concatenate(probabilities)

    def _assign_batch(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = self.predict(X)
        proba = self.predict_proba(X)
        return labels, proba[np.arange(len(labels)), labels]

    def point_details(self) -> dict[str, np.ndarray]:
        """Extra per-point columns of the fitted points for CLUSTERS.csv (e.g. outlier scores)."""
        return {}

    def tables(self) -> dict[str, pd.DataFrame]:
        """Extra tables the method writes next to CLUSTERS.csv, by name (e.g. a merge tree)."""
        return {}


def register_method(name: str) -> Callable[[type[ClusterMethod]], type[ClusterMethod]]:
    def decorator(cls: type[ClusterMethod]) -> type[ClusterMethod]:
        cls.method_name = name
        return METHODS.register(name, cls)

    return decorator


def available_methods() -> list[str]:
    return METHODS.names()


def method_class(method: str) -> type[ClusterMethod]:
    """The estimator class registered under ``method``."""
    return METHODS.get(method)


def make_clusterer(method: str, k: int | None = None, seed: int = 0, **params: Any) -> ClusterMethod:
    """Build a clustering estimator by registry name.

    ``k`` is routed to the method's ``k`` parameter according to its ``k_meaning``; methods
    that infer the number of clusters from density refuse it rather than ignore it.
    """
    cls = method_class(method)
    if k is not None:
        if cls.k_meaning is None:
            raise ConfigError(f"{method} infers the number of clusters itself; do not pass k")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        params["k"] = k
    params.setdefault("random_state", seed)
    accepted = cls._get_param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"{method} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}")
    return cls(**params)


def student_t_assignments(X: np.ndarray, centers: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Soft assignments q_ij ∝ (1 + ||x_i - μ_j||² / α)^(-(α+1)/2) (DEC, Xie et al. 2016, eq. 1)."""
    if len(X) > BATCH_ROWS:
        return np.concatenate([student_t_assignments(X[rows], centers, alpha) for rows in row_batches(len(X))])
    d2 = (X**2).sum(1)[:, None] - 2.0 * X @ centers.T + (centers**2).sum(1)[None, :]
    q = (1.0 + np.maximum(d2, 0.0) / alpha) ** (-(alpha + 1.0) / 2.0)
    return q / q.sum(axis=1, keepdims=True)


def nearest_centroid(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Row of ``centers`` nearest to each point (squared Euclidean distance)."""
    centers = np.asarray(centers, dtype=np.float64)
    if len(X) > BATCH_ROWS:
        return np.concatenate([nearest_centroid(X[rows], centers) for rows in row_batches(len(X))])
    d2 = (centers**2).sum(1)[None, :] - 2.0 * np.asarray(X, dtype=np.float64) @ centers.T
    return d2.argmin(axis=1)


def distinct_points(X: np.ndarray, at_least: int | None = None) -> int:
    """How many distinct points X holds (identical images give identical vectors; rounding to 1e-5
    of the largest coordinate absorbs what fusion's arithmetic adds to them).

    With ``at_least``, counting stops early once that many are found among the first rows.
    """
    X = np.asarray(X)
    if len(X) == 0:
        return 0
    scale = max(float(np.abs(X[rows]).max()) for rows in row_batches(len(X))) or 1.0

    def keys(X: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(X, dtype=np.float64) / scale, 5)

    if at_least is not None and len(X) > 10_000:
        head = len(np.unique(keys(X[:10_000]), axis=0))
        if head >= at_least:
            return head
    return len(np.unique(keys(X), axis=0))


def capped_k(k: int, X: np.ndarray, method: str, exact: bool = True) -> int:
    """``k``, or the number of distinct points when there are fewer: more clusters than distinct
    images would be copies of one another (k-means returned 10 centres, 9 of them empty, for 20
    identical images). ``exact``: the user asked for exactly k, so say so in one line."""
    n = distinct_points(X, at_least=k)
    if n < k:
        if exact:
            log.warning("%s: the collection has %d distinct images, so %d cluster%s instead of %d", method, n, n, "" if n == 1 else "s", k)
        return n
    return k


class OneCluster(ClusterMethod):
    """What every method amounts to on identical images: one cluster that holds them all.

    Attributes: labels_ (all 0), probabilities_ (all 1), n_clusters_ (1), cluster_centers_ (1, d).
    """

    def fit(self, X: np.ndarray, y: Any = None) -> "OneCluster":
        X = np.asarray(X, dtype=np.float64)
        self.cluster_centers_ = X.mean(axis=0, keepdims=True)
        self.labels_ = np.zeros(len(X), dtype=np.int64)
        self.probabilities_ = np.ones(len(X))
        self.n_clusters_ = 1
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(len(X), dtype=np.int64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.ones((len(X), 1))
