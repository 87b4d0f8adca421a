"""Clustering: one estimator interface, a registry of methods, fusion, and the fitted pipeline."""
# Importing each method module registers it under its ``--method`` name.
from . import agglomerative, bgmm, dec, hdbscan_, kmeans  # noqa: F401
from .base import ClusterMethod, available_methods, make_clusterer, register_method
from .fuse import Fuser
from .persist import ModelFileError, model_path_for
from .pipeline import StyleClustering, stability
from .selection import select_k

__all__ = ["ClusterMethod", "available_methods", "make_clusterer", "register_method", "Fuser", "ModelFileError", "StyleClustering",
           "model_path_for", "select_k", "stability"]
