"""stylecluster: the style structure of an art collection, without labels.

The Python API that the CLI and the notebooks share::

    import stylecluster as sc
    report = sc.embed_folder("paintings/", "paintings.store")
    store = sc.load_store("paintings.store")
    clustering = sc.StyleClustering().fit(store)          # BGMM by default
    clusters = clustering.to_frame()                      # path, cluster, probability
    sc.evaluate_clusters(clusters, sc.read_labels("labels.csv", "style"), "style")
"""
from ._version import __version__
from .config import Config, load_config
from .data.labels import read_labels
from .evaluate import evaluate_clusters, evaluate_labels
from .store import EmbeddingStore, load_store


def __getattr__(name: str):
    # Heavy imports (torch, timm) only when these are used.
    if name in ("embed_folder", "embed_images"):
        from .features import embedder

        return getattr(embedder, name)
    if name in ("StyleClustering", "make_clusterer", "available_methods"):
        from . import cluster

        return getattr(cluster, name)
    if name == "run_demo":
        from .demo import run_demo

        return run_demo
    raise AttributeError(f"module 'stylecluster' has no attribute {name!r}")


__all__ = [
    "__version__", "Config", "load_config", "load_store", "EmbeddingStore", "embed_folder", "embed_images",
    "StyleClustering", "make_clusterer", "available_methods", "evaluate_clusters", "evaluate_labels", "read_labels", "run_demo",
]
