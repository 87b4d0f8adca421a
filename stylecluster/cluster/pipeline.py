"""Fusion + a clustering method in one fitted object: what ``stylecluster cluster`` saves.

``StyleClustering`` is what the CLI, notebooks and ``assign`` use; it never branches on the
method's name — the method comes from the registry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from ..config import ClusterConfig, FuseConfig
from .base import make_clusterer
from .fuse import Fuser, blocks_for_store


class StyleClustering:
    """Fit a clustering of a store's images.

    After :meth:`fit`: ``fuser_`` (the fitted :class:`Fuser`), ``method_`` (the fitted
    clustering estimator), ``paths_``, ``labels_``, ``probabilities_``, ``n_clusters_``.
    """

    def __init__(self, cluster: ClusterConfig | None = None, fuse: FuseConfig | None = None):
        self.cluster = cluster or ClusterConfig()
        self.fuse = fuse or FuseConfig()

    def fit(self, store) -> "StyleClustering":
        X, blocks = blocks_for_store(store, local_weight=self.fuse.local_weight)
        self.fuser_ = Fuser(blocks, pca_components=self.fuse.pca_components, whiten=self.fuse.whiten, random_state=self.cluster.seed)
        Z = self.fuser_.fit_transform(X)
        self.method_ = make_clusterer(self.cluster.method, k=self.cluster.k, seed=self.cluster.seed, **self.cluster.params)
        self.method_.fit(Z)
        self.paths_ = list(store.paths)
        self.labels_ = np.asarray(self.method_.labels_)
        self.probabilities_ = np.asarray(self.method_.probabilities_, dtype=np.float64)
        self.n_clusters_ = int(self.method_.n_clusters_)
        return self

    def embed(self, store) -> np.ndarray:
        """The fused coordinates of a store's images in this clustering's space."""
        X, _ = blocks_for_store(store, local_weight=self.fuse.local_weight)
        return self.fuser_.transform(X)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"path": self.paths_, "cluster": self.labels_, "probability": np.round(self.probabilities_, 6)})

    def save(self, path: str | Path) -> None:
        joblib.dump(self, path)

    @staticmethod
    def load(path: str | Path) -> "StyleClustering":
        obj = joblib.load(path)
        if not isinstance(obj, StyleClustering):
            raise ValueError(f"{path}: not a saved stylecluster clustering")
        return obj

    def summary(self) -> dict[str, Any]:
        outliers = float(np.mean(self.labels_ < 0)) if len(self.labels_) else 0.0
        return {"method": self.cluster.method, "n_clusters": self.n_clusters_, "n_images": len(self.labels_), "outlier_share": outliers}
