"""Fit the artist-discriminant style head on a store of raw global vectors.

    stylecluster embed IMAGES --out raw.store --config configs/raw_global.yaml   # no style head
    stylecluster train-style-head raw.store --labels labels.csv --out head.pt --holdout 0.3 --score-column style

Artists are the only supervision. With ``holdout`` a share of the *artists* is kept out of
fitting (``split_by_artist``) and the head is scored on them: k-means on the projected held-out
images against ``score_column`` (e.g. style), beside the same k-means on the raw vectors — the
measure of whether the head generalises to painters it has never seen.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cluster.fuse import Fuser, part_blocks
from ..data.splits import artist_groups, split_by_artist
from ..evaluate import evaluate_labels, read_labels
from ..features.branch import METRIC_PARTS
from ..features.style_head import ArtistDiscriminantHead

log = logging.getLogger(__name__)


@dataclass
class StyleHeadReport:
    images: int
    artists: int
    holdout_images: int = 0
    holdout_artists: int = 0
    raw: dict[str, float] | None = None  # k-means on the raw vectors of the held-out artists
    head: dict[str, float] | None = None  # k-means on their projection

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled_rows(store, labels_csv: str | Path, group_column: str, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The store's images that have a group label: columns ``row`` (store index), ``group`` and ``extra``."""
    table = read_labels(labels_csv, group_column, keep=extra)
    rows = pd.DataFrame({"path": store.paths, "row": np.arange(len(store))}).merge(table, on="path", how="inner")
    if rows.empty:
        raise ValueError(f"{labels_csv}: none of its paths is in {store.path} (paths must be relative to the embedded folder)")
    rows["group"] = artist_groups(rows, group_column).to_numpy()
    return rows.reset_index(drop=True)


def _kmeans_scores(vectors: np.ndarray, truth: np.ndarray, seed: int) -> dict[str, float]:
    from ..cluster.base import make_clusterer

    labels = make_clusterer("kmeans", k=len(np.unique(truth)), seed=seed).fit(vectors).labels_
    result = evaluate_labels(truth, labels)
    return {key: round(float(result[key]), 4) for key in ("nmi", "purity", "ari", "accuracy")}


def train_style_head(
    store,
    labels_csv: str | Path,
    out: str | Path,
    group_column: str = "artist",
    holdout: float = 0.0,
    score_column: str | None = None,
    seed: int = 0,
    head: ArtistDiscriminantHead | None = None,
) -> StyleHeadReport:
    """Fit ``head`` on the store's global vectors grouped by ``group_column`` and save it to ``out``."""
    head = head or ArtistDiscriminantHead()
    parts = store.parts("global")
    if set(parts) & METRIC_PARTS:
        raise ValueError(f"{store.path}: its global vectors are already a learned style projection; embed with global.style_head: null first")
    rows = labelled_rows(store, labels_csv, group_column, (score_column,) if score_column else ())
    fit_rows, held = (split_by_artist(rows, holdout, seed, column="group") if holdout > 0 else (rows, rows.iloc[:0]))
    vectors = store.vectors("global")
    log.info("fitting the style head on %d images of %d artists", len(fit_rows), fit_rows["group"].nunique())
    head.fit(vectors[fit_rows["row"].to_numpy()], fit_rows["group"].to_numpy(), parts)
    branch = store.metadata.get("branches", {}).get("global", {})
    source = {
        "branch": {k: branch.get(k) for k in ("backbone", "weights", "gram_levels", "gram_channels", "input")},
        "labels": Path(labels_csv).name,
        "group_column": group_column,
        "images": len(fit_rows),
        "artists": int(fit_rows["group"].nunique()),
        "holdout": holdout,
        "seed": seed,
    }
    report = StyleHeadReport(images=len(fit_rows), artists=int(fit_rows["group"].nunique()))
    if len(held) and score_column:
        held = held.dropna(subset=[score_column])
        raw = vectors[held["row"].to_numpy()]
        truth = held[score_column].astype(str).to_numpy()
        report.holdout_images, report.holdout_artists = len(held), int(held["group"].nunique())
        report.raw = _kmeans_scores(Fuser(part_blocks("global", parts, 1.0)).fit_transform(raw), truth, seed)
        projected = head.transform(raw)
        report.head = _kmeans_scores(projected / np.linalg.norm(projected, axis=1, keepdims=True), truth, seed)
        source["holdout_scores"] = {"column": score_column, "raw": report.raw, "head": report.head}
    head.save(out, source)
    return report
