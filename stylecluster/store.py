"""The embedding store: a folder of Parquet chunks plus a JSON provenance record.

Layout of ``STORE/``::

    _stylecluster.json      provenance: branches (model, weights hash, parameters), vector parts,
                            stylecluster version, creation/update time, images root
    part-000000.parquet     rows: path, sha256, width, height, duplicate_of, global, local
    part-000001.parquet     ... one file per chunk, each written to a temporary name and renamed
    _skipped.csv            the files the last run could not embed, with the reason
    _stylecluster.lock      held by the one process writing the store (see StoreWriter)
    _corrupt/               chunks that could not be read, set aside (their images are embedded again)

Why a folder of Parquet files: pandas and pyarrow read it in one line
(``pandas.read_parquet("STORE")``; files starting with ``_`` are ignored by both), vectors are
stored as fixed-size float32 lists without any custom encoding, and appending a chunk never
rewrites earlier ones — which is what makes resuming cheap and crash-safe.

Rows are keyed by ``path`` (relative to the images root, POSIX separators). When a path was
embedded twice (its file changed between runs), the row of the later chunk wins; chunks are
ordered by the number in their name, and a writer numbers new chunks after the highest one
present, so no chunk is ever written over another (a deleted chunk does not make the next run
overwrite the last one).

What a crash, a second writer or a damaged chunk can cost
---------------------------------------------------------
* A writer saves what it has every ``checkpoint_rows`` rows (64) or ``checkpoint_seconds`` (30 s),
  whichever comes first, so ``kill -9`` or an OOM kill loses at most that much work; at the end
  of the run its checkpoint chunks are merged into chunks of ``chunk_size`` rows (512), so a
  store of 100k images is still ~200 files (reading 1,563 files of 64 rows took 1.1 s against
  0.4 s for 196 of 512). Saving every 64 rows, merge included, costs 0.07 ms per image against
  0.01 ms every 512, beside ~80 ms to embed an image on this machine (``benchmarks/faults.py``).
* One process writes a store at a time: the writer holds ``_stylecluster.lock`` (an OS file lock,
  released when the process ends, however it ends). A second ``embed`` into the same store waits
  for it with one line, then resumes from what the first one stored — so two runs over disjoint
  halves of a collection keep every row instead of numbering their chunks over each other.
* A chunk that cannot be read (truncated, not Parquet, wrong columns) is skipped with one warning
  by readers; the writer moves it to ``_corrupt/`` and the images it held are embedded again,
  because resuming compares the folder with what is readable.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .errors import StyleclusterError
from .io import OutputError, printable, save_atomic

log = logging.getLogger("stylecluster")

META_FILE = "_stylecluster.json"
SKIPPED_FILE = "_skipped.csv"
LOCK_FILE = "_stylecluster.lock"
CORRUPT_DIR = "_corrupt"
FORMAT_VERSION = 1
VECTOR_COLUMNS = ("global", "local")


class StoreError(StyleclusterError):
    """A store cannot be read or written as asked."""


class StoreMismatchError(StoreError):
    """The store was made with another model or configuration."""


_CHUNK_NUMBER = re.compile(r"part-(\d+)")


def _chunk_number(file: Path) -> int:
    match = _CHUNK_NUMBER.match(file.name)
    return int(match.group(1)) if match else -1


def _chunk_files(path: Path) -> list[Path]:
    """The store's chunks in write order (by the number in their name)."""
    return sorted(path.glob("part-*.parquet"), key=lambda f: (_chunk_number(f), f.name))


class ChunkError(StoreError):
    """One chunk cannot be read; ``str(exc)`` is the reason."""


