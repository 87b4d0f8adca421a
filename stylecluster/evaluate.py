"""Clustering quality against reference labels: purity, NMI, ARI, Hungarian accuracy, composition.

Outliers (cluster ``-1``) are kept and count as one more group: a method cannot improve its
scores by declaring hard images outliers. ``outlier_share`` reports how many there were.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from .data.labels import read_labels  # noqa: F401  stylecluster.viz imports it from here
from .errors import InputError


def purity(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Share of images whose cluster's majority label is their own label."""
    table = contingency_matrix(labels_true, labels_pred)
    return float(table.max(axis=0).sum() / table.sum())


def clustering_accuracy(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Accuracy under the best one-to-one matching of clusters to labels (Hungarian algorithm).

    Clusters left without a label (more clusters than labels) count as wrong.
    """
    table = contingency_matrix(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum())


def nmi(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Normalised mutual information, arithmetic normalisation (scikit-learn's default)."""
    return float(normalized_mutual_info_score(labels_true, labels_pred))


def ari(labels_true: Sequence, labels_pred: Sequence) -> float:
    return float(adjusted_rand_score(labels_true, labels_pred))


def composition(labels_true: Sequence, labels_pred: Sequence, top: int = 5) -> list[dict[str, Any]]:
    """Per cluster: size, majority label and its share, and the most common labels."""
    frame = pd.DataFrame({"label": np.asarray(labels_true, dtype=object), "cluster": np.asarray(labels_pred)})
    out = []
    for cluster, group in frame.groupby("cluster", sort=True):
        counts = group["label"].value_counts()
        out.append(
            {
                "cluster": int(cluster),
                "size": int(len(group)),
                "majority": str(counts.index[0]),
                "majority_share": float(counts.iloc[0] / len(group)),
                "labels": {str(k): int(v) for k, v in counts.head(top).items()},
            }
        )
    return out


def evaluate_labels(labels_true: Sequence, labels_pred: Sequence) -> dict[str, Any]:
    labels_true = np.asarray(labels_true, dtype=object).astype(str)
    labels_pred = np.asarray(labels_pred)
    if len(labels_true) != len(labels_pred):
        raise ValueError(f"{len(labels_true)} labels but {len(labels_pred)} cluster assignments")
    if len(labels_true) == 0:
        raise InputError("no image has both a cluster and a label")
    clusters = set(labels_pred.tolist()) - {-1}
    return {
        "n_images": int(len(labels_true)),
        "n_labels": int(len(set(labels_true.tolist()))),
        "n_clusters": len(clusters),
        "outlier_share": float(np.mean(labels_pred == -1)),
        "nmi": nmi(labels_true, labels_pred),
        "ari": ari(labels_true, labels_pred),
        "purity": purity(labels_true, labels_pred),
        "accuracy": clustering_accuracy(labels_true, labels_pred),
        "per_cluster": composition(labels_true, labels_pred),
    }


def evaluate_clusters(clusters: pd.DataFrame, labels: pd.DataFrame, column: str) -> dict[str, Any]:
    """Join cluster assignments with labels on ``path`` and score them.

    Only images present in both tables are scored; how many were matched is reported.
    """
    merged = clusters.merge(labels, on="path", how="inner")
    result = evaluate_labels(merged[column].to_numpy(), merged["cluster"].to_numpy())
    result["label_column"] = column
    result["unmatched_clusters_rows"] = int(len(clusters) - len(merged))
    return result


def format_table(result: dict[str, Any]) -> str:
    rows = [
        ("images scored", f"{result['n_images']}"),
        ("labels", f"{result['n_labels']}"),
        ("clusters (k)", f"{result['n_clusters']}"),
        ("outliers", f"{result['outlier_share']:.1%}"),
        ("purity", f"{result['purity']:.3f}"),
        ("NMI", f"{result['nmi']:.3f}"),
        ("ARI", f"{result['ari']:.3f}"),
        ("accuracy (Hungarian)", f"{result['accuracy']:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
