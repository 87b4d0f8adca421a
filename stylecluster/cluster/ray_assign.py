"""Assigning a store's images on Ray Data: the fit stays here, the per-row work runs on actors.

``cluster --engine ray`` fits exactly as the local engine does — the fuser and the method on their
seeded subsamples, in this process (cluster/pipeline.py) — and ``assign --engine ray`` loads the
saved model; then every image is read, fused and assigned by ``map_batches`` over the store's
chunks: one task is one chunk (its file and which of its rows are the store's), and a pool of
actors each holds the fitted model, sent to them as the model file's bytes (data only,
cluster/persist.py; the per-image arrays left out). Only this process writes CLUSTERS.csv, through
the same atomic writer and in store order, and the labels and probabilities are the local
engine's (tests/test_ray_assign.py). Every node must read the store under the same path.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from ..ray_session import RaySession

log = logging.getLogger("stylecluster")

#: What the actors do not need of a fitted clustering: the per-image results of its own store.
PER_IMAGE = ("paths_", "labels_", "probabilities_", "fit_rows_", "_loaded_from")


class AssignActor:
    """One Ray actor: the fitted clustering loaded once from its bytes, then chunk after chunk.

    Input batch: ``file``, ``kept`` (rows of the file that are the store's; empty = all) and
    ``start`` (store row of the chunk's first kept row). Output: one row per image, ``row``,
    ``cluster``, ``probability``.
    """

    def __init__(self, model: bytes, metadata: dict[str, Any], columns: list[str], threads: int):
        from threadpoolctl import threadpool_limits

        from .persist import load_model
        from .pipeline import StyleClustering

        self._threads = threadpool_limits(max(1, int(threads)))  # kept: the limit lasts as long as the actor
        self.model = load_model("the clustering's model", expected=StyleClustering, data=model)
        self.metadata, self.columns = metadata, list(columns)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..store import read_chunk, vector_matrix

        rows, labels, probabilities = [], [], []
        for file, kept, start in zip(batch["file"], batch["kept"], batch["start"]):
            table = read_chunk(Path(str(file)), self.metadata, self.columns)
            if len(kept):
                table = table.take(np.asarray(kept, dtype=np.int64))
            X = np.hstack([vector_matrix(table, column, int(self.metadata["dims"][column]), file) for column in self.columns])
            chunk_labels, chunk_probabilities = self.model.method_.assign(self.model.fuser_.transform(X))
            rows.append(np.arange(int(start), int(start) + len(X)))
            labels.append(np.asarray(chunk_labels, dtype=np.int64))
            probabilities.append(np.asarray(chunk_probabilities, dtype=np.float64))
        return {"row": np.concatenate(rows), "cluster": np.concatenate(labels), "probability": np.concatenate(probabilities)}


class RayAssigner(RaySession):
    """Assigns a store's images to a fitted clustering on Ray actors (see the module docstring).

    Parameters
    ----------
    address : str or None
        A running Ray cluster (``ray start --head`` prints it; ``"auto"`` finds the local one);
        None starts Ray on this machine for the run.
    actors : int or None
        Actors (copies of the model) at once; None = one per ``threads`` CPUs of the cluster.
    threads : int
        BLAS threads per actor (1: one single-threaded actor per core keeps every core busy).
    """

    def __init__(self, address: str | None = None, actors: int | None = None, threads: int = 1, quiet: bool = False):
        if actors is not None and actors < 1:
            raise InputError(f"--actors must be at least 1, got {actors}")
        super().__init__(address, quiet)
        self.actors, self.threads = actors, max(1, int(threads))

    def assign_batches(self, clustering, store) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, labels, probabilities) in store order, as
        :meth:`~stylecluster.cluster.StyleClustering.assign_batches` gives them."""
        from .fuse import store_layout
        from .persist import model_bytes

        ray = self.ray
        columns, _ = store_layout(store, local_weight=clustering.fuse.local_weight)
        chunks = store.chunks
        if not chunks:
            return
        slim = copy.copy(clustering)
        for name in PER_IMAGE:
            slim.__dict__.pop(name, None)
        model = model_bytes(slim)  # kilobytes to a few MB: travels with each actor's creation
        actors = self.actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = True  # CLUSTERS.csv is in store order
        if self.quiet:
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        items = [{"file": str(c.file), "kept": [] if c.kept is None else c.kept.tolist(), "start": c.start} for c in chunks]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        assigned = dataset.map_batches(
            AssignActor,
            fn_constructor_kwargs={"model": model, "metadata": store.metadata, "columns": columns, "threads": self.threads},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(actors, len(items))),
            num_cpus=self.threads,
        )
        log.info("assigning on Ray: %d actors, %d chunks", actors, len(items))
        batches = assigned.iter_batches(batch_size=None, batch_format="numpy")
        expected = 0
        try:
            for batch in batches:
                rows = batch["row"]
                if len(rows) == 0:
                    continue
                if rows[0] != expected or (len(rows) > 1 and (np.diff(rows) != 1).any()):
                    raise RuntimeError(f"Ray returned rows out of order (expected row {expected}, got {rows[0]})")
                yield int(rows[0]), batch["cluster"], batch["probability"]
                expected = int(rows[-1]) + 1
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        if expected != len(store):
            raise RuntimeError(f"Ray assigned {expected} of the store's {len(store)} images")
