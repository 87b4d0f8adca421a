"""Scoring predictions against labels: accuracy, macro and per-class precision / recall / F1,
the confusion matrix (CSV and an interactive plotly heat map) and the top confusions in words."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ..io import save_atomic
from ..errors import InputError


def score_predictions(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro and per-class precision / recall / F1 and support, confusion matrix
    (rows: true class, columns: predicted; over ``classes`` in that order)."""
    y_true, y_pred, classes = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object), list(classes)
    if len(y_true) == 0:
        raise InputError("no labelled image to score")
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    present = support > 0  # macro averages over the classes that occur in the labels
    return {
        "n_images": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "per_class": [
            {"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        ],
        "confusion": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "classes": classes,
    }


def top_confusions(scores: dict[str, Any], n: int = 5) -> list[str]:
    """The largest off-diagonal shares of a true class, as "True → Predicted 14% (9 of 64)"."""
    matrix = np.asarray(scores["confusion"], dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    np.fill_diagonal(share, 0.0)
    order = np.argsort(-share, axis=None)[:n]
    classes = scores["classes"]
    lines = []
    for flat in order:
        i, j = np.unravel_index(flat, share.shape)
        if share[i, j] > 0:
            lines.append(f"{classes[i]} → {classes[j]} {share[i, j]:.0%} ({int(matrix[i, j])} of {int(totals[i, 0])})")
    return lines


def worst_class(scores: dict[str, Any]) -> dict[str, Any]:
    return min((row for row in scores["per_class"] if row["support"] > 0), key=lambda row: row["f1"])


def format_scores(scores: dict[str, Any]) -> str:
    lines = [f"images scored  {scores['n_images']}", f"accuracy       {scores['accuracy']:.3f}",
             f"macro F1       {scores['macro_f1']:.3f} (precision {scores['macro_precision']:.3f}, recall {scores['macro_recall']:.3f})", "",
             f"{'class':<28} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>6}"]
    for row in scores["per_class"]:
        lines.append(f"{row['class']:<28} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {row['support']:>6d}")
    confusions = top_confusions(scores)
    if confusions:
        lines += ["", "top confusions (share of the true class):"] + [f"  {line}" for line in confusions]
    return "\n".join(lines)


def confusion_figure(scores: dict[str, Any]):
    """Row-normalised confusion matrix as a plotly heat map (counts in the hover text)."""
    import plotly.graph_objects as go

    matrix = np.asarray(scores["confusion"], dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    classes = scores["classes"]
    figure = go.Figure(go.Heatmap(
        z=share, x=classes, y=classes, colorscale="Blues", zmin=0, zmax=1, customdata=matrix,
        hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.0%} (%{customdata:.0f} images)<extra></extra>",
    ))
    figure.update_layout(title=f"Confusion matrix (accuracy {scores['accuracy']:.1%}, macro F1 {scores['macro_f1']:.3f})",
                         xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed")
    return figure


def write_report(scores: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """confusion.csv, confusion.html (self-contained) and per_class.csv in ``out_dir``."""
    out_dir = Path(out_dir)
    classes = scores["classes"]
    confusion = pd.DataFrame(scores["confusion"], index=pd.Index(classes, name="true"), columns=classes)
    return [
        save_atomic(out_dir / "confusion.csv", lambda tmp: confusion.to_csv(tmp)),
        save_atomic(out_dir / "confusion.html", lambda tmp: confusion_figure(scores).write_html(tmp, include_plotlyjs=True, full_html=True)),
        save_atomic(out_dir / "per_class.csv", lambda tmp: pd.DataFrame(scores["per_class"]).to_csv(tmp, index=False)),
    ]


def read_labelled(labels_csv: str | Path, column: str, split: str | None = None) -> pd.DataFrame:
    """The rows of a labels CSV to classify and score: those with a ``path`` and a ``column``
    label; of a split CSV (train-classifier's ``clf.split.csv``) only ``split``'s rows when given."""
    from ..data.labels import read_labels

    labels = read_labels(labels_csv, column, keep=("split",) if split else ())
    return labels[labels["split"] == split] if split else labels


def score_labelled(frame: pd.DataFrame, labels: pd.DataFrame, column: str, classes: Sequence[str]) -> dict[str, Any]:
    """Score predictions (``path``, ``predicted``) against ``labels``; the true label is inserted
    into ``frame`` as ``column``, after ``path``. Classes the labels hold and the classifier does
    not are scored too (as always wrong), so a foreign label lowers the scores instead of vanishing."""
    frame.insert(1, column, frame["path"].map(dict(zip(labels["path"], labels[column].astype(str)))))
    classes = list(classes) + sorted(set(frame[column]) - set(classes))
    return score_predictions(frame[column], frame["predicted"], classes)
