"""Embedding on Ray Data: the store and its plan stay here, the encoding runs on Ray actors.

``stylecluster embed IMAGES --out STORE --engine ray [--address ADDR]`` plans the run exactly as
the local engine does (features/embedder.py: resume by (path, sha256), duplicates, one line per
bad file) and writes every row through the same :class:`~stylecluster.store.StoreWriter` in this
process, so locking, checkpoints and resuming are unchanged. Only the work between "a file to
embed" and "its vectors" moves: Ray Data maps batches of file paths over a pool of actors
(``map_batches`` with a callable class and ``ActorPoolStrategy``), each actor holding one copy
of the branches (one model per actor; one GPU each when the cluster has GPUs). An actor reads,
hashes and decodes its batch's files and encodes them with the same code as a local DataLoader
worker and the local main process (``ImageDataset``, ``collate_items``, ``encode_batch``), so the
vectors are the local engine's (tests/test_ray_engine.py).

Every node must see the images under the same paths (a shared or identically mounted folder)
and have stylecluster installed; only the driver writes the store. Ray is imported here alone:
the local engine never needs it (``pip install "stylecluster[ray]"``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..config import Config, config_from_dict
from ..errors import InputError
from ..ray_session import RaySession, check_address  # noqa: F401  (check_address: where embed's callers found it)

if TYPE_CHECKING:  # the module stays light: `embed --address` is checked before torch loads
    from ..data.dataset import WorkItem

log = logging.getLogger("stylecluster")

#: Status of an output row of the actors.
ENCODED, KNOWN, FAILED = "encoded", "known", "failed"


class EmbedActor:
    """One Ray actor: the branches built once from the config, then batch after batch of paths.

    Input batch (numpy columns): ``index``, ``path``, ``sha256`` ("" = hash it here). Output: one
    row per input row with ``status`` (:data:`ENCODED`, :data:`KNOWN` = content the store holds,
    not decoded; :data:`FAILED`), ``sha256``, ``width``, ``height``, ``error``, ``kind`` and one
    float32 vector column per branch (zeros unless encoded).
    """

    def __init__(self, config: dict[str, Any], known_sha256: frozenset[str], threads: int):
        import cv2
        import torch

        from ..device import resolve_device
        from .embedder import build_branches

        torch.set_num_threads(max(1, threads))
        cv2.setNumThreads(1)
        self.config = config_from_dict(config)
        self.branches = build_branches(self.config, resolve_device(self.config.embed.device))
        self.known_sha256 = known_sha256

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..data.dataset import ImageDataset, WorkItem, collate_items
        from .embedder import encode_batch

        n = len(batch["index"])
        items = [WorkItem(i, Path(str(p)), str(s) or None) for i, (p, s) in enumerate(zip(batch["path"], batch["sha256"]))]
        ingest = self.config.ingest
        dataset = ImageDataset(items, self.branches, ingest.max_pixels, ingest.min_side, seed=self.config.embed.seed, known_sha256=self.known_sha256)
        collated, others = collate_items([dataset[i] for i in range(n)])
        out: dict[str, Any] = {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "status": np.full(n, FAILED, dtype=object),
            "sha256": np.array([str(s) for s in batch["sha256"]], dtype=object),
            "width": np.zeros(n, np.int64),
            "height": np.zeros(n, np.int64),
            "error": np.full(n, "", dtype=object),
            "kind": np.full(n, "", dtype=object),
        }
        for other in others:
            i = other["index"]
            if other.get("known"):
                out["status"][i], out["sha256"][i] = KNOWN, other["sha256"]
            else:
                out["error"][i], out["kind"][i] = other["error"], other["kind"]
        vectors = {b.name: np.zeros((n, b.dim), np.float32) for b in self.branches}
        if collated is not None:
            rows = collated["index"].numpy()
            for name, values in encode_batch(collated, self.branches).items():
                vectors[name][rows] = values
            out["status"][rows] = ENCODED
            out["sha256"][rows] = collated["sha256"]
            out["width"][rows], out["height"][rows] = collated["width"], collated["height"]
        out.update({f"vector_{name}": v for name, v in vectors.items()})
        return out


class RayEngine(RaySession):
    """Encodes a run's work items on Ray Data (see the module docstring).

    Parameters
    ----------
    config : Config
        The run's configuration; each actor builds its branches from it.
    address : str or None
        A running Ray cluster (``ray start --head`` prints it; ``"auto"`` finds the local one).
        None starts Ray on this machine for the run and stops it afterwards; an already
        initialised Ray (``ray.init`` by the caller) is used as it is.
    actors : int or None
        Actors (models) encoding at once; None = one per GPU of the cluster, or else one per
        ``threads`` CPUs.
    threads : int
        CPUs (torch threads) per actor. 1 by default: on CPUs one single-threaded model per core
        keeps every core busy without the threads of one model waiting on each other.
    """

    def __init__(self, config: Config, address: str | None = None, actors: int | None = None, threads: int = 1, quiet: bool = False):
        if actors is not None and actors < 1:
            raise InputError(f"--actors must be at least 1, got {actors}")
        super().__init__(address, quiet)
        self.config, self.actors, self.threads = config, actors, max(1, int(threads))

    def run(self, items: Sequence[WorkItem], known_sha256: frozenset[str], quiet: bool) -> Iterator[tuple[list, list]]:
        if not items:
            return
        yield from self._run(self.ray, items, known_sha256, quiet)

    def _run(self, ray, items: Sequence[WorkItem], known_sha256: frozenset[str], quiet: bool):
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if self.config.embed.device != "cpu" else 0
        cpus = max(1, int(resources.get("CPU", 1)))
        actors = self.actors or (gpus or max(1, cpus // self.threads))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours below counts images, not Ray's blocks
        if quiet:
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        rows = [{"index": it.index, "path": str(it.path), "sha256": it.sha256 or ""} for it in items]
        batch_size = self.config.embed.batch_size
        # One batch a block up to 16 blocks an actor: the actors that finish first take the next
        # block, so a slow actor (a busy node) never holds a long block back.
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(-(-len(rows) // batch_size), actors * 16)))
        encoded = dataset.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"config": self.config.to_dict(), "known_sha256": known_sha256, "threads": self.threads},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=self.threads,  # the actor decodes its batches too
            num_gpus=1 if gpus else 0,
            udf_modifying_row_count=False,
        )
        log.info("embedding on Ray: %d actors (%s)", actors, "one GPU each" if gpus else f"{self.threads} CPU each")
        batches = encoded.iter_batches(batch_size=None, batch_format="numpy")
        try:
            yield from self._rows(batches, len(items), quiet)
        finally:
            # Stop Ray Data's executor before Ray itself is shut down: shut down under a running
            # executor, one of four interrupted runs ended in SIGSEGV after the "interrupted" line.
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    @staticmethod
    def _rows(batches, total: int, quiet: bool):
        from tqdm.auto import tqdm

        with tqdm(total=total, desc="embedding (ray)", unit="img", disable=quiet) as bar:
            for batch in batches:
                vector_columns = {k[len("vector_"):]: v for k, v in batch.items() if k.startswith("vector_")}
                done, others = [], []
                for i, (index, status) in enumerate(zip(batch["index"].tolist(), batch["status"])):
                    if status == ENCODED:
                        vectors = {name: np.asarray(v[i], dtype=np.float32) for name, v in vector_columns.items()}
                        done.append((index, str(batch["sha256"][i]), int(batch["width"][i]), int(batch["height"][i]), vectors))
                    elif status == KNOWN:
                        others.append({"index": index, "sha256": str(batch["sha256"][i]), "known": True})
                    else:
                        others.append({"index": index, "error": str(batch["error"][i]), "kind": str(batch["kind"][i])})
                yield done, others
                bar.update(len(done) + len(others))
