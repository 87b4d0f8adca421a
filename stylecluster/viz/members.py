"""Which members represent a cluster: its most typical, its least certain, and its outliers.

* **most typical** — highest assignment probability, ties (common: many methods give 1.0) broken
  by nearness to the cluster's centre in the fused space;
* **least certain** — lowest probability: the images the method hesitated over, usually
  between this cluster and a neighbour;
* **outliers** — farthest from the centre, whatever the probability: a method can be sure of a
  point that is still atypical (the only cluster on that side of the space).

The three lists are disjoint, each at most ``per`` long and at most a third of the cluster, so a
small cluster is split between them rather than shown three times. Images the method declared
outliers itself (cluster ``-1``) have no centre; they are listed by probability.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class ClusterMembers:
    cluster: int
    size: int
    mean_probability: float
    sections: dict[str, pd.DataFrame] = field(default_factory=dict)  # title → rows of ``points`` (+ distance columns)


SECTIONS = ("Most typical", "Least certain", "Outliers")
UNCLAIMED = "Not claimed by any cluster"


def _members(points: pd.DataFrame, fused: np.ndarray, cluster: int, per: int) -> ClusterMembers:
    mask = (points["cluster"] == cluster).to_numpy()
    group = points[mask].copy()
    result = ClusterMembers(cluster, len(group), float(group["probability"].mean()))
    if cluster < 0:
        result.sections[UNCLAIMED] = group.sort_values("probability", ascending=False, kind="stable").head(3 * per)
        return result
    vectors = fused[mask]
    distance = np.linalg.norm(vectors - vectors.mean(axis=0), axis=1)
    group["distance"] = distance
    group["relative_distance"] = distance / max(float(np.median(distance)), 1e-12)
    take = min(per, max(1, math.ceil(len(group) / 3)))
    typical = group.sort_values(["probability", "distance"], ascending=[False, True], kind="stable").head(take)
    rest = group.drop(typical.index)
    uncertain = rest.sort_values(["probability", "distance"], ascending=[True, False], kind="stable").head(take)
    rest = rest.drop(uncertain.index)
    outliers = rest.sort_values("distance", ascending=False, kind="stable").head(take)
    result.sections = dict(zip(SECTIONS, (typical, uncertain, outliers)))
    return result


def cluster_members(points: pd.DataFrame, fused: np.ndarray, per: int = 12) -> list[ClusterMembers]:
    """One :class:`ClusterMembers` per cluster, largest first, the unclaimed (``-1``) last."""
    sizes = points["cluster"].value_counts()
    order = sorted(sizes.index, key=lambda c: (c < 0, -sizes[c], c))
    return [_members(points, fused, int(c), per) for c in order]
