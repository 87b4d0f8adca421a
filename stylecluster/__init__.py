"""stylecluster: the style structure of an art collection, without labels.

The Python API that the CLI and the notebooks share::

    import stylecluster as sc
    report = sc.embed_folder("paintings/", "paintings.store")
    store = sc.load_store("paintings.store")
    clustering = sc.StyleClustering().fit(store)          # BGMM by default
    clusters = clustering.to_frame()                      # path, cluster, probability
    sc.evaluate_clusters(clusters, sc.read_labels("labels.csv", "style"), "style")
"""
from importlib import import_module

from ._version import __version__

# Every name is imported when first used (PEP 562): ``import stylecluster`` and
# ``stylecluster --version`` then cost no pandas, scikit-learn or torch (measured: eager, the
# command line took 11 s and 1 GB before printing its version).
_LAZY = {
    "Config": "config", "load_config": "config",
    "read_labels": "data.labels",
    "evaluate_clusters": "evaluate", "evaluate_labels": "evaluate",
    "EmbeddingStore": "store", "load_store": "store",
    "embed_folder": "features.embedder", "embed_images": "features.embedder",
    "StyleClustering": "cluster", "make_clusterer": "cluster", "available_methods": "cluster",
    "run_demo": "demo",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stylecluster' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)


__all__ = ["__version__", *_LAZY]
