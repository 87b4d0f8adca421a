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
stored as fixed-size float32 (or float16: ``embed.dtype``, ``import --dtype``) lists without any
custom encoding, and appending a chunk never rewrites earlier ones — which is what makes resuming
cheap and crash-safe. Reading never needs the whole store in memory: :class:`EmbeddingStore`
holds the paths and reads vectors a chunk at a time (ten million rows: ``benchmarks/scale.py``).

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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._version import __version__
from .errors import InputError, StyleclusterError
from .io import OutputError, printable, save_atomic

log = logging.getLogger("stylecluster")

META_FILE = "_stylecluster.json"
SKIPPED_FILE = "_skipped.csv"
LOCK_FILE = "_stylecluster.lock"
CORRUPT_DIR = "_corrupt"
FORMAT_VERSION = 1
VECTOR_COLUMNS = ("global", "local")
#: Vector parts that come out of a head trained so that their distances mean style (features/
#: branch.py): fusion keeps their geometry instead of whitening it.
METRIC_PARTS = frozenset({"style"})


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


#: The element types a stored vector may have (``embed.dtype`` / ``import --dtype``): float32, or
#: float16 for collections of millions (half the disk and read time; see :func:`resolve_dtype`).
VECTOR_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
#: Rows from which ``auto`` stores vectors as float16. Measured on wikiart-styles' 9,521 raw
#: 6,560-d vectors (``benchmarks/store_dtype.py``): half the disk (118 against 242 MB), fused
#: vectors at cosine 1.000, clusters moved no more than another seed moves them (BGMM ARI 0.717 to
#: float32's against 0.732 for seed 1; k-means 0.500 against 0.489; NMI within the seeds'
#: spread), but Parquet decodes float16 slower (8.0 against 5.2 s to read it all on a busy
#: machine). Ten million default rows are 12.8 GB in float32 and 6.4 GB in float16, which fits
#: this 24 GB machine's page cache beside the run; below a million the float32 store is small
#: and reads faster.
FLOAT16_FROM_ROWS = 1_000_000


#: Below this cosine to torch fp32's vectors, a compiled runtime's vectors are not torch's
#: (features/runtime.py checks every branch it compiles against it).
MIN_COSINE = 0.99


def check_compatible(recorded: dict | None, new: dict | None, where: str) -> None:
    """InputError when two stores' vectors may differ beyond tolerance: either was computed by a
    runtime (the store's ``runtime`` record) whose check fell below :data:`MIN_COSINE` on a
    branch, and the runtimes differ. Runtimes that passed the check mix freely (their vectors
    agree with torch's to >= 0.99); a store without a record was made by torch fp32."""
    torch_fp32 = {"engine": "torch", "precision": "fp32", "min_cosine": 1.0}
    recorded, new = recorded or {}, new or {}
    for name in sorted(set(recorded) | set(new)):
        a, b = recorded.get(name, torch_fp32), new.get(name, torch_fp32)
        if (a.get("engine"), a.get("precision")) == (b.get("engine"), b.get("precision")):
            continue
        worst = min(float(a.get("min_cosine", 1.0)), float(b.get("min_cosine", 1.0)))
        if worst < MIN_COSINE:
            raise InputError(f"{where}: its {name} vectors were computed by {b.get('engine')} {b.get('precision')}, the clustering's by "
                             f"{a.get('engine')} {a.get('precision')}, and one of them agrees with torch only to cosine {worst:.3f} "
                             f"(< {MIN_COSINE}); embed both with the same --runtime")


def resolve_dtype(requested: str, rows: int, store: str | Path | None = None) -> str:
    """The vector dtype for a store of about ``rows`` images: ``requested``, or for ``auto`` the
    existing ``store``'s (a run resuming into it) else float16 from :data:`FLOAT16_FROM_ROWS`
    rows and float32 below."""
    if requested == "auto":
        if store is not None and is_store(store):
            try:
                return _read_meta(Path(store)).get("vector_dtype", "float32")
            except StoreError:
                pass
        return "float16" if rows >= FLOAT16_FROM_ROWS else "float32"
    if requested not in VECTOR_DTYPES:
        raise StoreError(f"vectors are stored as auto, {' or '.join(VECTOR_DTYPES)}, not {requested!r}")
    return requested