def read_chunk(file: Path, metadata: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
    """One chunk, checked against the store's metadata; :class:`ChunkError` when unusable."""
    try:
        table = pq.read_table(file, columns=columns)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise ChunkError(f"not readable as Parquet ({printable(exc)})") from None
    text = (pa.string(), pa.large_string())
    expected = {"path": text, "sha256": text}
    if columns is None:
        expected.update({column: (pa.list_(pa.float32(), dim),) for column, dim in metadata.get("dims", {}).items() if dim})
    for name, kinds in expected.items():
        if name not in table.column_names:
            raise ChunkError(f"no {name!r} column")
        if table.schema.field(name).type not in kinds:
            raise ChunkError(f"column {name!r} is {table.schema.field(name).type}, expected {kinds[0]}")
    return table


def readable_chunks(path: Path, metadata: dict[str, Any], columns: list[str] | None = None):
    """(tables of the readable chunks in order, [(file, reason) of the unreadable ones]).

    A chunk that vanished since the folder was listed (merged by a writer) is skipped silently.
    """
    tables, unreadable = [], []
    for f in _chunk_files(path):
        try:
            tables.append(read_chunk(f, metadata, columns))
        except FileNotFoundError:
            continue
        except ChunkError as exc:
            unreadable.append((f, str(exc)))
    return tables, unreadable


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / META_FILE).read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: not a stylecluster store (no {META_FILE})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable store metadata: {exc}") from None


