"""A small synthetic collection with hostile file names and labels, shared by the viz tests."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stylecluster.viz.synthetic import SyntheticCollection, make_collection

HOSTILE_NAME = "<script>alert(1)</script>.jpg"
QUOTED_NAME = "a \"quoted\" & 'odd' <b>name</b>.jpg"
HOSTILE_LABEL = "<img src=x onerror=alert(2)>"


def hostile_collection(folder: Path, n: int = 120, n_clusters: int = 4) -> SyntheticCollection:
    """``make_collection`` whose first two files have hostile names and first style label is hostile.

    The hostile image gets probability 1.0 so that it is the most typical member of its cluster.
    """
    collection = make_collection(folder, n=n, n_clusters=n_clusters, names=[HOSTILE_NAME, QUOTED_NAME])
    labels = pd.read_csv(collection.labels)
    labels.loc[labels["style"] == "style_0", "style"] = HOSTILE_LABEL
    labels.to_csv(collection.labels, index=False)
    clusters = pd.read_csv(collection.clusters)
    clusters.loc[clusters["path"] == HOSTILE_NAME, "probability"] = 1.0
    clusters.to_csv(collection.clusters, index=False)
    return collection
