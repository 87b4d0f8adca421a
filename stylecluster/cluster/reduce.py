"""Scaling, PCA and subsampling shared by the clustering estimators.

The fused matrix's blocks carry deliberate relative scales (each block's variance is its weight²,
see ``fuse.py``), so per-feature standardisation would undo the weighting. Estimators here scale
*isotropically* — one factor for all features — which fixes the overall scale their priors and
step sizes assume while keeping the balance the fuser set.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline


class IsotropicScaler(BaseEstimator, TransformerMixin):
    """Centre the features and divide all of them by one factor so the mean feature variance is 1."""

    def fit(self, X: np.ndarray, y=None) -> "IsotropicScaler":
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        self.scale_ = float(np.sqrt(max(X.var(axis=0).mean(), 1e-24)))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_


def make_reducer(n_components: int, n_samples: int, n_features: int, whiten: bool, random_state: int) -> Pipeline:
    """Isotropic scaling then PCA to at most ``n_components`` (0 keeps every dimension)."""
    limit = min(n_features, max(1, n_samples - 1))
    n_keep = limit if n_components <= 0 else min(n_components, limit)
    return Pipeline([("scale", IsotropicScaler()), ("pca", PCA(n_components=n_keep, whiten=whiten, random_state=random_state))])


def subsample(n_samples: int, max_samples: int, random_state: int) -> np.ndarray:
    """Sorted row indices of a seeded random subsample of at most ``max_samples`` rows (0: all)."""
    if max_samples <= 0 or n_samples <= max_samples:
        return np.arange(n_samples)
    return np.sort(np.random.default_rng(random_state).choice(n_samples, size=max_samples, replace=False))
