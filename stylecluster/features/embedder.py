"""Embedding a collection: plan against the store (resume, duplicates) → hash and decode in workers → encode → store."""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import Config
from ..data.dataset import ImageDataset, WorkItem, collate_items
from ..data.decode import BadImage, hash_file
from ..data.discovery import discover_images, relative_name
from ..device import resolve_device
from ..io import printable
from .runtime import resolve_runtime, runtime_metadata
from ..store import CORRUPT_DIR as STORE_CORRUPT_DIR
from ..store import StoreWriter, resolve_dtype, stored_paths
from .branch import Branch
from .global_ import GlobalBranch
from .local_ import LocalBranch

log = logging.getLogger("stylecluster")


def build_branches(config: Config, device: torch.device) -> list[Branch]:
    """The branches ``embed`` runs, in store-column order, their networks compiled as
    ``embed.runtime`` says (:func:`~stylecluster.features.runtime.use_runtime`)."""
    from .runtime import use_runtime

    branches: list[Branch] = [GlobalBranch(config.global_)]
    if config.local.enabled:  # config.local.model, or the encoder shipped with the package
        branches.append(LocalBranch(config.local))
    branches = [b.to(device) for b in branches]
    use_runtime(branches, config.embed.runtime, config.embed.precision, device)
    return branches


@dataclass
class EmbedReport:
    store: Path
    found: int = 0
    embedded: int = 0  # newly encoded this run
    already_stored: int = 0  # skipped because the store had them (resume)
    duplicates: int = 0  # same bytes as another file: vectors copied, not recomputed
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, kind)
    set_aside: list[str] = field(default_factory=list)  # unreadable chunks moved to STORE/_corrupt/
    stored_total: int = 0

    @property
    def skipped_by_kind(self) -> dict[str, int]:
        return dict(Counter(kind for _, _, kind in self.skipped))

    def summary_lines(self) -> list[str]:
        lines = [
            f"store: {printable(self.store)}",
            f"images found: {self.found}",
            f"embedded now: {self.embedded}",
            f"already in the store (resumed): {self.already_stored}",
            f"exact duplicates (same content hash; vectors copied): {self.duplicates}",
            f"skipped: {len(self.skipped)}" + (f" ({', '.join(f'{k} {n}' for k, n in sorted(self.skipped_by_kind.items()))})" if self.skipped else ""),
            f"rows in the store: {self.stored_total}",
        ]
        if self.set_aside:
            lines.insert(-1, f"unreadable chunks set aside in {STORE_CORRUPT_DIR}/ (their images embedded again): {len(self.set_aside)}")
        return lines


def _worker_init(_: int) -> None:
    # Decoding workers must not fight the model for the cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(0)


def _hash_all(paths: Sequence[Path], quiet: bool) -> list[tuple[Path, str | BadImage]]:
    def one(path: Path):
        try:
            return path, hash_file(path).sha256
        except BadImage as exc:
            return path, exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(tqdm(pool.map(one, paths), total=len(paths), desc="hashing", unit="file", disable=quiet, leave=False))


def encode_batch(batch: dict, branches: Sequence[Branch]) -> dict[str, np.ndarray]:
    """Every branch's vectors for a batch collated by :func:`~stylecluster.data.dataset.collate_items`."""
    return {b.name: b.encode(batch["inputs"][b.name]) for b in branches}


def embed_images(
    paths: Sequence[Path],
    root: Path,
    out: Path,
    config: Config | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    branches: Sequence[Branch] | None = None,
    engine=None,
) -> EmbedReport:
    """Embed ``paths`` (stored relative to ``root``) into the store at ``out``.

    Re-running with the same arguments resumes: files whose (path, content hash) are stored are
    skipped. Bad files are logged one line each and listed in the report; they never stop the run.
    ``engine``: None encodes in this process (DataLoader workers decode), a
    :class:`~stylecluster.features.ray_engine.RayEngine` on Ray actors (which build their branches
    from ``config``; ``branches`` here then only describe the store).
    """
    config = resolve_runtime(config or Config(), len(paths))
    device = resolve_device(config.embed.device)
    branches = list(branches) if branches is not None else build_branches(config, device)
    report = EmbedReport(store=Path(out), found=len(paths))
    if engine is None:
        engine = LocalEngine(config, device, branches)
    else:
        engine.config = config  # the run's configuration, its runtime decided: Ray's actors build theirs from it
    with engine:  # a Ray engine joins its cluster here, before the store is made
        _embed_with(engine, report, paths, root, out, config, overwrite, quiet, branches)
    return report


def _embed_with(engine, report: EmbedReport, paths, root: Path, out: Path, config: Config, overwrite: bool, quiet: bool, branches) -> None:
    writer = StoreWriter(
        out,
        branches={b.name: b.provenance() for b in branches},
        dims={b.name: b.dim for b in branches},
        parts={b.name: b.parts for b in branches},
        images_root=str(Path(root).resolve()),
        chunk_size=config.embed.chunk_size,
        overwrite=overwrite,
        seed=config.embed.seed,
        checkpoint_rows=config.embed.checkpoint_rows,
        checkpoint_seconds=config.embed.checkpoint_seconds,
        extra_metadata={"runtime": runtime_metadata(branches)},
        vector_dtype=resolve_dtype(config.embed.dtype, len(paths), out),
    )
    try:
        _embed_into(writer, report, paths, root, engine, quiet)
    finally:
        # Reached on Ctrl-C too: everything encoded so far is kept.
        try:
            writer.write_skipped((p, r) for p, r, _ in report.skipped)
        finally:
            writer.close()
    report.set_aside = writer.set_aside_chunks
    report.stored_total = len(stored_paths(out))