def is_store(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


class EmbeddingStore:
    """Read side of a store: everything in memory, vectors as float32 matrices."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata: dict[str, Any] = _read_meta(self.path)
        tables, self.unreadable = readable_chunks(self.path, self.metadata)
        for f, reason in self.unreadable:
            log.warning("%s: skipped an unreadable chunk (%s); `stylecluster embed` into this store sets it aside and embeds its images again",
                        printable(f), reason)
        if tables:
            table = pa.concat_tables(tables, promote_options="default")
        else:
            table = _empty_table(self.metadata)
        # Later rows for the same path supersede earlier ones (a re-embedded, changed file).
        paths = table.column("path").to_pylist()
        last = {p: i for i, p in enumerate(paths)}
        if len(last) != len(paths):
            table = table.take(pa.array(sorted(last.values())))
        self._table = table

    def __len__(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        dims = {c: self.dim(c) for c in VECTOR_COLUMNS if self.dim(c)}
        return f"EmbeddingStore({str(self.path)!r}, n={len(self)}, dims={dims})"

    @property
    def paths(self) -> list[str]:
        return self._table.column("path").to_pylist()

    @property
    def sha256(self) -> list[str]:
        return self._table.column("sha256").to_pylist()

    @property
    def global_(self) -> np.ndarray:
        return self.vectors("global")

    @property
    def local(self) -> np.ndarray | None:
        return self.vectors("local")

    def dim(self, column: str) -> int:
        return int(self.metadata["dims"].get(column, 0))

    def parts(self, column: str) -> dict[str, tuple[int, int]]:
        return {k: tuple(v) for k, v in self.metadata.get("parts", {}).get(column, {}).items()}

    def vectors(self, column: str) -> np.ndarray | None:
        """(n, dim) float32 matrix of a vector column, or None when the store has no such branch."""
        if column not in self._table.column_names or self.dim(column) == 0:
            return None
        return self._matrix(self._table, column)

    def _matrix(self, table: pa.Table, column: str) -> np.ndarray:
        col = table.column(column).combine_chunks()
        if col.null_count:
            raise StoreError(f"{self.path}: {col.null_count} rows have no {column} vector")
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=np.float32).reshape(table.num_rows, self.dim(column))

    def iter_vectors(self, columns: Sequence[str], batch_rows: int = 65_536) -> Iterator[np.ndarray]:
        """The vectors of ``columns`` side by side, ``batch_rows`` rows at a time: (b, sum of
        dims) float32 matrices, in store order. Only one batch is ever copied out of the Arrow
        table, so fusing a million rows needs the memory of the stored vectors plus one batch
        (every column whole, ``vectors``, copies all of them once more)."""
        for start in range(0, len(self), max(1, int(batch_rows))):
            batch = self._table.slice(start, batch_rows)
            yield np.hstack([self._matrix(batch, column) for column in columns])

    def take_vectors(self, columns: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """The vectors of ``columns`` side by side for the given rows only (e.g. a subsample to fit on)."""
        batch = self._table.select(list(columns)).take(pa.array(np.asarray(rows, dtype=np.int64)))
        return np.hstack([self._matrix(batch, column) for column in columns])

    def to_pandas(self) -> pd.DataFrame:
        return self._table.to_pandas()


def load_store(path: str | Path) -> EmbeddingStore:
    """Open an embedding store written by ``stylecluster embed``."""
    return EmbeddingStore(path)


def _schema(metadata: dict[str, Any]) -> pa.Schema:
    fields = [
        pa.field("path", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("duplicate_of", pa.string()),
    ]
    for column in VECTOR_COLUMNS:
        dim = metadata["dims"].get(column, 0)
        if dim:
            fields.append(pa.field(column, pa.list_(pa.float32(), dim)))
    return pa.schema(fields, metadata={b"stylecluster": json.dumps(metadata).encode()})


def _empty_table(metadata: dict[str, Any]) -> pa.Table:
    return _schema(metadata).empty_table()


def _describe_difference(
    old: dict[str, Any], new: dict[str, Any], prefix: str = "", old_name: str = "store has", new_name: str = "this run uses"
) -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _describe_difference(a, b, f"{prefix}{key}.", old_name, new_name)
        elif a != b:
            diffs.append(f"{prefix}{key}: {old_name} {a!r}, {new_name} {b!r}")
    return diffs


def store_entries(path: Path) -> list[Path]:
    """What a store folder holds besides its lock file (nothing when it does not exist)."""
    return [f for f in path.iterdir() if f.name != LOCK_FILE] if path.is_dir() else []


def refuse_foreign_folder(path: Path) -> None:
    """StoreError unless ``path`` is absent, empty or a store: a folder of the user's is never written into."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"{printable(path)}: exists and is not a folder; choose another --out")
    if store_entries(path) and not is_store(path):
        raise StoreError(f"{printable(path)}: folder is not empty and is not a stylecluster store; refusing to write into it")


def own_files(path: Path) -> list[Path]:
    """The files a store's ``--overwrite`` replaces: its chunks, provenance and skipped list —
    never anything else a user keeps in the folder (nor the set-aside chunks and the
    visualisation cache, which stay for inspection and reuse)."""
    return [*_chunk_files(path), path / META_FILE, path / SKIPPED_FILE]


def install_store(staging: Path, out: Path) -> None:
    """Put the complete store built in ``staging`` at ``out`` (the ``install`` of
    :func:`stylecluster.io.staged_folder` for imports).

    A new ``out`` is the staging folder renamed. An existing store keeps everything that is not
    its own (:func:`own_files`): the old chunks and skipped list are removed, the new ones moved
    in, and the provenance replaced last, so an interruption leaves a store (the old provenance
    over the new chunks) that the next ``--overwrite`` replaces — replacing the whole folder, as
    reports are, deleted a user's images and the import's own input kept in it.
    """
    if not out.exists():
        os.replace(staging, out)
        return
    for f in own_files(out):
        if f.name != META_FILE:
            f.unlink(missing_ok=True)
    for f in staging.iterdir():
        if f.name not in (META_FILE, LOCK_FILE):
            os.replace(f, out / f.name)
    os.replace(staging / META_FILE, out / META_FILE)
    shutil.rmtree(staging, ignore_errors=True)


@dataclass
class StoredRow:
    path: str
    width: int
    height: int
    vectors: dict[str, np.ndarray]


def stored_paths(path: str | Path) -> list[str]:
    """Distinct image paths in the readable chunks of a store, reading only ``path`` and ``sha256``."""
    seen: dict[str, None] = {}
    tables, _ = readable_chunks(Path(path), _read_meta(Path(path)), columns=["path", "sha256"])
    for table in tables:
        seen.update(dict.fromkeys(table.column("path").to_pylist()))
    return list(seen)


class StoreWriter:
    """Append side of a store: buffers rows and saves them as Parquet chunks.

    Opening an existing store checks that it was made by the same branches with the same
    parameters (``branches`` provenance); otherwise :class:`StoreMismatchError` unless
    ``overwrite``, which deletes the store's own files (and nothing else) first. The writer holds
    the store's lock from opening to :meth:`close`; a second writer waits for it.

    Rows are saved every ``checkpoint_rows`` rows or ``checkpoint_seconds`` seconds, whichever
    comes first; :meth:`close` merges the chunks this writer saved into chunks of ``chunk_size``
    rows (see the module docstring for the measured costs). :meth:`add_table` saves a whole
    table at once (an import). ``extra_metadata``: more provenance fields, such as the
    ``imported`` record of :mod:`stylecluster.importer`.
    """

    def __init__(
        self,
        path: str | Path,
        branches: dict[str, dict[str, Any]],
        dims: dict[str, int],
        parts: dict[str, dict[str, tuple[int, int]]],
        images_root: str | None = None,
        chunk_size: int = 512,
        overwrite: bool = False,
        seed: int = 0,
        checkpoint_rows: int = 64,
        checkpoint_seconds: float = 30.0,
        extra_metadata: dict[str, Any] | None = None,
    ):
        from filelock import FileLock, Timeout

        self.path = Path(path)
        self.chunk_size = max(1, int(chunk_size))
        self.checkpoint_rows = max(1, min(int(checkpoint_rows), self.chunk_size))
        self.checkpoint_seconds = float(checkpoint_seconds)
        self._buffer: list[dict[str, Any]] = []
        self._saved: list[Path] = []  # checkpoint chunks of this writer, merged by close()
        self._last_save = time.monotonic()
        self.set_aside_chunks: list[str] = []  # names of the unreadable chunks moved to _corrupt/
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        new_meta = {
            "format_version": FORMAT_VERSION,
            "stylecluster_version": __version__,
            "branches": branches,
            "dims": dims,
            "parts": {c: {k: list(v) for k, v in p.items()} for c, p in parts.items()},
            # the per-image seeds (patch draws) derive from it, so it decides the vectors too
            "embed": {"seed": int(seed)},
            "images_root": images_root,
            "created": now,
            "updated": now,
            **(extra_metadata or {}),
        }
        refuse_foreign_folder(self.path)  # before anything is created in it
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(str(OutputError(self.path, exc))) from None
        self._lock = FileLock(str(self.path / LOCK_FILE))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            log.warning("%s: another process is writing this store; waiting for it to finish (Ctrl-C to stop)", printable(self.path))
            self._lock.acquire()
        except OSError as exc:
            raise StoreError(str(OutputError(self.path / LOCK_FILE, exc))) from None
        try:
            self._open(new_meta, overwrite, now)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, new_meta: dict[str, Any], overwrite: bool, now: str) -> None:
        refuse_foreign_folder(self.path)  # again, under the lock: another writer may have made it meanwhile
        if store_entries(self.path):
            old_meta = _read_meta(self.path)
            fingerprint = ("format_version", "branches", "dims", "parts", "embed")
            diffs = _describe_difference({k: old_meta.get(k) for k in fingerprint}, {k: new_meta[k] for k in fingerprint})
            if diffs and not overwrite:
                raise StoreMismatchError(
                    f"{printable(self.path)}: store was made with another model or configuration ({'; '.join(diffs)}); "
                    "use --overwrite to replace it, or another --out"
                )
            if diffs or overwrite:
                self._delete_own_files()
            else:
                new_meta["created"] = old_meta.get("created", now)
        self.metadata = new_meta
        self._write_meta()
        self._schema = _schema(new_meta)
        self._next_chunk = max((_chunk_number(f) for f in _chunk_files(self.path)), default=-1) + 1

    def _delete_own_files(self) -> None:
        for f in own_files(self.path):
            f.unlink(missing_ok=True)

    def _write_meta(self) -> None:
        save_atomic(self.path / META_FILE, json.dumps(self.metadata, indent=2))

    def existing(self) -> tuple[dict[str, str], dict[str, StoredRow]]:
        """What the store holds readably: {path: sha256} and {sha256: first row with that content}.

        Unreadable chunks are moved to ``_corrupt/`` (one warning each), so their images count as
        missing and are embedded again.
        """
        if not _chunk_files(self.path):
            return {}, {}
        store = EmbeddingStore(self.path)
        for f, reason in store.unreadable:
            self.set_aside(f, reason)
        columns = {c: store.vectors(c) for c, d in self.metadata["dims"].items() if d}
        table = store.to_pandas()[["path", "sha256", "width", "height"]]
        by_path, by_sha = {}, {}
        for i, (path, sha, width, height) in enumerate(table.itertuples(index=False)):
            by_path[path] = sha
            if sha not in by_sha:
                by_sha[sha] = StoredRow(path, int(width), int(height), {c: m[i] for c, m in columns.items()})
        return by_path, by_sha

    def set_aside(self, chunk: Path, reason: str) -> Path:
        """Move an unreadable chunk to ``_corrupt/`` (kept for inspection, never read again)."""
        folder = self.path / CORRUPT_DIR
        folder.mkdir(exist_ok=True)
        target = folder / chunk.name
        n = 1
        while target.exists():
            target, n = folder / f"{chunk.stem}.{n}{chunk.suffix}", n + 1
        os.replace(chunk, target)
        self.set_aside_chunks.append(chunk.name)
        log.warning("%s: chunk %s is unreadable (%s); moved to %s/, its images are embedded again",
                    printable(self.path), printable(chunk.name), reason, CORRUPT_DIR)
        return target

    def add(self, path: str, sha256: str, width: int, height: int, vectors: dict[str, np.ndarray], duplicate_of: str | None = None) -> None:
        row = {"path": path, "sha256": sha256, "width": int(width), "height": int(height), "duplicate_of": duplicate_of}
        for column in self._schema.names[5:]:
            row[column] = np.asarray(vectors[column], dtype=np.float32)
        self._buffer.append(row)
        if len(self._buffer) >= self.checkpoint_rows or time.monotonic() - self._last_save >= self.checkpoint_seconds:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        """Save rows given as a table with the store's columns (a bulk import) as chunks of up to
        ``chunk_size`` rows, after whatever :meth:`add` buffered."""
        self.flush()
        table = table.select(self._schema.names).cast(self._schema)
        for start in range(0, table.num_rows, self.chunk_size):
            self._saved.append(self._save_chunk(table.slice(start, self.chunk_size)))
        self.metadata["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._write_meta()

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        columns = {}
        for field in self._schema:
            values = [r[field.name] for r in rows]
            if pa.types.is_fixed_size_list(field.type):
                flat = pa.array(np.concatenate(values).astype(np.float32, copy=False))
                columns[field.name] = pa.FixedSizeListArray.from_arrays(flat, field.type.list_size)
            else:
                columns[field.name] = pa.array(values, type=field.type)
        return pa.table(columns, schema=self._schema)

    def _save_chunk(self, table: pa.Table) -> Path:
        final = self.path / f"part-{self._next_chunk:06d}.parquet"
        save_atomic(final, lambda tmp: pq.write_table(table, tmp))
        self._next_chunk += 1
        return final

    def flush(self) -> None:
        """Save the buffered rows as one chunk now."""
        self._last_save = time.monotonic()
        if not self._buffer:
            return
        self._saved.append(self._save_chunk(self._table(self._buffer)))
        self._buffer.clear()
        self.metadata["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._write_meta()

    def _merge_saved(self) -> None:
        """Rewrite this writer's checkpoint chunks as chunks of ``chunk_size`` rows.

        The merged chunks are numbered after the checkpoints, so until the checkpoints are
        deleted their rows are merely duplicated (same path, same vectors); a failure (a full
        disk) removes the merged chunks written so far and keeps the checkpoints.
        """
        rows = sum(pq.read_metadata(f).num_rows for f in self._saved)
        if -(-rows // self.chunk_size) >= len(self._saved):
            return
        table = pa.concat_tables([pq.read_table(f) for f in self._saved])
        merged: list[Path] = []
        try:
            for start in range(0, table.num_rows, self.chunk_size):
                merged.append(self._save_chunk(table.slice(start, self.chunk_size)))
        except OutputError as exc:
            for f in merged:
                f.unlink(missing_ok=True)
            log.warning("%s: kept %d small chunks, could not merge them (%s)", printable(self.path), len(self._saved), exc)
            return
        for f in self._saved:
            f.unlink(missing_ok=True)
        self._saved = merged

    def write_skipped(self, skipped: Iterable[tuple[str, str]]) -> None:
        """``_skipped.csv``: (path, reason) rows, control characters and bytes that are not UTF-8
        escaped as in log lines (:func:`~stylecluster.io.printable`; such a path made the CSV
        writer raise)."""
        frame = pd.DataFrame([(printable(path), printable(reason)) for path, reason in skipped], columns=["path", "reason"])
        save_atomic(self.path / SKIPPED_FILE, lambda tmp: frame.to_csv(tmp, index=False))

    def close(self) -> None:
        """Save what is buffered, merge this writer's chunks and release the store's lock."""
        try:
            self.flush()
            self._merge_saved()
        finally:
            self._lock.release()
