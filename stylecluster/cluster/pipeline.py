"""Fusion + a clustering method in one fitted object: what ``stylecluster cluster`` saves.

``StyleClustering`` is what the CLI, notebooks and ``assign`` use; it never branches on the
method's name — the method comes from the registry. It is saved as data only
(:mod:`stylecluster.cluster.persist`), with the provenance of the store it was fitted on, so that
images of another store are placed only when they were embedded the same way.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ClusterConfig, FuseConfig
from ..errors import ConfigError, InputError, NotFittedError
from ..io import printable, save_atomic
from .base import OneCluster, distinct_points, make_clusterer, method_class
from .fuse import fit_store_fuser, fuse_store, store_layout, store_shape
from ..features.runtime import check_compatible
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

    def fit(self, store) -> "StyleClustering":
        """Fuse and cluster ``store``'s images.

        Fewer than 2 images is an InputError; identical images (all vectors equal) make one
        cluster whatever the method, which is what every method would mean by them. The
        parameters are checked first, before the (slow) fusion.
        """
        self._validate_params()
        n = len(store.paths)
        if n < 2:
            raise InputError(f"clustering needs at least 2 images; the store has {n}")
        Z = self._fit_fuser(store)
        if distinct_points(Z, at_least=2) < 2:
            log.warning("all %d images have the same vectors (identical images): one cluster", n)
            self.k_selection_, self.method_ = None, OneCluster().fit(Z)
        else:
            k, self.k_selection_ = resolve_k(self.cluster.method, self.cluster.k, Z, seed=self.cluster.seed, **self.cluster.params)
            self.method_ = make_clusterer(self.cluster.method, k=k, seed=self.cluster.seed, **self.cluster.params)
            self.method_.fit(Z)
        self.paths_ = list(store.paths)
        self.labels_ = np.asarray(self.method_.labels_)
        self.probabilities_ = np.asarray(self.method_.probabilities_, dtype=np.float64)
        self.n_clusters_ = int(self.method_.n_clusters_)
        self.provenance_ = store_provenance(store)
        self.runtime_ = (getattr(store, "metadata", None) or {}).get("runtime")
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

    def _fit_fuser(self, store) -> np.ndarray:
        """Fit the fuser on (a seeded subsample of at most ``fuse.max_fit_samples`` of) the store's
        images and return the fused coordinates of all of them, fused a batch at a time."""
        columns, blocks = store_layout(store, local_weight=self.fuse.local_weight)
        self.n_features_in_ = store_shape(store, columns)[1]
        self.fuser_ = fit_store_fuser(store, columns, blocks, self.fuse.max_fit_samples, self.cluster.seed,
                                      pca_components=self.fuse.pca_components, whiten=self.fuse.whiten)
        return fuse_store(self.fuser_, store, columns)

    def embed(self, store) -> np.ndarray:
        """The fused coordinates of a store's images in this clustering's space (float32; the
        store is read a batch at a time).

        Refuses (ValueError) a store whose vectors were made otherwise than the fitted store's.
        """
        self._check_fitted()
        self.check_store(store)
        columns, _ = store_layout(store, local_weight=self.fuse.local_weight)
        width = store_shape(store, columns)[1]
        expected = getattr(self, "n_features_in_", None)  # absent from model files saved before it existed
        if expected is not None and width != expected:
            raise InputError(f"{printable(getattr(store, 'path', 'the store'))}: its vectors have {width} features, "
                             f"this clustering was fitted on {expected}")
        return fuse_store(self.fuser_, store, columns)

    def check_store(self, store) -> None:
        """ValueError naming what differs when ``store`` was embedded with other branches,
        weights, patch settings or vector layout than the store this clustering was fitted on."""
        from ..store import _describe_difference

        recorded, new = getattr(self, "provenance_", None), store_provenance(store)
        if recorded is None or new is None:
            return
        diffs = _describe_difference(recorded, new, old_name="the clustering's store has", new_name="this store has")
        if diffs:
            raise InputError(
                f"{printable(store.path)}: embedded differently from the store this clustering was fitted on ({'; '.join(diffs)}); "
                "embed the images with the same model and configuration, or cluster this store itself"
            )
        check_compatible(getattr(self, "runtime_", None), store.metadata.get("runtime"), printable(store.path))

    def predict_store(self, store) -> pd.DataFrame:
        """Assign a store's images (new or not) to this clustering: columns path, cluster, probability."""
        self._check_fitted()
        Z = self.embed(store)
        if len(Z):
            self._probe(lambda: self.method_.assign(Z[:1]), printable(getattr(self, "_loaded_from", "the clustering's model")))
        labels, probabilities = self.method_.assign(Z)
        return pd.DataFrame({"path": list(store.paths), "cluster": labels, "probability": np.round(np.asarray(probabilities, dtype=np.float64), 6)})

    def to_frame(self) -> pd.DataFrame:
        """path, cluster, probability, then any per-image columns the method adds (e.g. outlier_score)."""
        self._check_fitted()
        frame = pd.DataFrame({"path": self.paths_, "cluster": self.labels_, "probability": np.round(self.probabilities_, 6)})
        for name, values in self.method_.point_details().items():
            frame[name] = np.round(np.asarray(values, dtype=np.float64), 6)
        return frame

    def tables(self) -> dict[str, pd.DataFrame]:
        """The method's extra tables (e.g. ``merge_tree``) by name, to write next to CLUSTERS.csv;
        a ``row`` column (row of the fitted matrix) becomes the image ``path``."""
        self._check_fitted()
        out = {}
        for name, table in self.method_.tables().items():
            if "row" in table.columns:
                table = table.assign(path=np.asarray(self.paths_, dtype=object)[table["row"].to_numpy()]).drop(columns="row")
            out[name] = table
        return out

    def save(self, path: str | Path) -> Path:
        """Write the fitted clustering to ``path`` (``CLUSTERS.model.npz``; arrays + JSON, no code)."""
        from .persist import save_model

        self._check_fitted()
        return save_model(self, path)

    def write(self, out: str | Path) -> list[Path]:
        """Write what ``stylecluster cluster`` writes: CLUSTERS.csv at ``out``, the model beside it
        (:func:`~.persist.model_path_for`) and the method's tables (``out`` with ``.<name>.csv``,
        e.g. the agglomerative merge tree); returns the paths written, CSV first."""
        from .persist import model_path_for

        out = Path(out)
        frame = self.to_frame()
        written = [save_atomic(out, lambda tmp: frame.to_csv(tmp, index=False)), self.save(model_path_for(out))]
        for name, table in self.tables().items():
            written.append(save_atomic(out.with_suffix(f".{name}.csv"), lambda tmp, table=table: table.to_csv(tmp, index=False)))
        return written

    @staticmethod
    def load(path: str | Path) -> "StyleClustering":
        """Read a clustering saved by :meth:`save`; an old pickled model is refused with one line,
        and so is one whose arrays do not fit together (a row of zeros is fused as a probe)."""
        from .persist import load_model

        model = load_model(path, expected=StyleClustering)
        model._loaded_from = str(path)
        model._check_fitted()
        width = getattr(model, "n_features_in_", None)
        if width is None:  # model files saved before it existed
            width = max((int(b.stop) for b in getattr(model.fuser_, "blocks", [])), default=0)
        model._probe(lambda: model.fuser_.transform(np.zeros((1, int(width)), np.float32)), printable(path))
        if not len(model.paths_) == len(model.labels_) == len(model.probabilities_):
            raise ModelFileError(f"{printable(path)}: its paths, labels and probabilities differ in length; {RERUN}")
        return model

    def _saved_state(self) -> dict[str, Any]:
        """What a model file holds: the attributes, less where this one was loaded from."""
        return {k: v for k, v in vars(self).items() if k != "_loaded_from"}

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
        self._check_fitted()
        outliers = float(np.mean(self.labels_ < 0)) if len(self.labels_) else 0.0
        summary = {"method": self.cluster.method, "n_clusters": self.n_clusters_, "n_images": len(self.labels_), "outlier_share": outliers}
        if self.k_selection_ is not None:
            summary["k_selection"] = self.k_selection_.to_dict()
        return summary


#: Store metadata that decides what a vector means; stores that differ here are not comparable.
PROVENANCE_KEYS = ("branches", "dims", "parts")


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
