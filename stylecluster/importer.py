"""Bring your own embeddings: vectors made elsewhere (CLIP, DINO, a museum's own model) as a store.

``import_vectors("vectors.parquet", "art.store")`` reads a Parquet file with a ``path`` column
(text) and a ``vector`` column (a list of floats per row), or a ``.npy`` matrix (n x d, any float
or integer type) with a text file of n paths, one per line; it writes a normal embedding store
(:mod:`stylecluster.store`) that ``cluster``, ``assign``, ``evaluate``, ``plot``, ``report`` and
``similar`` read like any other:

* the vectors are the store's ``global`` column, of one part named ``imported``; fusion treats
  them as it treats any part (L2-normalised, PCA-whitened to at most 64 dimensions);
* the provenance has no branches (nothing to rebuild) and an ``imported`` record: the source
  file's name and sha256 (and the paths file's), its format, the dimension and the time. Two
  imported stores of the same dimension count as made the same way (``assign`` accepts one for
  the other's clustering): what model made the vectors is known only to the user;
* the ``sha256`` column, a content hash for embedded images, holds the sha256 of the *path* for
  imported rows (the images were never read): it stays a unique key for thumbnails, and a report
  shows no brush-stroke patches, which would need the local branch;
* ``images_root`` is optional: with it, maps and reports show thumbnails of the images.

Rows that cannot be used — an empty path, a path that breaks the rule of
:mod:`stylecluster.data.image_paths` (control characters or bytes that are not UTF-8, absolute,
``..``; with ``images_root``, not a regular file under it), a missing or empty vector, a vector of
the wrong length, NaN or infinite values (after conversion to float32), a path already imported —
are left out with one
warning line each naming the row (counted from 0, as ``pandas``/``numpy`` index it) and the
problem (at most :data:`LISTED_BAD_ROWS` lines; all of them are in ``STORE/_skipped.csv``). The
dimension is the Parquet column's fixed size, the ``.npy``'s width, or else the most common
vector length of the first batch.

Memory and speed: the input is streamed in batches of :data:`BATCH_ROWS` rows — Parquet through
``iter_batches`` without pre-buffering (pre-buffered, one 100k-row row group held ~250 MB of Arrow
memory, without ~30 MB), a ``.npy`` through plain reads at the rows' offsets (slices of
``np.load(mmap_mode="r")`` leave every page read resident, the whole matrix in RSS by the end) —
so memory is one row group of the input, one batch, and the paths seen, for duplicates: 24 bytes
a path (:class:`_SeenPaths`; as a dict of strings the peak grew by ~100-220 MB from 100k to 1M
rows in the table below, 1.2 GB from 1M to 10M). The store is written in chunks of :data:`CHUNK_ROWS` rows, not the embedder's 512:
for 100k x 192 imported from ``.npy``, 512-row chunks made 196 files, a 12-14 s import and a
5.2-5.6 s ``load_store``; 16,384-row chunks 7 files, 3.4-8.1 s and 1.4-2.9 s (two runs each,
machine busy). Measured by ``benchmarks/import_index.py`` on this 2-core machine under a load
average of ~10 (other jobs running), each import in its own process, peak RSS its ``VmHWM``
(~190 MB of it is Python with numpy, pandas, pyarrow and scikit-learn loaded):

    =====================  =======  ============  =====================
    input                  seconds  peak RSS      ``load_store`` after
    =====================  =======  ============  =====================
    Parquet 100k x 192       5.0     453 MB         1.5 s
    ``.npy`` 100k x 192      4.6     354 MB         1.2 s
    Parquet 1M x 192        66.0     652 MB        22.8 s
    ``.npy`` 1M x 192       22.9     446 MB         9.5 s
    =====================  =======  ============  =====================

The store is built in a hidden folder beside ``out`` and put in place only when complete
(:func:`stylecluster.io.staged_folder`): a failed import leaves no half store, and an existing
store is replaced only with ``overwrite`` (and not while another process writes it) — its own
files only (:func:`stylecluster.store.install_store`: whatever else the folder holds stays). An
``out`` that holds the import's own input is refused.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import InputError, MissingInputError
from .hashing import file_sha256
from .data.decode import BadImage
from .data.image_paths import image_file, path_problem
from .io import check_not_input, check_writable, printable, staged_folder
from .store import LOCK_FILE, StoreWriter, install_store, is_store, refuse_foreign_folder, resolve_dtype, store_entries

log = logging.getLogger("stylecluster")

#: Rows read and checked at a time (a batch of 192-float rows is ~13 MB as float32).
BATCH_ROWS = 16_384
#: Rows per chunk of an imported store (module docstring: why not the embedder's 512).
CHUNK_ROWS = 16_384
#: Bad rows named on their own line; the rest are counted (all are in ``_skipped.csv``).
LISTED_BAD_ROWS = 100
#: The one part of an imported store's ``global`` column.
IMPORTED_PART = "imported"


def imported_from(store) -> dict | None:
    """The ``imported`` provenance record of a store whose vectors came from outside, else None."""
    record = getattr(store, "metadata", {}).get("imported")
    return record if isinstance(record, dict) else None


def path_key(path: str) -> str:
    """What an imported row holds in the ``sha256`` column: the sha256 of its path."""
    return _path_digest(path).hex()


def _path_digest(path: str) -> bytes:
    # surrogatepass: any str encodes, so a batch's bad rows are hashed before they are judged
    # (the rows stored are UTF-8, for which every error handler gives the same bytes)
    return hashlib.sha256(path.encode("utf-8", "surrogatepass")).digest()


@dataclass
class _Batch:
    start: int  # row number of the first row
    paths: list[str | None]
    lengths: np.ndarray  # values per row, -1 where the vector is missing
    vectors: np.ndarray  # (rows whose length is dim, dim) float32, in row order


@dataclass
class ImportReport:
    store: Path
    source: Path
    dim: int
    rows_read: int
    rows_stored: int
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (row, path, problem)
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        lines = [f"imported {self.rows_stored:,} of {self.rows_read:,} rows of {printable(self.source)} "
                 f"({self.dim} dimensions) into {printable(self.store)} in {self.seconds:.1f} s"]
        if self.skipped:
            lines.append(f"left out {len(self.skipped):,} bad rows, listed in {printable(self.store / '_skipped.csv')}")
        return lines


class _Source:
    """One input format: its size, its dimension if fixed, and its rows in batches."""

    format: str
    rows: int
    fixed_dim: int | None

    def batches(self, batch_rows: int, dim_of) -> Iterator[_Batch]:
        raise NotImplementedError

    def provenance(self) -> dict:
        raise NotImplementedError


class _ParquetSource(_Source):
    format = "parquet"

    def __init__(self, file: Path):
        self.file = file
        try:
            # without pre-buffering, a batch holds ~30 MB of Arrow memory instead of ~250 MB (a 100k-row row group)
            self.parquet = pq.ParquetFile(file, pre_buffer=False)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{printable(file)}: not readable as Parquet ({printable(exc)})") from None
        schema = self.parquet.schema_arrow
        for name in ("path", "vector"):
            if name not in schema.names:
                raise InputError(f"{printable(file)}: no {name!r} column (has {', '.join(map(repr, schema.names))})")
        path_type, vector_type = schema.field("path").type, schema.field("vector").type
        if not (pa.types.is_string(path_type) or pa.types.is_large_string(path_type)):
            raise InputError(f"{printable(file)}: column 'path' is {path_type}, expected text")
        lists = (pa.types.is_list(vector_type) or pa.types.is_large_list(vector_type) or pa.types.is_fixed_size_list(vector_type))
        if not lists or not (pa.types.is_floating(vector_type.value_type) or pa.types.is_integer(vector_type.value_type)):
            raise InputError(f"{printable(file)}: column 'vector' is {vector_type}, expected a list of numbers per row")
        self.fixed_dim = vector_type.list_size if pa.types.is_fixed_size_list(vector_type) else None
        self.rows = self.parquet.metadata.num_rows

    def batches(self, batch_rows: int, dim_of) -> Iterator[_Batch]:
        start = 0
        batches = self.parquet.iter_batches(batch_size=batch_rows, columns=["path", "vector"], use_threads=False)
        while True:
            try:  # a damaged data page surfaces only when its batch is read
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"{printable(self.file)}: cannot read rows from {start:,} on ({printable(exc)})") from None
            vector = batch.column("vector")
            lengths = pc.list_value_length(vector).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            dim = dim_of(lengths)
            usable = vector.filter(pa.array(lengths == dim))
            flat = usable.flatten().to_numpy(zero_copy_only=False)  # missing values become NaN, refused as such
            with np.errstate(over="ignore"):  # values beyond float32 become inf, and their rows are refused as such
                vectors = np.asarray(flat, dtype=np.float32).reshape(-1, dim) if dim else np.empty((0, 0), np.float32)
            yield _Batch(start, batch.column("path").to_pylist(), lengths, vectors)
            start += batch.num_rows

    def provenance(self) -> dict:
        return {"source": self.file.name, "source_sha256": file_sha256(self.file), "format": self.format}


class _NpySource(_Source):
    format = "npy"

    def __init__(self, file: Path, paths_file: Path):
        self.file, self.paths_file = file, paths_file
        try:
            self.matrix = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{printable(file)}: not readable as a numeric .npy matrix ({printable(exc)})") from None
        if self.matrix.ndim != 2 or not (np.issubdtype(self.matrix.dtype, np.floating) or np.issubdtype(self.matrix.dtype, np.integer)):
            raise InputError(f"{printable(file)}: holds a {self.matrix.dtype} array of shape {self.matrix.shape}, expected (rows, dimensions) numbers")
        self.rows, self.fixed_dim = int(self.matrix.shape[0]), int(self.matrix.shape[1])
        if self.fixed_dim == 0:
            raise InputError(f"{printable(file)}: its rows have 0 values (shape {self.matrix.shape}); nothing to import")
        with open(paths_file, encoding="utf-8", errors="surrogateescape", newline="") as f:
            lines = sum(1 for _ in f)
        if lines != self.rows:
            raise InputError(f"{printable(paths_file)}: {lines:,} lines, but {printable(file)} has {self.rows:,} rows; one path per row")

    def batches(self, batch_rows: int, dim_of) -> Iterator[_Batch]:
        with open(self.paths_file, encoding="utf-8", errors="surrogateescape", newline="") as f:
            lines = (line.rstrip("\r\n") for line in f)
            for start in range(0, self.rows, batch_rows):
                stop = min(start + batch_rows, self.rows)
                paths = [next(lines) for _ in range(stop - start)]
                with np.errstate(over="ignore"):
                    vectors = np.asarray(self._rows(start, stop), dtype=np.float32)
                yield _Batch(start, paths, np.full(stop - start, self.fixed_dim), vectors)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` read from the file: slicing the memory map would keep every page read
        resident (the whole matrix in RSS by the end), a read keeps one batch."""
        matrix = self.matrix
        if not matrix.flags.c_contiguous:  # a Fortran-order file: rows are not contiguous on disk
            return matrix[start:stop]
        width = matrix.shape[1]
        return np.fromfile(self.file, dtype=matrix.dtype, count=(stop - start) * width,
                           offset=matrix.offset + start * width * matrix.dtype.itemsize).reshape(-1, width)

    def provenance(self) -> dict:
        return {"source": self.file.name, "source_sha256": file_sha256(self.file), "format": self.format,
                "paths_file": self.paths_file.name, "paths_sha256": file_sha256(self.paths_file)}


