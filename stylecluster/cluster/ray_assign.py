"""Assigning a store's images on Ray Data: the fit stays here, the per-row work runs on actors.

``cluster --engine ray`` fits exactly as the local engine does — the fuser and the method on their
seeded subsamples, in this process (cluster/pipeline.py) — and ``assign --engine ray`` loads the
saved model; then every image is read, fused and assigned by ``map_batches`` over the store's
chunks: one task is one chunk (its file and which of its rows are the store's), and a pool of
actors each holds the fitted model, sent to them as the model file's bytes (data only,
cluster/persist.py; the per-image arrays left out). For ``assign`` the actors also format their
chunk's lines of the CSV (paths read from the chunk), so that this process only checks the order
and writes them through the same atomic writer: the bytes are the local engine's
(tests/test_ray_assign.py). Every node must read the store under the same path.
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

class AssignActor:
    """One Ray actor: the fitted clustering loaded once from its bytes, then chunk after chunk.

    Input batch: ``file``, ``kept`` (rows of the file that are the store's; empty = all) and
    ``start`` (store row of the chunk's first kept row). Output, one row per image: ``row``,
    ``cluster``, ``probability``; or with ``csv``, one row per chunk: ``start``, ``rows`` and
    ``text``, the chunk's lines of CLUSTERS.csv (paths read from the chunk itself).
    """

    def __init__(self, model: bytes, metadata: dict[str, Any], columns: list[str], threads: int, csv: bool = False):
        from threadpoolctl import threadpool_limits

        from .persist import load_model
        from .pipeline import StyleClustering

        self._threads = threadpool_limits(max(1, int(threads)))  # kept: the limit lasts as long as the actor
        self.model = load_model("the clustering's model", expected=StyleClustering, data=model)
        self.metadata, self.columns, self.csv = metadata, list(columns), csv

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..io import csv_text
        from ..store import read_chunk, vector_matrix
        from .pipeline import assignment_frame

        out: dict[str, list] = {"start": [], "rows": [], "text": []} if self.csv else {"row": [], "cluster": [], "probability": []}
        for file, kept, start in zip(batch["file"], batch["kept"], batch["start"]):
            table = read_chunk(Path(str(file)), self.metadata, self.columns + (["path"] if self.csv else []))
            if len(kept):
                table = table.take(np.asarray(kept, dtype=np.int64))
            X = np.hstack([vector_matrix(table, column, int(self.metadata["dims"][column]), file) for column in self.columns])
            labels, probabilities = self.model.method_.assign(self.model.fuser_.transform(X))
            if self.csv:
                text = csv_text(assignment_frame(table.column("path").to_pylist(), labels, probabilities))
                out["start"].append(int(start))
                out["rows"].append(text.rows)
                out["text"].append(text.text)
            else:
                out["row"].append(np.arange(int(start), int(start) + len(X)))
                out["cluster"].append(np.asarray(labels, dtype=np.int64))
                out["probability"].append(np.asarray(probabilities, dtype=np.float64))
        if self.csv:
            return {"start": np.array(out["start"], dtype=np.int64), "rows": np.array(out["rows"], dtype=np.int64), "text": np.array(out["text"], dtype=object)}
        return {name: np.concatenate(values) for name, values in out.items()}


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
        :meth:`~stylecluster.cluster.StyleClustering.assign_batches` gives them (what ``cluster
        --engine ray`` keeps in the model)."""
        expected = 0
        for batch in self._assigned(clustering, store, csv=False):
            rows = batch["row"]
            if len(rows) == 0:
                continue
            if rows[0] != expected or (len(rows) > 1 and (np.diff(rows) != 1).any()):
                raise RuntimeError(f"Ray returned rows out of order (expected row {expected}, got {rows[0]})")
            yield int(rows[0]), batch["cluster"], batch["probability"]
            expected = int(rows[-1]) + 1
        if expected != len(store):
            raise RuntimeError(f"Ray assigned {expected} of the store's {len(store)} images")

    def assign_csv(self, clustering, store):
        """The lines of ``assign``'s CSV as :class:`~stylecluster.io.CsvText`, chunk by chunk in
        store order, formatted on the actors (:meth:`StyleClustering.predict_csv`)."""
        from ..io import CsvText

        expected = 0
        for batch in self._assigned(clustering, store, csv=True):
            for start, rows, text in zip(batch["start"], batch["rows"], batch["text"]):
                if start != expected:
                    raise RuntimeError(f"Ray returned rows out of order (expected row {expected}, got {start})")
                yield CsvText(str(text), int(rows))
                expected += int(rows)
        if expected != len(store):
            raise RuntimeError(f"Ray assigned {expected} of the store's {len(store)} images")

    def _assigned(self, clustering, store, csv: bool) -> Iterator[dict[str, np.ndarray]]:
        """The actors' output batches in store order: one task per chunk of the store."""
        from .fuse import store_layout
        from .persist import model_bytes
        from .pipeline import PER_IMAGE

        ray = self.ray
        columns, _ = store_layout(store, local_weight=clustering.fuse.local_weight)
        chunks = store.chunks
        if not chunks:
            return
        slim = copy.copy(clustering)
        for name in (*PER_IMAGE, "_loaded_from"):  # ten million paths alone are ~0.3 GB each actor would receive
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
            fn_constructor_kwargs={"model": model, "metadata": store.metadata, "columns": columns, "threads": self.threads, "csv": csv},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(actors, len(items))),
            num_cpus=self.threads,
        )
        log.info("assigning on Ray: %d actors, %d chunks", actors, len(items))
        batches = assigned.iter_batches(batch_size=None, batch_format="numpy")
        try:
            yield from batches
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