class LocalEngine:
    """Decoding (and hashing) in DataLoader workers, the branches in this process.

    Every engine (this one, and Ray Data's in features/ray_engine.py) has a ``config`` (which
    ``embed_images`` sets to the run's, ``embed.runtime`` decided), is a context manager that
    ``embed_images`` enters before it makes the store (Ray joins its cluster there) and has ``run(items,
    known_sha256, quiet)``, which yields ``(rows, others)``: ``rows`` a list of ``(index, sha256,
    width, height, {branch: vector})`` for the items encoded, ``others`` a list of ``{"index",
    "error", "kind"}`` for bad files and ``{"index", "sha256", "known": True}`` for files whose
    content is in ``known_sha256`` (not decoded).
    """

    def __init__(self, config: Config, device: torch.device, branches: Sequence[Branch]):
        self.config, self.device, self.branches = config, device, list(branches)

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def run(self, items: Sequence[WorkItem], known_sha256: frozenset[str], quiet: bool):
        config = self.config
        dataset = ImageDataset(items, self.branches, config.ingest.max_pixels, config.ingest.min_side, seed=config.embed.seed,
                               known_sha256=known_sha256)
        loader = DataLoader(
            dataset,
            batch_size=config.embed.batch_size,
            num_workers=config.embed.workers,
            collate_fn=collate_items,
            worker_init_fn=_worker_init if config.embed.workers > 0 else None,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if config.embed.workers > 0 else None,
        )
        with tqdm(total=len(items), desc="embedding", unit="img", disable=quiet) as bar:
            for batch, failures in loader:
                rows = []
                if batch is not None:
                    vectors = encode_batch(batch, self.branches)
                    for row, index in enumerate(batch["index"].tolist()):
                        rows.append((index, batch["sha256"][row], int(batch["width"][row]), int(batch["height"][row]),
                                     {name: v[row] for name, v in vectors.items()}))
                yield rows, failures
                bar.update(len(failures) + len(rows))


def _embed_into(writer: StoreWriter, report: EmbedReport, paths, root: Path, engine, quiet: bool) -> None:
    """Plan against the store, then write what ``engine`` encodes.

    Only files whose path the store already holds are hashed before encoding (to tell an
    unchanged file from a changed one); every other file is hashed by whoever decodes it, from
    the same read. A new file whose content the store or this run already holds is written as a
    duplicate of that row: with the stored vectors when the store has them, otherwise with its
    own (the same up to float rounding: they depend on the content alone, but the copies may be
    encoded in different batches). Files new to the store are not
    decoded when their content is (``known_sha256``).
    """

    def skip(path: Path, exc: BadImage | str, kind: str | None = None) -> None:
        reason = str(exc)
        report.skipped.append((relative_name(path, root), reason, kind or getattr(exc, "kind", "corrupt")))
        log.warning("skipped %s: %s", printable(path), reason)

    stored_by_path, stored_by_sha = writer.existing()

    items: list[WorkItem] = []
    pending_duplicates: dict[str, list[tuple[str, str]]] = defaultdict(list)  # sha → [(rel, original rel)]
    first_in_run: dict[str, str] = {}  # sha → rel, of the files hashed before encoding
    rels = [relative_name(path, root) for path in paths]
    known = [path for path, rel in zip(paths, rels) if rel in stored_by_path]
    for path, result in _hash_all(known, quiet):
        if isinstance(result, BadImage):
            skip(path, result)
            continue
        rel, sha = relative_name(path, root), result
        if stored_by_path.get(rel) == sha:
            report.already_stored += 1
        elif sha in stored_by_sha:
            row = stored_by_sha[sha]
            writer.add(rel, sha, row.width, row.height, row.vectors, duplicate_of=row.path)
            report.duplicates += 1
        elif sha in first_in_run:
            pending_duplicates[sha].append((rel, first_in_run[sha]))
        else:
            first_in_run[sha] = rel
            items.append(WorkItem(len(items), path, sha))
    new = [path for path, rel in zip(paths, rels) if rel not in stored_by_path]
    items += [WorkItem(len(items) + i, path, None) for i, path in enumerate(new)]

    written: dict[str, str] = {}  # sha → rel of the rows encoded in this run
    for rows, others in engine.run(items, frozenset(stored_by_sha), quiet):
        for other in others:
            item = items[other["index"]]
            if other.get("known"):
                row = stored_by_sha[other["sha256"]]
                writer.add(relative_name(item.path, root), other["sha256"], row.width, row.height, row.vectors, duplicate_of=row.path)
                report.duplicates += 1
                continue
            skip(item.path, other["error"], other["kind"])
            for rel, _ in pending_duplicates.pop(item.sha256, []):
                report.skipped.append((rel, other["error"], other["kind"]))
        for index, sha, width, height, vectors in rows:
            item = items[index]
            rel = relative_name(item.path, root)
            if item.sha256 is None and sha in written:
                writer.add(rel, sha, width, height, vectors, duplicate_of=written[sha])
                report.duplicates += 1
                continue
            writer.add(rel, sha, width, height, vectors)
            written.setdefault(sha, rel)
            report.embedded += 1
            for dup_rel, original in pending_duplicates.pop(sha, []):
                writer.add(dup_rel, sha, width, height, vectors, duplicate_of=original)
                report.duplicates += 1


def embed_folder(images_dir: str | Path, out: str | Path, config: Config | None = None, **kwargs) -> EmbedReport:
    """Embed every image below ``images_dir`` (see :func:`embed_images`)."""
    config = config or Config()
    root = Path(images_dir)
    paths = discover_images(root, follow_symlinks=config.ingest.follow_symlinks)
    return embed_images(paths, root, Path(out), config, **kwargs)