def open_source(source: str | Path, paths: str | Path | None = None) -> _Source:
    """The reader for ``source``: Parquet, or ``.npy`` with its paths file."""
    source = Path(source)
    if not source.is_file():
        raise MissingInputError(f"{printable(source)}: no such file")
    if source.suffix.lower() == ".npy":
        if paths is None:
            raise InputError(f"{printable(source)}: a .npy matrix has no paths; pass its paths file (--paths FILE, one path per row)")
        if not Path(paths).is_file():
            raise MissingInputError(f"{printable(paths)}: no such file")
        return _NpySource(source, Path(paths))
    if paths is not None:
        raise InputError(f"{printable(source)}: --paths is for a .npy matrix; a Parquet file names its rows in its 'path' column")
    return _ParquetSource(source)


def check_store_output(out: str | Path, overwrite: bool) -> Path:
    """Raise unless a store may be written at ``out``: an existing store is replaced only with
    ``overwrite``; a folder that is not a store is never touched."""
    out = Path(out)
    refuse_foreign_folder(out)
    if store_entries(out) and not overwrite:
        raise InputError(f"{printable(out)}: a store exists there; pass --overwrite to replace it, or choose another --out")
    check_writable(out.parent / f".{out.name}.staging", folder=True)
    return out


class _SeenPaths:
    """The paths imported so far, kept as the first 128 bits of each path's sha256 (two uint64)
    and the row it came from: 24 bytes a path. A dict of the path strings took ~1.2 GB of the
    import's 1.9 GB peak at ten million rows (benchmarks/scale.py).

    The keys are held in sorted runs that merge when a newer run is as long as the one before it
    (a log-structured merge: at most log2(rows) runs, each row sorted ~log2(rows) times), so a
    batch is looked up with ``searchsorted`` and no run is rebuilt per batch.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (first 64 bits sorted, next 64 bits, row)

    @staticmethod
    def keys(digests: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(first, next 64 bits) of each path's sha256 (:func:`_path_digest`)."""
        words = np.frombuffer(b"".join(digest[:16] for digest in digests), dtype="<u8")
        return words[0::2].copy(), words[1::2].copy()

    def first_rows(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """The row each key was imported from, or -1."""
        found = np.full(len(high), -1, dtype=np.int64)
        for run_high, run_low, rows in self._runs:
            start, stop = np.searchsorted(run_high, high, "left"), np.searchsorted(run_high, high, "right")
            for i in np.flatnonzero(stop > start):  # rare: a path imported before
                same = np.flatnonzero(run_low[start[i] : stop[i]] == low[i])
                if len(same):
                    found[i] = rows[start[i] + same[0]]
        return found

    def add(self, high: np.ndarray, low: np.ndarray, rows: np.ndarray) -> None:
        if not len(high):
            return
        run = (high, low, np.asarray(rows, dtype=np.int64))
        while self._runs and len(self._runs[-1][0]) <= len(run[0]):
            run = tuple(np.concatenate([a, b]) for a, b in zip(self._runs.pop(), run))
        order = np.argsort(run[0], kind="stable")
        self._runs.append(tuple(column[order] for column in run))


class _RowChecker:
    """Which rows of a batch are stored; names each bad row once."""

    def __init__(self, source: _Source, name: str, images_root: Path | None = None):
        self.name = name
        self.images_root = images_root
        self.dim = source.fixed_dim or 0
        self.seen = _SeenPaths()
        self.skipped: list[tuple[int, str, str]] = []

    def dim_of(self, lengths: np.ndarray) -> int:
        if not self.dim:
            present = lengths[lengths > 0]
            if len(present):
                self.dim = Counter(present.tolist()).most_common(1)[0][0]
        return self.dim

    def _bad(self, row: int, path: str | None, problem: str) -> None:
        self.skipped.append((row, path or "", problem))
        if len(self.skipped) <= LISTED_BAD_ROWS:
            log.warning("%s row %d (%s): %s; left out", self.name, row, printable(repr(path)) if path else "no path", problem)

    def _path_problem(self, path: str) -> str | None:
        problem = path_problem(path)
        if problem is None and self.images_root is not None:
            try:
                image_file(self.images_root, path)
            except BadImage as exc:
                problem = str(exc)
        return problem

    def keep(self, batch: _Batch) -> tuple[list[int], np.ndarray, list[str]]:
        """(positions in the batch of the rows to store, their vectors, their :func:`path_key`)."""
        finite = np.isfinite(batch.vectors).all(axis=1) if batch.vectors.size else np.zeros(len(batch.vectors), bool)
        digests = [_path_digest(path or "") for path in batch.paths]  # once a path: its duplicates key and its sha256 column
        high, low = _SeenPaths.keys(digests)
        earlier = self.seen.first_rows(high, low)
        in_batch: dict[tuple[int, int], int] = {}  # key -> row, for paths twice in this batch
        kept, kept_vectors, v = [], [], 0
        for i, (path, length) in enumerate(zip(batch.paths, batch.lengths.tolist())):
            row, good_length = batch.start + i, length == self.dim and self.dim > 0
            ok_vector = good_length and bool(finite[v])
            v += length == self.dim  # the batch's vectors are the rows of the batch's dimension
            problem = self._path_problem(path) if path else "empty path"
            key = (int(high[i]), int(low[i]))
            if problem is not None:
                self._bad(row, path, problem)
            elif length < 0:
                self._bad(row, path, "no vector")
            elif length == 0:
                self._bad(row, path, "vector has no values")
            elif not good_length:
                self._bad(row, path, f"vector has {length} values, expected {self.dim}")
            elif not ok_vector:
                self._bad(row, path, "vector has NaN, infinite or missing values (as float32)")
            elif earlier[i] >= 0 or key in in_batch:
                self._bad(row, path, f"path already imported from row {earlier[i] if earlier[i] >= 0 else in_batch[key]}")
            else:
                in_batch[key] = row
                kept.append(i)
                kept_vectors.append(v - 1)
        self.seen.add(high[kept], low[kept], batch.start + np.asarray(kept, dtype=np.int64))
        vectors = batch.vectors[kept_vectors] if kept_vectors else np.empty((0, self.dim), np.float32)
        return kept, vectors, [digests[i].hex() for i in kept]


def _table(paths: list[str], vectors: np.ndarray, keys: list[str]) -> pa.Table:
    n, dim = vectors.shape
    nothing = pa.nulls(n, pa.int32())
    return pa.table({
        "path": pa.array(paths, pa.string()),
        "sha256": pa.array(keys, pa.string()),  # path_key of each path
        "width": nothing,
        "height": nothing,
        "duplicate_of": pa.nulls(n, pa.string()),
        "global": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    })


def import_vectors(
    source: str | Path,
    out: str | Path,
    paths: str | Path | None = None,
    overwrite: bool = False,
    images_root: str | Path | None = None,
    batch_rows: int = BATCH_ROWS,
    chunk_rows: int = CHUNK_ROWS,
    quiet: bool = True,
    dtype: str = "auto",
) -> ImportReport:
    """Write the vectors of ``source`` (Parquet, or ``.npy`` with ``paths``) as the store ``out``.

    See the module docstring for the formats, the bad rows and the provenance. Raises
    :class:`~stylecluster.errors.InputError` for an unreadable source, an existing store without
    ``overwrite``, or a source with no usable row (nothing is written then). ``dtype``: how the
    store keeps the vectors (:func:`~stylecluster.store.resolve_dtype`: auto is float16 from a
    million rows).
    """
    began = time.perf_counter()
    out = check_store_output(out, overwrite)
    check_not_input(out, [source, paths], folder=True)
    if images_root is not None and not Path(images_root).is_dir():
        raise InputError(f"{printable(images_root)}: not a folder")
    reader = open_source(source, paths)
    vector_dtype = resolve_dtype(dtype, reader.rows)
    with _replacing(out):
        return _import(reader, source, out, images_root, batch_rows, chunk_rows, quiet, began, vector_dtype)


@contextmanager
def _replacing(out: Path):
    """Hold the lock of the store being replaced, if any: a store another process is writing
    (``embed`` resuming into it) is not pulled from under it."""
    from filelock import FileLock, Timeout

    if not is_store(out):
        yield
        return
    lock = FileLock(str(out / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(f"{printable(out)}: another process is writing this store; let it finish, or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


class _ChunkedWriter:
    """Tables of any size in, chunks of exactly the store's chunk size out (the last may be short),
    whatever the batches were."""

    def __init__(self, writer: StoreWriter):
        self.writer, self.pending, self.rows = writer, [], 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= self.writer.chunk_size:
            table = pa.concat_tables(self.pending)
            full = self.rows - self.rows % self.writer.chunk_size
            self.writer.add_table(table.slice(0, full))
            self.pending, self.rows = [table.slice(full)], self.rows - full

    def finish(self, skipped: list[tuple[int, str, str]]) -> None:
        if self.rows:
            self.writer.add_table(pa.concat_tables(self.pending))
        self.writer.write_skipped((path, f"row {row}: {problem}") for row, path, problem in skipped)


def _import(reader: _Source, source, out: Path, images_root, batch_rows: int, chunk_rows: int, quiet: bool, began: float,
            vector_dtype: str = "float32") -> ImportReport:
    from tqdm.auto import tqdm

    record = {**reader.provenance(), "imported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    root = Path(images_root).resolve() if images_root is not None else None
    checker = _RowChecker(reader, printable(Path(source).name), root)
    stored = 0
    with staged_folder(out, install=install_store) as folder, tqdm(total=reader.rows, unit="rows", disable=quiet, desc="import") as progress:
        chunks = None  # opened at the first usable row, when the dimension is known
        try:
            for batch in reader.batches(max(1, int(batch_rows)), checker.dim_of):
                kept, vectors, keys = checker.keep(batch)
                progress.update(len(batch.paths))
                if kept and chunks is None:
                    dim = checker.dim
                    chunks = _ChunkedWriter(StoreWriter(folder, branches={}, dims={"global": dim}, parts={"global": {IMPORTED_PART: (0, dim)}},
                                                        images_root=None if root is None else str(root), chunk_size=chunk_rows, extra_metadata={"imported": {**record, "dim": dim}},
                                                        vector_dtype=vector_dtype))
                if kept:
                    chunks.add(_table([batch.paths[i] for i in kept], vectors, keys))
                    stored += len(kept)
            if chunks is None:
                raise InputError(f"{printable(source)}: no usable row among {reader.rows:,} (see the lines above)")
            chunks.finish(checker.skipped)
        finally:
            if chunks is not None:
                chunks.writer.close()  # releases the staging store's lock; a failed import's folder is then removed
    if len(checker.skipped) > LISTED_BAD_ROWS:
        log.warning("%d more bad rows were left out; all are listed in %s", len(checker.skipped) - LISTED_BAD_ROWS, printable(out / "_skipped.csv"))
    return ImportReport(out, Path(source), checker.dim, reader.rows, stored, checker.skipped, time.perf_counter() - began)
