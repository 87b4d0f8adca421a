"""Fusion + a clustering method in one fitted object: what ``stylecluster cluster`` saves.

``StyleClustering`` is what the CLI, notebooks and ``assign`` use; it never branches on the
method's name — the method comes from the registry. It is saved as data only
(:mod:`stylecluster.cluster.persist`), with the provenance of the store it was fitted on, so that
images of another store are placed only when they were embedded the same way.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import ClusterConfig, FuseConfig
from ..errors import ConfigError, InputError, NotFittedError
from ..io import CsvText, csv_text, printable, save_atomic, save_csv_batches
from .base import OneCluster, distinct_points, make_clusterer, method_class
from .fuse import fit_store_fuser, fuse_store, store_batches, store_layout, store_rows, store_shape
from .reduce import subsample
from .persist import RERUN, ModelFileError
from .selection import StabilityResult, pairwise_ari, resolve_k, stability_labelings

log = logging.getLogger("stylecluster")


class StyleClustering:
    """Fit a clustering of a store's images.

    After :meth:`fit`: ``fuser_`` (the fitted :class:`Fuser`), ``method_`` (the fitted
    clustering estimator), ``paths_``, ``labels_``, ``probabilities_``, ``n_clusters_``,
    ``k_selection_`` (the :class:`~.selection.KSelection` when ``cluster.k == "auto"``, else None)
    ``provenance_`` (how the store's vectors were made: see :func:`store_provenance`) and
    ``n_features_in_`` (width of the stored vectors, branches concatenated). Using it before
    ``fit`` (or :meth:`load`) is a :class:`~stylecluster.errors.NotFittedError`.
    """

    def __init__(self, cluster: ClusterConfig | None = None, fuse: FuseConfig | None = None):
        self.cluster = cluster or ClusterConfig()
        self.fuse = fuse or FuseConfig()

    def fit(self, store, engine=None) -> "StyleClustering":
        """Fuse and cluster ``store``'s images.

        Fewer than 2 images is an InputError; identical images (all vectors equal) make one
        cluster whatever the method, which is what every method would mean by them. The
        parameters are checked first, before the (slow) fusion.

        Memory: a method that fits a subsample (``fits_subsample``) is given only the fused rows
        of its seeded subsample — the rows it would have drawn from the whole matrix — and every
        other image is then read, fused and assigned a batch at a time, so the store is never
        held whole (:meth:`assign_batches`); the labels are the ones the method gives the same
        rows in one matrix (tests/test_cluster_scale.py). Other methods (k-means) fit every fused
        row. The subsample is a seeded choice of row numbers rather than a reservoir drawn while
        reading: opening a store counts its rows, so the choice is the one ``subsample`` makes of a
        matrix of the same rows, and ``take_vectors`` then reads only the chunks that hold them.
        """
        self._validate_params()
        n = _rows(store)
        if n < 2:
            raise InputError(f"clustering needs at least 2 images; the store has {n}")
        columns, blocks = store_layout(store, local_weight=self.fuse.local_weight)
        self.n_features_in_ = store_shape(store, columns)[1]
        self.fuser_ = fit_store_fuser(store, columns, blocks, self.fuse.max_fit_samples, self.cluster.seed,
                                      pca_components=self.fuse.pca_components, whiten=self.fuse.whiten)
        rows = fit_rows(make_clusterer(self.cluster.method, seed=self.cluster.seed, **self.cluster.params), n)
        self.fit_rows_ = None if len(rows) == n else rows
        Z = fuse_store(self.fuser_, store, columns) if self.fit_rows_ is None else self.fuser_.transform(store_rows(store, columns, rows))
        if distinct_points(Z, at_least=2) < 2:
            log.warning("all %d images have the same vectors (identical images): one cluster", len(Z))
            self.k_selection_, self.method_ = None, OneCluster().fit(Z)
        else:
            k, self.k_selection_ = resolve_k(self.cluster.method, self.cluster.k, Z, seed=self.cluster.seed, **self.cluster.params)
            self.method_ = make_clusterer(self.cluster.method, k=k, seed=self.cluster.seed, **self.cluster.params)
            self.method_.fit(Z)
        del Z
        self._paths = _path_array(store)
        self.n_clusters_ = int(self.method_.n_clusters_)
        self.provenance_ = store_provenance(store)
        self.runtime_ = (getattr(store, "metadata", None) or {}).get("runtime")
        if self.fit_rows_ is None:
            self.labels_ = np.asarray(self.method_.labels_)
            self.probabilities_ = np.asarray(self.method_.probabilities_, dtype=np.float64)
        else:
            self.labels_, self.probabilities_ = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float64)
            batches = self.assign_batches(store, check=False) if engine is None else engine.assign_batches(self, store)
            for start, labels, probabilities in batches:
                self.labels_[start : start + len(labels)], self.probabilities_[start : start + len(labels)] = labels, probabilities
            self.labels_[rows], self.probabilities_[rows] = self.method_.labels_, self.method_.probabilities_
        return self

    def _validate_params(self) -> None:
        method_class(self.cluster.method)  # a ConfigError naming the choices
        k = self.cluster.k
        if k is not None and k != "auto" and (isinstance(k, bool) or not isinstance(k, int)):
            raise ConfigError(f"cluster.k must be a whole number, 'auto' or null, got {k!r}")
        if not 0 <= self.fuse.local_weight:
            raise ConfigError(f"fuse.local_weight must be 0 or more, got {self.fuse.local_weight}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "method_"):
            raise NotFittedError(self)

    def _check_per_image(self) -> None:
        self._check_fitted()
        if not hasattr(self, "labels_"):
            raise InputError(f"{printable(getattr(self, '_loaded_from', 'this clustering'))}: loaded without the fitted images' results "
                             "(StyleClustering.load(..., per_image=False)); load it with per_image=True")

    def _fit_fuser(self, store) -> np.ndarray:
        """Fit the fuser on (a seeded subsample of at most ``fuse.max_fit_samples`` of) the store's
        images and return the fused coordinates of all of them, fused a batch at a time."""
        columns, blocks = store_layout(store, local_weight=self.fuse.local_weight)
        self.n_features_in_ = store_shape(store, columns)[1]
        self.fuser_ = fit_store_fuser(store, columns, blocks, self.fuse.max_fit_samples, self.cluster.seed,
                                      pca_components=self.fuse.pca_components, whiten=self.fuse.whiten)
        return fuse_store(self.fuser_, store, columns)

    def embed(self, store, out: np.ndarray | None = None) -> np.ndarray:
        """The fused coordinates of a store's images in this clustering's space (float32; the
        store is read a batch at a time).

        Refuses (ValueError) a store whose vectors were made otherwise than the fitted store's.
        """
        self._check_fitted()
        self.check_store(store)
        columns, _ = store_layout(store, local_weight=self.fuse.local_weight)
        return fuse_store(self.fuser_, store, columns, out=out)

    def _check_assignable(self, store) -> None:
        """:meth:`check_store`, then the store's first image through the model as a probe: a
        model whose arrays do not fit together fails here with one line."""
        self.check_store(store)
        if _rows(store):
            columns, _ = store_layout(store, local_weight=self.fuse.local_weight)
            first = store_rows(store, columns, np.array([0]))
            self._probe(lambda: self.method_.assign(self.fuser_.transform(first)), printable(getattr(self, "_loaded_from", "the clustering's model")))

    def _check_width(self, store) -> None:
        columns, _ = store_layout(store, local_weight=self.fuse.local_weight)
        width = store_shape(store, columns)[1]
        expected = getattr(self, "n_features_in_", None)  # absent from model files saved before it existed
        if expected is not None and width != expected:
            raise InputError(f"{printable(getattr(store, 'path', 'the store'))}: its vectors have {width} features, "
                             f"this clustering was fitted on {expected}")

    def check_store(self, store) -> None:
        """ValueError naming what differs when ``store`` was embedded with other branches,
        weights, patch settings or vector layout than the store this clustering was fitted on, or
        whose vectors have another width."""
        from ..store import _describe_difference, check_compatible

        recorded, new = getattr(self, "provenance_", None), store_provenance(store)
        if recorded is not None and new is not None:
            diffs = _describe_difference(recorded, new, old_name="the clustering's store has", new_name="this store has")
            if diffs:
                raise InputError(
                    f"{printable(store.path)}: embedded differently from the store this clustering was fitted on ({'; '.join(diffs)}); "
                    "embed the images with the same model and configuration, or cluster this store itself"
                )
            check_compatible(getattr(self, "runtime_", None), store.metadata.get("runtime"), printable(store.path))
        self._check_width(store)

    def assign_batches(self, store, check: bool = True) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, labels, probabilities) of the store's images, a batch at a time: each
        batch is read, fused and assigned on its own, so memory does not grow with the store."""
        self._check_fitted()
        if check:
            self._check_assignable(store)
        columns, _ = store_layout(store, local_weight=self.fuse.local_weight)
        start = 0
        for batch in store_batches(store, columns):
            Z = self.fuser_.transform(batch)
            labels, probabilities = self.method_.assign(Z)
            yield start, np.asarray(labels), np.asarray(probabilities, dtype=np.float64)
            start += len(Z)

    def predict_frames(self, store) -> Iterator[pd.DataFrame]:
        """:meth:`predict_store` a batch at a time, in store order."""
        self._check_fitted()
        paths = getattr(store, "path_array", None)
        listed = None if paths is not None else list(store.paths)
        for start, labels, probabilities in self.assign_batches(store):
            batch_paths = paths.slice(start, len(labels)).to_pylist() if paths is not None else listed[start : start + len(labels)]
            yield assignment_frame(batch_paths, labels, probabilities)

    def predict_csv(self, store, engine=None) -> Iterator[CsvText]:
        """What ``assign`` writes: :meth:`predict_frames` as CSV text (``io.save_csv_batches``).

        ``engine`` as for :meth:`fit`; on one whose workers format the text too (``assign_csv``:
        the Ray engine) this process only checks the order and writes, the work that had kept a
        second Ray actor from adding speed (benchmarks/RESULTS.md, "Ten million rows"). Either
        way the text is :func:`assignment_frame`'s through ``io.csv_text``: the same bytes.
        """
        self._check_fitted()
        if engine is None:
            yield from map(csv_text, self.predict_frames(store))
            return
        self._check_assignable(store)
        yield from engine.assign_csv(self, store)

    def predict_store(self, store) -> pd.DataFrame:
        """Assign a store's images (new or not) to this clustering: columns path, cluster, probability."""
        self._check_fitted()
        frames = list(self.predict_frames(store))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"path": [], "cluster": [], "probability": []})

    @property
    def paths_(self) -> list[str]:
        """The fitted store's image paths, in its order (kept as one Arrow array: ten million
        paths as Python strings are ~0.8 GB)."""
        return self._paths.to_pylist()

    def to_frame(self) -> pd.DataFrame:
        """path, cluster, probability, then any per-image columns the method adds (e.g. outlier_score)."""
        self._check_per_image()
        return pd.concat(list(self.frames(batch_rows=max(1, len(self.labels_)))), ignore_index=True)

    def frames(self, batch_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
        """:meth:`to_frame` ``batch_rows`` rows at a time (what :meth:`write` writes)."""
        self._check_per_image()
        details = {}
        for name, values in self.method_.point_details().items():
            values = np.asarray(values, dtype=np.float64)
            if getattr(self, "fit_rows_", None) is not None:  # the method saw its subsample only: the others have none
                every = np.full(len(self.labels_), np.nan)
                every[self.fit_rows_] = values
                values = every
            details[name] = values
        for start in range(0, max(len(self.labels_), 1), batch_rows):
            rows = slice(start, start + batch_rows)
            frame = assignment_frame(self._paths.slice(start, batch_rows).to_pylist(), self.labels_[rows], self.probabilities_[rows])
            for name, values in details.items():
                frame[name] = np.round(values[rows], 6)
            yield frame

    def tables(self) -> dict[str, pd.DataFrame]:
        """The method's extra tables (e.g. ``merge_tree``) by name, to write next to CLUSTERS.csv;
        a ``row`` column (row of the fitted matrix) becomes the image ``path``."""
        self._check_per_image()
        out = {}
        for name, table in self.method_.tables().items():
            if "row" in table.columns:
                rows = table["row"].to_numpy()
                if getattr(self, "fit_rows_", None) is not None:  # rows of the fitted subsample
                    rows = self.fit_rows_[rows]
                table = table.assign(path=self._paths.take(pa.array(rows, pa.int64())).to_pylist()).drop(columns="row")
            out[name] = table
        return out

    def save(self, path: str | Path) -> Path:
        """Write the fitted clustering to ``path`` (``CLUSTERS.model.npz``; arrays + JSON, no code)."""
        from .persist import save_model

        self._check_per_image()
        return save_model(self, path)

    def write(self, out: str | Path) -> list[Path]:
        """Write what ``stylecluster cluster`` writes: CLUSTERS.csv at ``out``, the model beside it
        (:func:`~.persist.model_path_for`) and the method's tables (``out`` with ``.<name>.csv``,
        e.g. the agglomerative merge tree); returns the paths written, CSV first."""
        from .persist import model_path_for

        out = Path(out)
        save_csv_batches(out, self.frames(), "path,cluster,probability")
        written = [out, self.save(model_path_for(out))]
        for name, table in self.tables().items():
            written.append(save_atomic(out.with_suffix(f".{name}.csv"), lambda tmp, table=table: table.to_csv(tmp, index=False)))
        return written

    @staticmethod
    def load(path: str | Path, per_image: bool = True) -> "StyleClustering":
        """Read a clustering saved by :meth:`save`; an old pickled model is refused with one line,
        and so is one whose arrays do not fit together (a row of zeros is fused as a probe).

        ``per_image=False`` leaves out the fitted store's paths, labels and probabilities
        (:data:`PER_IMAGE`), which placing images (``assign``) and fusing them (the map) do not
        use: ~0.5 GB at ten million images. Such a clustering assigns and embeds; :meth:`frames`
        and the like need ``per_image=True``.
        """
        from .persist import load_model

        model = load_model(path, expected=StyleClustering, leave_out=() if per_image else PER_IMAGE)
        model._loaded_from = str(path)
        model._check_fitted()
        width = getattr(model, "n_features_in_", None)
        if width is None:  # model files saved before it existed
            width = max((int(b.stop) for b in getattr(model.fuser_, "blocks", [])), default=0)
        model._probe(lambda: model.fuser_.transform(np.zeros((1, int(width)), np.float32)), printable(path))
        if per_image and not len(model._paths) == len(model.labels_) == len(model.probabilities_):
            raise ModelFileError(f"{printable(path)}: its paths, labels and probabilities differ in length; {RERUN}")
        return model

    def _saved_state(self) -> dict[str, Any]:
        """What a model file holds: the attributes, less where this one was loaded from; the
        paths as one UTF-8 array and their ends (ten million paths as a JSON list took ~1 GB
        of Python objects to write and to read)."""
        state = {k: v for k, v in vars(self).items() if k != "_loaded_from"}
        if "_paths" in state:
            state["_paths"] = _packed_paths(state["_paths"])
        return state

    def _restore_state(self, state: dict[str, Any]) -> None:
        if "paths_" in state:  # model files written before the paths were kept as Arrow: a JSON list
            paths = state.pop("paths_")
            state["_paths"] = _unpacked_paths(paths) if isinstance(paths, dict) else pa.array(paths, pa.string())
        elif "_paths" in state:
            state["_paths"] = _unpacked_paths(state["_paths"])
        self.__dict__.update(state)

    def _probe(self, step, where: str) -> None:
        """Run ``step`` on a one-row probe; a model whose arrays have the wrong shape or type
        (a damaged or hand-edited file) fails here with one line instead of a numpy traceback."""
        try:
            out = step()
        except (ValueError, IndexError, TypeError, AttributeError, KeyError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise ModelFileError(f"{where}: its arrays do not fit together ({printable(exc)}); {RERUN}") from None
        if isinstance(out, tuple):
            out = out[0]
        if out is not None and not np.isfinite(np.asarray(out, dtype=np.float64)).all():
            raise ModelFileError(f"{where}: it maps a probe to non-finite values; {RERUN}")

    def summary(self) -> dict[str, Any]:
        self._check_per_image()
        outliers = float(np.mean(self.labels_ < 0)) if len(self.labels_) else 0.0
        summary = {"method": self.cluster.method, "n_clusters": self.n_clusters_, "n_images": len(self.labels_), "outlier_share": outliers}
        if self.k_selection_ is not None:
            summary["k_selection"] = self.k_selection_.to_dict()
        return summary


#: A fitted clustering's results for the images of the store it was fitted on (the rest is the model).
PER_IMAGE = ("_paths", "paths_", "labels_", "probabilities_", "fit_rows_")

#: Store metadata that decides what a vector means; stores that differ here are not comparable.
PROVENANCE_KEYS = ("branches", "dims", "parts")


def assignment_frame(paths: list[str], labels, probabilities) -> pd.DataFrame:
    """The rows ``cluster`` and ``assign`` write for images: path, cluster, probability (rounded
    to 6 places); one function, so that every engine writes the same bytes."""
    return pd.DataFrame({"path": paths, "cluster": np.asarray(labels), "probability": np.round(np.asarray(probabilities, dtype=np.float64), 6)})


def _path_array(store) -> pa.Array:
    paths = getattr(store, "path_array", None)
    return paths if paths is not None else pa.array(list(store.paths), pa.string())


def _packed_paths(paths: pa.Array) -> dict[str, np.ndarray]:
    """Arrow's own layout of a string array: the UTF-8 bytes and where each path ends (no copy
    of the bytes, no Python object per path)."""
    from ..store import string_buffers

    offsets, data = string_buffers(paths)
    return {"utf8": data[offsets[0] : offsets[-1]], "ends": offsets[1:] - offsets[0]}  # the offsets' own width: no 8-byte copy of ten million


def _unpacked_paths(packed: Any) -> pa.Array:
    try:
        utf8, ends = np.ascontiguousarray(packed["utf8"], dtype=np.uint8), np.asarray(packed["ends"], dtype=np.int64)
        offsets = np.concatenate([[0], ends]).astype(np.int64)
        paths = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(utf8))
        paths.validate(full=True)  # offsets in order and within the bytes, every path UTF-8
    except (KeyError, TypeError, ValueError, pa.ArrowException) as exc:
        raise ValueError(f"its paths are not readable: {printable(exc)}") from None  # load_model names the file
    return paths


def _rows(store) -> int:
    return len(store) if hasattr(store, "__len__") else len(store.paths)


def fit_rows(method, n: int) -> np.ndarray:
    """The rows of ``n`` a method is fitted on: its seeded subsample (the same rows its ``fit``
    draws from a matrix of ``n``) when it ``fits_subsample``, else all of them."""
    if getattr(method, "fits_subsample", False):
        return subsample(n, int(method.max_fit_samples), method.random_state)
    return np.arange(n)


def store_provenance(store) -> dict[str, Any] | None:
    """The fields of a store's metadata that decide its vectors (branches with their weights and
    patch settings, dimensions, parts); None for store-like objects without metadata."""
    metadata = getattr(store, "metadata", None)
    if not isinstance(metadata, dict):
        return None
    return {key: metadata.get(key) for key in PROVENANCE_KEYS}


def stability(
    store, cluster_config: ClusterConfig | None = None, fuse_config: FuseConfig | None = None, runs: int = 5, mode: str = "seed", fraction: float = 0.8
) -> StabilityResult:
    """How reproducible a clustering of ``store`` is: pairwise ARI between ``runs`` fits.

    The fused space is fitted once; runs differ by seed (``mode="seed"``: ``cluster_config.seed``,
    +1, +2, ...) or also by the data (``"subsample"``: each run fits a random ``fraction`` of the
    images and predicts the rest). With ``k == "auto"``, k is selected once and kept for every run.
    Mean ARI near 1: the clusters are a property of the data; near 0: of the seed.
    """
    cluster_config = cluster_config or ClusterConfig()
    base = StyleClustering(cluster_config, fuse_config)
    Z = base._fit_fuser(store)
    k, selection = resolve_k(cluster_config.method, cluster_config.k, Z, seed=cluster_config.seed, **cluster_config.params)
    labelings = stability_labelings(
        cluster_config.method, Z, k=k, runs=runs, mode=mode, seed=cluster_config.seed, fraction=fraction, **cluster_config.params
    )
    n_clusters = [int(len(np.unique(labels[labels >= 0]))) for labels in labelings]
    return StabilityResult(method=cluster_config.method, mode=mode, ari=pairwise_ari(labelings), n_clusters=n_clusters, k=k, k_selection=selection)