def read_chunk(file: Path, metadata: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
    """One chunk (only ``columns`` when given), checked against the store's metadata from the
    chunk's footer before anything is read; :class:`ChunkError` when unusable."""
    try:
        parquet = pq.ParquetFile(file)
        schema = parquet.schema_arrow
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise ChunkError(f"not readable as Parquet ({printable(exc)})") from None
    text = (pa.string(), pa.large_string())
    expected = {"path": text, "sha256": text}
    expected.update({column: tuple(pa.list_(kind, dim) for kind in VECTOR_DTYPES.values())
                     for column, dim in metadata.get("dims", {}).items() if dim})
    for name, kinds in expected.items():
        if name not in schema.names:
            raise ChunkError(f"no {name!r} column")
        if schema.field(name).type not in kinds:
            raise ChunkError(f"column {name!r} is {schema.field(name).type}, expected {kinds[0]}")
    try:
        return parquet.read(columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise ChunkError(f"not readable as Parquet ({printable(exc)})") from None


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


def vector_matrix(table: pa.Table, column: str, dim: int, where: Any = "the store") -> np.ndarray:
    """(rows, dim) float32 matrix of a vector column of a chunk's table (float16 widened)."""
    col = table.column(column).combine_chunks()
    if col.null_count:
        raise StoreError(f"{printable(where)}: {col.null_count} rows have no {column} vector")
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(table.num_rows, dim)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / META_FILE).read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: not a stylecluster store (no {META_FILE})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable store metadata: {exc}") from None


def is_store(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


@dataclass(frozen=True)
class Chunk:
    """One chunk file as the store reads it: the unit of row-parallel work."""

    file: Path
    kept: np.ndarray | None  # rows of the file that are the store's (None: all of them)
    start: int  # store row of its first kept row
    rows: int  # kept rows


_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def string_buffers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Arrow's own layout of a string array, without a copy: the offsets of its strings (their
    ``len + 1`` bounds, int32 or int64 as stored) into its UTF-8 bytes (uint8)."""
    width = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    _, offsets, data = strings.buffers()
    offsets = np.frombuffer(offsets, dtype=width)[strings.offset : strings.offset + len(strings) + 1]
    return offsets, np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)


def path_hashes(paths: pa.Array) -> np.ndarray:
    """64-bit FNV-1a of each string's UTF-8 bytes, computed on Arrow's buffers (no Python object
    per path): one pass per character position over the strings at least that long."""
    offsets, data = string_buffers(paths)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets).astype(np.int64)
    hashes = np.full(len(paths), _FNV_OFFSET, dtype=np.uint64)
    rows = np.arange(len(paths))
    for position in range(int(lengths.max(initial=0))):
        rows = rows[lengths[rows] > position]
        hashes[rows] = (hashes[rows] ^ data[starts[rows] + position]) * _FNV_PRIME
    return hashes


def later_rows(paths: pa.Array, hashes: np.ndarray, batch_rows: int = 1_000_000) -> np.ndarray | None:
    """The rows of ``paths`` to keep so that a path that repeats is its later row; None when
    every path is unique. ``hashes``: :func:`path_hashes` of ``paths``.

    Rows whose hash repeats are candidates; each is compared as text, ``batch_rows`` at a time,
    with the last row of its hash, which it is when the path repeats (the only case but for a
    64-bit collision, settled by grouping those few rows' text). 8 bytes a row and a batch of
    text: Arrow's ``count_distinct`` and ``group_by`` over every path kept ~0.8 GB resident at
    ten million rows (the store opened with a 1.4-1.5 GB peak, 1.0 GB with the hashes), and a
    store of ten million paths each embedded twice took 4.4 GB to open when every candidate was
    grouped (benchmarks/RESULTS.md, "Ten million rows").
    """
    order = np.argsort(hashes, kind="stable")  # one hash's rows stay in row order
    ordered = hashes[order]
    first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    last = np.concatenate([first[1:], [True]])
    del ordered
    shared = ~(first & last)
    if not shared.any():
        return None
    candidates, ends = order[shared], last[shared]
    del order, first, last, shared
    group = np.cumsum(np.concatenate([[False], ends[:-1]]))  # each candidate's hash group, 0, 1, ...
    survivor = candidates[np.flatnonzero(ends)][group]  # the last row of that group
    same = np.empty(len(candidates), dtype=bool)
    for start in range(0, len(candidates), batch_rows):
        rows = slice(start, start + batch_rows)
        same[rows] = pc.equal(paths.take(pa.array(candidates[rows])), paths.take(pa.array(survivor[rows]))).to_numpy(zero_copy_only=False)
    superseded = candidates[same & (candidates != survivor)]
    collided = np.isin(group, np.unique(group[~same]))
    if collided.any():  # hashes shared by different paths: their rows grouped by text
        rows = candidates[collided]
        kept = pa.table({"path": paths.take(pa.array(rows)), "row": pa.array(rows)}).group_by("path").aggregate([("row", "max")])
        superseded = np.concatenate([superseded, np.setdiff1d(rows, kept.column("row_max").to_numpy())])
    if not len(superseded):
        return None
    keep = np.ones(len(paths), dtype=bool)
    keep[superseded] = False
    return np.flatnonzero(keep)


def concat_strings(columns: list[pa.Array]) -> pa.Array:
    """One string array of ``columns``; large_string when the bytes pass string's 2 GB offsets."""
    text = sum(int(c.buffers()[2].size) if c.buffers()[2] is not None else 0 for c in columns)
    kind = pa.large_string() if text >= 2**31 - 1 else pa.string()
    if not columns:
        return pa.array([], kind)
    return pa.concat_arrays([c.cast(kind) for c in columns])


class EmbeddingStore:
    """Read side of a store: the paths in memory, the vectors read from the chunks when asked.

    Opening a store reads only its ``path`` column (and each chunk's footer, to check it), so a
    store of ten million images opens in the memory of its paths; :meth:`iter_vectors` and
    :meth:`iter_chunks` then read a chunk at a time, :meth:`take_vectors` only the chunks that
    hold the rows asked for. :meth:`vectors` (one column whole) and :meth:`to_pandas` read
    everything, for collections that fit in memory. Rows are in chunk order; a path embedded
    twice (its file changed between runs) is one row, the later one. Vectors come back as
    float32 whether they are stored as float32 or float16.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata: dict[str, Any] = _read_meta(self.path)
        self.unreadable: list[tuple[Path, str]] = []
        files, path_columns = [], []
        for f in _chunk_files(self.path):
            try:
                path_columns.append(read_chunk(f, self.metadata, columns=["path"]).column("path").cast(pa.string()).combine_chunks())
            except FileNotFoundError:  # merged away by a writer since the folder was listed
                continue
            except ChunkError as exc:
                self.unreadable.append((f, str(exc)))
                continue
            files.append(f)
        for f, reason in self.unreadable:
            log.warning("%s: skipped an unreadable chunk (%s); `stylecluster embed` into this store sets it aside and embeds its images again",
                        printable(f), reason)
        sizes = np.array([len(column) for column in path_columns], dtype=np.int64)
        hashes = np.concatenate([path_hashes(column) for column in path_columns]) if path_columns else np.zeros(0, np.uint64)
        self._paths = concat_strings(path_columns)
        del path_columns
        keep = later_rows(self._paths, hashes)
        del hashes
        if keep is not None:
            self._paths = self._paths.take(pa.array(keep))
        pa.default_memory_pool().release_unused()  # the chunks' path columns, freed: ~0.25 GB at ten million rows
        self._chunks: list[Chunk] = []
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        start = 0
        for i, f in enumerate(files):
            if keep is None:
                kept, rows = None, int(sizes[i])
            else:
                kept = keep[np.searchsorted(keep, bounds[i]):np.searchsorted(keep, bounds[i + 1])] - bounds[i]
                kept, rows = (None if len(kept) == sizes[i] else kept), len(kept)
            if rows:
                self._chunks.append(Chunk(f, kept, start, rows))
            start += rows
        self._starts = np.array([c.start for c in self._chunks], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        dims = {c: self.dim(c) for c in VECTOR_COLUMNS if self.dim(c)}
        return f"EmbeddingStore({str(self.path)!r}, n={len(self)}, dims={dims})"

    @property
    def paths(self) -> list[str]:
        return self._paths.to_pylist()

    @property
    def path_array(self) -> pa.Array:
        """The paths as one Arrow string array (no Python object per path)."""
        return self._paths

    @property
    def sha256(self) -> list[str]:
        return pa.chunked_array([t.column("sha256").cast(pa.string()) for _, t in self.iter_chunks(["sha256"])], type=pa.string()).to_pylist()

    @property
    def vector_dtype(self) -> str:
        """How the vectors are stored ("float32" or "float16"); they are read as float32."""
        return self.metadata.get("vector_dtype", "float32")

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
        if self.dim(column) == 0:
            return None
        out = np.empty((len(self), self.dim(column)), dtype=np.float32)
        for start, table in self.iter_chunks([column]):
            out[start : start + table.num_rows] = self._matrix(table, column)
        return out

    def _matrix(self, table: pa.Table, column: str) -> np.ndarray:
        return vector_matrix(table, column, self.dim(column), self.path)

    def read(self, chunk: Chunk, columns: list[str]) -> pa.Table:
        """The store's rows of one chunk (``columns`` only)."""
        try:
            table = read_chunk(chunk.file, self.metadata, columns)
        except (FileNotFoundError, ChunkError) as exc:
            raise StoreError(f"{printable(chunk.file)}: changed while the store was read ({printable(exc)}); run again") from None
        return table if chunk.kept is None else table.take(pa.array(chunk.kept))

    @property
    def chunks(self) -> list[Chunk]:
        """The chunks that hold the store's rows, in store order."""
        return list(self._chunks)

    def iter_chunks(self, columns: Sequence[str]) -> Iterator[tuple[int, pa.Table]]:
        """(store row of its first row, table of ``columns``) for each chunk, in store order —
        the unit of row-parallel work (an engine's task is a chunk)."""
        for chunk in self._chunks:
            yield chunk.start, self.read(chunk, list(columns))

    def iter_vectors(self, columns: Sequence[str], batch_rows: int = 65_536) -> Iterator[np.ndarray]:
        """The vectors of ``columns`` side by side, ``batch_rows`` rows at a time: (b, sum of
        dims) float32 matrices, in store order. Chunks are read one after another, so the memory
        is one batch and one chunk, whatever the store's size."""
        batch_rows, pending, held = max(1, int(batch_rows)), [], 0
        for _, table in self.iter_chunks(columns):
            pending.append(np.hstack([self._matrix(table, column) for column in columns]))
            held += len(pending[-1])
            while held >= batch_rows:
                block = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield block[:batch_rows]
                pending, held = [block[batch_rows:]], held - batch_rows
        if held:
            yield np.concatenate(pending) if len(pending) > 1 else pending[0]

    def take_vectors(self, columns: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """The vectors of ``columns`` side by side for the given rows only (e.g. a subsample to
        fit on), reading only the chunks that hold them."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside the store's {len(self)}")
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        out = np.empty((len(rows), sum(self.dim(c) for c in columns)), dtype=np.float32)
        owner = np.searchsorted(self._starts, wanted, side="right") - 1
        bounds = np.flatnonzero(np.diff(owner)) + 1
        for piece in np.split(np.arange(len(wanted)), bounds) if len(wanted) else []:
            chunk = self._chunks[owner[piece[0]]]
            table = self.read(chunk, list(columns)).take(pa.array(wanted[piece] - chunk.start))
            out[order[piece]] = np.hstack([self._matrix(table, column) for column in columns])
        return out

    def to_pandas(self) -> pd.DataFrame:
        """Every column of every row (reads the whole store: for collections that fit in memory)."""
        tables = [table for _, table in self.iter_chunks(_schema(self.metadata).names)]
        return (pa.concat_tables(tables, promote_options="default") if tables else _empty_table(self.metadata)).to_pandas()


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
    kind = VECTOR_DTYPES[metadata.get("vector_dtype", "float32")]
    for column in VECTOR_COLUMNS:
        dim = metadata["dims"].get(column, 0)
        if dim:
            fields.append(pa.field(column, pa.list_(kind, dim)))
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
        vector_dtype: str = "float32",
    ):
        from filelock import FileLock, Timeout

        if vector_dtype not in VECTOR_DTYPES:
            raise StoreError(f"vectors are stored as {' or '.join(VECTOR_DTYPES)}, not {vector_dtype!r}")

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
            "vector_dtype": vector_dtype,
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
            fingerprint = ("format_version", "branches", "dims", "parts", "embed", "vector_dtype")
            old = {k: old_meta.get(k, "float32" if k == "vector_dtype" else None) for k in fingerprint}
            diffs = _describe_difference(old, {k: new_meta[k] for k in fingerprint})
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
        self._dtype = np.dtype(new_meta["vector_dtype"])
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
            row[column] = np.asarray(vectors[column], dtype=self._dtype)
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
                flat = pa.array(np.concatenate(values).astype(self._dtype, copy=False))
                columns[field.name] = pa.FixedSizeListArray.from_arrays(flat, field.type.list_size)
            else:
                columns[field.name] = pa.array(values, type=field.type)
        return pa.table(columns, schema=self._schema)

    def _save_chunk(self, table: pa.Table) -> Path:
        final = self.path / f"part-{self._next_chunk:06d}.parquet"
        # No dictionary encoding: vectors and paths do not repeat, and a dictionary-encoded float16
        # column read 7x slower (1.17 s against 0.16 s for 16,384 x 256; float32 0.18 against 0.12).
        save_atomic(final, lambda tmp: pq.write_table(table, tmp, use_dictionary=False))
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
