"""Exploration: the style map (UMAP), the HTML cluster report, and style search.

::

    from stylecluster.viz import load_explorer, write_map, write_report, find_similar
    explorer = load_explorer(store, "clusters.csv", "labels.csv", "style")
    write_map(explorer, "map.html", color_by="label")
    write_report(explorer, "report/")
    find_similar(explorer, "images/monet-1.jpg", k=12).neighbours
    cluster_names(explorer)                 # one row per cluster: name, composition, span
    timeline(explorer).show()               # year against cluster (labels with a year column)
    decades(explorer).show()                # each cluster's share of every decade
    compare(explorer, 2, 5).between         # the works between two clusters; .distance
    dendrogram(explorer).show()             # the clusters' Ward merge tree, named
"""
from importlib import import_module

_WHERE = {
    "Explorer": "data", "load_explorer": "data",
    "cluster_members": "members",
    "write_report": "report",
    "StyleIndex": "similar", "find_similar": "similar", "write_similar": "similar",
    "cluster_names": "names", "read_name_overrides": "names",
    "timeline": "chronology", "decades": "chronology", "decade_shares": "chronology", "write_timeline": "chronology",
    "compare": "comparison", "dendrogram": "comparison",
    "EMBED_LIMIT": "umap_map", "UmapParams": "umap_map", "map_figure": "umap_map", "umap_coordinates": "umap_map", "write_map": "umap_map",
}


def __getattr__(name: str):
    # Submodules load on first use: the CLI builds its parser without torch, umap or plotly.
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_WHERE)
