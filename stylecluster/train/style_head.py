"""Fit an artist-discriminant style head on stores of raw branch vectors.

    stylecluster embed IMAGES --out raw.store --config configs/raw_global.yaml   # no style head
    stylecluster train-style-head raw.store --labels labels.csv --out head.pt --holdout 0.3 --score-column style

Several collections fit one head: give one store and one labels file per collection, in the same
order (``train-style-head a.store b.store --labels a.csv b.csv``); each labels file's paths are
relative to its own store's images folder, and artists are matched across collections by
:func:`~stylecluster.data.splits.artist_key`. Artists are the only supervision. With ``holdout``
a share of the *artists* is kept out of fitting (``split_by_artist``) and the head is scored on
them: k-means on the projected held-out images against ``score_column`` (e.g. style), beside the
same k-means on the raw vectors — the measure of whether the head generalises to painters it has
never seen. ``column="local"`` fits the local (brush-stroke) branch's head the same way.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..cluster.fuse import Fuser, part_blocks
from ..data.labels import read_labels
from ..data.splits import artist_groups, split_by_artist
from ..evaluate import evaluate_labels
from ..features.branch import METRIC_PARTS
from ..features.style_head import ArtistDiscriminantHead
from ..errors import InputError

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
        raise InputError(f"{labels_csv}: none of its paths is in {store.path} (paths must be relative to the embedded folder)")
    rows["group"] = artist_groups(rows, group_column).to_numpy()
    return rows.reset_index(drop=True)


def raw_provenance(store, column: str) -> dict[str, Any]:
    """What determines a store's raw ``column`` vectors: the branch provenance without a head."""
    branch = dict(store.metadata.get("branches", {}).get(column) or {})
    if not branch:
        raise InputError(f"{store.path}: the store has no {column} branch")
    if set(store.parts(column)) & METRIC_PARTS or "style_head" in branch:
        setting = "global.style_head" if column == "global" else "local.style_head"
        raise InputError(f"{store.path}: its {column} vectors are already a learned style projection; embed with {setting}: null first")
    return branch


def pooled_rows(stores: Sequence, labels_csvs: Sequence[str | Path], group_column: str, column: str, extra: tuple[str, ...] = ()) -> tuple[pd.DataFrame, np.ndarray]:
    """Labelled rows of several stores (``store``: which one) and their ``column`` vectors, in one
    table; every store must hold the same branch (same model, weights and settings)."""
    if len(stores) != len(labels_csvs):
        raise InputError(f"give one labels file per store: {len(stores)} stores, {len(labels_csvs)} labels files")
    reference = raw_provenance(stores[0], column)
    frames, matrices = [], []
    for index, (store, labels_csv) in enumerate(zip(stores, labels_csvs)):
        if raw_provenance(store, column) != reference or store.parts(column) != stores[0].parts(column):
            raise InputError(f"{store.path}: its {column} branch differs from {stores[0].path}'s; a head is fitted on one kind of vector")
        rows = labelled_rows(store, labels_csv, group_column, extra).assign(store=index)
        frames.append(rows)
        matrices.append(store.vectors(column)[rows["row"].to_numpy()])
    return pd.concat(frames, ignore_index=True), np.vstack(matrices)


def _kmeans_scores(vectors: np.ndarray, truth: np.ndarray, seed: int) -> dict[str, float]:
    from ..cluster.base import make_clusterer

    labels = make_clusterer("kmeans", k=len(np.unique(truth)), seed=seed).fit(vectors).labels_
    result = evaluate_labels(truth, labels)
    return {key: round(float(result[key]), 4) for key in ("nmi", "purity", "ari", "accuracy")}


def train_style_head(
    stores,
    labels_csvs,
    out: str | Path,
    group_column: str = "artist",
    holdout: float = 0.0,
    score_column: str | None = None,
    seed: int = 0,
    head: ArtistDiscriminantHead | None = None,
    column: str = "global",
) -> StyleHeadReport:
    """Fit ``head`` on the stores' ``column`` vectors grouped by ``group_column`` and save it to ``out``.

    ``stores`` and ``labels_csvs``: one store, one labels file (or lists of them, paired in order).
    """
    head = head or ArtistDiscriminantHead()
    stores = list(stores) if isinstance(stores, (list, tuple)) else [stores]
    labels_csvs = list(labels_csvs) if isinstance(labels_csvs, (list, tuple)) else [labels_csvs]
    parts = stores[0].parts(column)
    rows, vectors = pooled_rows(stores, labels_csvs, group_column, column, (score_column,) if score_column else ())
    rows["row"] = np.arange(len(rows))
    fit_rows, held = (split_by_artist(rows, holdout, seed, column="group") if holdout > 0 else (rows, rows.iloc[:0]))
    log.info("fitting the style head on %d images of %d artists", len(fit_rows), fit_rows["group"].nunique())
    head.fit(vectors[fit_rows["row"].to_numpy()], fit_rows["group"].to_numpy(), parts)
    source = {
        "branch": raw_provenance(stores[0], column),
        "column": column,
        "labels": [f"{Path(p).parent.name}/{Path(p).name}" for p in labels_csvs],
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
        report.raw = _kmeans_scores(Fuser(part_blocks(column, parts, 1.0)).fit_transform(raw), truth, seed)
        projected = head.transform(raw)
        report.head = _kmeans_scores(projected / np.linalg.norm(projected, axis=1, keepdims=True), truth, seed)
        source["holdout_scores"] = {"column": score_column, "raw": report.raw, "head": report.head}
    head.save(out, source)
    return report
