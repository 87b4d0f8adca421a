"""What every explorer view starts from: the store's images joined with their clusters and labels,
and their coordinates in the fused style space."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..cluster.fuse import fit_store_fuser, fuse_store, store_layout
from ..config import FuseConfig
from ..evaluate import read_labels
from ..io import printable, save_atomic
from ..errors import InputError
from .works import no_facts, work_facts

log = logging.getLogger("stylecluster")

NO_LABEL = "(no label)"


class FusionOnly:
    """The fusion step alone, fitted on a store: the style space when no clustering was saved."""

    def __init__(self, fuse: FuseConfig | None = None, seed: int = 0):
        self.fuse = fuse or FuseConfig()
        self.seed = seed

    def fit(self, store) -> "FusionOnly":
        columns, blocks = store_layout(store, local_weight=self.fuse.local_weight)
        self.fuser_ = fit_store_fuser(store, columns, blocks, self.fuse.max_fit_samples, self.seed,
                                      pca_components=self.fuse.pca_components, whiten=self.fuse.whiten)
        return self

    def check_store(self, store) -> None:
        """Nothing to check: the fusion was fitted on this store."""

    def embed(self, store, out: np.ndarray | None = None) -> np.ndarray:
        return fuse_store(self.fuser_, store, store_layout(store, local_weight=self.fuse.local_weight)[0], out=out)


#: From this many images the explorer's fused matrix is a float32 ``.npy`` in the store's
#: visualisation cache, written once a batch at a time and memory-mapped: ten million images of
#: 64 fused numbers are 2.56 GB, which the views (a page of neighbours, a sample for the map)
#: read a few rows of at a time.
MAPPED_FROM_ROWS = 1_000_000


def fused_matrix(fusion, store, mapped_from_rows: int | None = None) -> np.ndarray:
    """Every image's fused coordinates (``fusion.embed``): in memory, or from
    :data:`MAPPED_FROM_ROWS` images memory-mapped from the visualisation cache, reused while the
    fusion and the store's chunks are the same (a damaged file is written again)."""
    from .cache import cache_dir
    from .similar import fusion_sha256

    n = len(store)
    if n < (MAPPED_FROM_ROWS if mapped_from_rows is None else mapped_from_rows):
        return fusion.embed(store)
    digest = hashlib.sha256(fusion_sha256(fusion).encode())
    for chunk in store.chunks:
        digest.update(f"{chunk.file.name}:{chunk.file.stat().st_size}:{chunk.file.stat().st_mtime_ns}:{chunk.rows}\n".encode())
    file = cache_dir(store) / f"fused-{digest.hexdigest()[:16]}.npy"
    try:
        fused = np.load(file, mmap_mode="r")
        if fused.shape[0] == n and fused.dtype == np.float32:
            fusion.check_store(store)  # what embed checks before it fuses
            return fused
    except (OSError, ValueError):
        pass
    width = fusion.fuser_.n_features_out_

    def write(tmp: Path) -> None:
        mapped = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, width))
        fusion.embed(store, out=mapped)
        mapped.flush()
        del mapped

    save_atomic(file, write)
    return np.load(file, mmap_mode="r")


def load_fusion(store, clusters_csv: str | Path | None = None, fuse: FuseConfig | None = None):
    """The clustering saved beside CLUSTERS.csv (its fusion defines the space), else a fresh fusion.

    Either has ``embed(store) -> fused coordinates``.
    """
    from ..cluster.persist import OLD_MODEL_SUFFIX, model_path_for
    from ..cluster.pipeline import StyleClustering

    if clusters_csv is not None:
        model = model_path_for(clusters_csv)
        if model.is_file():
            return StyleClustering.load(model, per_image=False)
        old = Path(clusters_csv).with_name(Path(clusters_csv).stem + OLD_MODEL_SUFFIX)
        if old.is_file():
            log.warning("%s: a model pickled by an earlier stylecluster is never loaded (pickles can run code); using the default "
                        "fusion instead — re-run `stylecluster cluster` to save the model as %s", printable(old), printable(model.name))
        else:
            log.info("%s not found: fusing the store with the default fusion settings", printable(model))
    return FusionOnly(fuse).fit(store)


