"""Metrics against values computed by hand."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from stylecluster.evaluate import clustering_accuracy, composition, evaluate_clusters, evaluate_labels, nmi, purity

# 8 images, 2 labels, 3 clusters:
#   cluster 0: a a a b     cluster 1: b b     cluster 2: a b
TRUE = ["a", "a", "a", "b", "b", "b", "a", "b"]
PRED = [0, 0, 0, 0, 1, 1, 2, 2]


def test_purity_by_hand():
    # majorities: 3 (a in c0) + 2 (b in c1) + 1 (either in c2) = 6 of 8
    assert purity(TRUE, PRED) == pytest.approx(6 / 8)


def test_hungarian_accuracy_by_hand():
    # best one-to-one: c0→a (3), c1→b (2); c2 gets no label → 5 of 8
    assert clustering_accuracy(TRUE, PRED) == pytest.approx(5 / 8)


def test_nmi_by_hand():
    n = 8
    p_true = {"a": 4 / n, "b": 4 / n}
    p_pred = {0: 4 / n, 1: 2 / n, 2: 2 / n}
    joint = {("a", 0): 3 / n, ("b", 0): 1 / n, ("b", 1): 2 / n, ("a", 2): 1 / n, ("b", 2): 1 / n}
    mi = sum(p * math.log(p / (p_true[t] * p_pred[c])) for (t, c), p in joint.items())
    h_true = -sum(p * math.log(p) for p in p_true.values())
    h_pred = -sum(p * math.log(p) for p in p_pred.values())
    assert nmi(TRUE, PRED) == pytest.approx(mi / ((h_true + h_pred) / 2))


def test_perfect_and_relabelled_clusterings_score_one():
    result = evaluate_labels(TRUE, [1 if t == "a" else 7 for t in TRUE])
    assert result["nmi"] == pytest.approx(1) and result["ari"] == pytest.approx(1)
    assert result["purity"] == 1 and result["accuracy"] == 1 and result["n_clusters"] == 2


def test_outliers_count_as_a_group_and_are_reported():
    result = evaluate_labels(["a", "a", "b", "b"], [0, -1, 1, -1])
    assert result["outlier_share"] == 0.5
    assert result["n_clusters"] == 2
    assert result["purity"] == pytest.approx(3 / 4)  # the outlier group {a, b} has majority 1


def test_composition():
    comp = {c["cluster"]: c for c in composition(TRUE, PRED)}
    assert comp[0] == {"cluster": 0, "size": 4, "majority": "a", "majority_share": 0.75, "labels": {"a": 3, "b": 1}}
    assert comp[1]["majority"] == "b" and comp[1]["majority_share"] == 1.0


def test_evaluate_clusters_joins_on_path_and_reports_unmatched():
    clusters = pd.DataFrame({"path": ["x/1.jpg", "x/2.jpg", "x/3.jpg"], "cluster": [0, 0, 1], "probability": [1, 1, 1]})
    labels = pd.DataFrame({"path": ["x/1.jpg", "x/2.jpg"], "style": ["s", "s"]})
    result = evaluate_clusters(clusters, labels, "style")
    assert result["n_images"] == 2 and result["unmatched_clusters_rows"] == 1
    assert set(result) >= {"nmi", "ari", "purity", "accuracy", "n_clusters", "per_cluster"}