def read_clusters(path: str | Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    missing = [c for c in ("path", "cluster", "probability") if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: no {', '.join(map(repr, missing))} column; is it a stylecluster CLUSTERS.csv?")
    frame = frame[["path", "cluster", "probability"]].drop_duplicates("path", keep="last")
    return frame.astype({"path": str, "cluster": np.int64, "probability": np.float64})


def default_label_column(labels_csv: str | Path) -> str:
    """The first column of a labels table that is not ``path``."""
    columns = [c for c in pd.read_csv(labels_csv, nrows=0).columns if c != "path"]
    if not columns:
        raise InputError(f"{labels_csv}: no label column besides 'path'")
    return columns[0]


@dataclass
class Explorer:
    """Images of a store that have a cluster, in store order.

    ``points`` columns: ``row`` (index into the store), ``path``, ``sha256``, ``cluster``,
    ``probability``, ``year`` (NaN if unknown), ``title``, ``artist``, ``date`` and ``link`` ("" if
    unknown; see :mod:`~stylecluster.viz.works`) and, with labels, ``label`` (``NO_LABEL`` where the table has none).
    Without a clustering (``has_clusters`` false) every cluster is -1 and probability NaN.
    ``fused`` holds their fused coordinates, row for row.
    """

    store: object
    points: pd.DataFrame
    fused: np.ndarray
    label_column: str | None
    fusion: object
    has_clusters: bool = True
    year_column: str | None = None  # the labels column the years came from

    @property
    def has_years(self) -> bool:
        return bool(self.points["year"].notna().any())

    @property
    def images_root(self) -> Path | None:
        root = self.store.metadata.get("images_root")
        return Path(root) if root else None

    @property
    def has_labels(self) -> bool:
        return self.label_column is not None


def _join_clusters(rows: pd.DataFrame, clusters_csv: str | Path | None, store) -> pd.DataFrame:
    if clusters_csv is None:
        return rows.assign(cluster=np.int64(-1), probability=np.nan)
    clusters = read_clusters(clusters_csv)
    points = rows.merge(clusters, on="path", how="inner").sort_values("row", ignore_index=True)
    if points.empty:
        raise InputError(f"{clusters_csv}: none of its paths is in the store {store.path}")
    if len(points) < len(rows):
        log.warning("%d images of the store have no cluster in %s and are left out", len(rows) - len(points), clusters_csv)
    if len(points) < len(clusters):
        log.warning("%d rows of %s are not in the store and are left out", len(clusters) - len(points), clusters_csv)
    return points


def load_explorer(
    store,
    clusters_csv: str | Path | None,
    labels_csv: str | Path | None = None,
    label_column: str | None = None,
    fuse: FuseConfig | None = None,
) -> Explorer:
    """Join a store with CLUSTERS.csv (None: every image, no cluster) and optional labels."""
    if len(store) == 0:
        raise InputError(f"{store.path}: the store is empty")
    rows = pd.DataFrame({"row": np.arange(len(store)), "path": store.paths, "sha256": store.sha256})
    points = _join_clusters(rows, clusters_csv, store)
    if labels_csv is not None:
        label_column = label_column or default_label_column(labels_csv)
        labels = read_labels(labels_csv, label_column).rename(columns={label_column: "label"})
        points = points.merge(labels, on="path", how="left")
        points["label"] = points["label"].astype(object).where(points["label"].notna(), NO_LABEL).astype(str)
        facts, year_column = work_facts(labels_csv, points["path"])
    else:
        label_column = year_column = None
        facts = no_facts(points.index)
    points = points.join(facts)
    fusion = load_fusion(store, clusters_csv, fuse)
    fused, rows = fused_matrix(fusion, store), points["row"].to_numpy()
    if not (len(rows) == len(fused) and np.array_equal(rows, np.arange(len(rows)))):
        fused = np.asarray(fused[rows])
    return Explorer(store, points, fused, label_column, fusion, has_clusters=clusters_csv is not None, year_column=year_column)
