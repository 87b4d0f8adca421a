"""The embedding store: a folder of Parquet chunks plus a JSON provenance record.

Layout of ``STORE/``::

    _stylecluster.json      provenance: branches (model, weights hash, parameters), vector parts,
                            stylecluster version, creation/update time, images root
    part-000000.parquet     rows: path, sha256, width, height, duplicate_of, global, local
    part-000001.parquet     ... one file per chunk, each written to a temporary name and renamed,
                            so an interrupted run loses at most the chunk it was writing
    _skipped.csv            the files the last run could not embed, with the reason

Why a folder of Parquet files: pandas and pyarrow read it in one line
(``pandas.read_parquet("STORE")``; files starting with ``_`` are ignored by both), vectors are
stored as fixed-size float32 lists without any custom encoding, and appending a chunk never
rewrites earlier ones — which is what makes resuming cheap and crash-safe.

Rows are keyed by ``path`` (relative to the images root, POSIX separators). When a path was
embedded twice (its file changed between runs), the later row wins.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__

META_FILE = "_stylecluster.json"
SKIPPED_FILE = "_skipped.csv"
FORMAT_VERSION = 1
VECTOR_COLUMNS = ("global", "local")


class StoreError(Exception):
    """A store cannot be read or written as asked."""


class StoreMismatchError(StoreError):
    """The store was made with another model or configuration."""


def _chunk_files(path: Path) -> list[Path]:
    return sorted(path.glob("part-*.parquet"))


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
        files = _chunk_files(self.path)
        if files:
            table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
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
        dims = {c: self.dim(c) for c in VECTOR_COLUMNS if self.vectors(c) is not None}
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
        col = self._table.column(column).combine_chunks()
        if col.null_count:
            raise StoreError(f"{self.path}: {col.null_count} rows have no {column} vector")
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=np.float32).reshape(len(self), self.dim(column))

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


def _describe_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _describe_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: store has {a!r}, this run uses {b!r}")
    return diffs


@dataclass
class StoredRow:
    path: str
    width: int
    height: int
    vectors: dict[str, np.ndarray]


def stored_paths(path: str | Path) -> list[str]:
    """Distinct image paths in a store, reading only the ``path`` column."""
    seen: dict[str, None] = {}
    for f in _chunk_files(Path(path)):
        seen.update(dict.fromkeys(pq.read_table(f, columns=["path"]).column("path").to_pylist()))
    return list(seen)


class StoreWriter:
    """Append side of a store: buffers rows and writes one Parquet chunk per ``chunk_size`` rows.

    Opening an existing store checks that it was made by the same branches with the same
    parameters (``branches`` provenance); otherwise :class:`StoreMismatchError` unless
    ``overwrite``, which deletes the store's own files (and nothing else) first.
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
    ):
        self.path = Path(path)
        self.chunk_size = max(1, int(chunk_size))
        self._buffer: list[dict[str, Any]] = []
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
        }
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: exists and is not a folder; choose another --out")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not is_store(self.path):
                raise StoreError(f"{self.path}: folder is not empty and is not a stylecluster store; refusing to write into it")
            old_meta = _read_meta(self.path)
            fingerprint = ("format_version", "branches", "dims", "parts", "embed")
            diffs = _describe_difference({k: old_meta.get(k) for k in fingerprint}, {k: new_meta[k] for k in fingerprint})
            if diffs and not overwrite:
                raise StoreMismatchError(
                    f"{self.path}: store was made with another model or configuration ({'; '.join(diffs)}); "
                    "use --overwrite to replace it, or another --out"
                )
            if diffs or overwrite:
                self._delete_own_files()
            else:
                new_meta["created"] = old_meta.get("created", now)
        self.path.mkdir(parents=True, exist_ok=True)
        self.metadata = new_meta
        self._write_meta()
        self._schema = _schema(new_meta)
        self._next_chunk = len(_chunk_files(self.path))

    def _delete_own_files(self) -> None:
        for f in [*_chunk_files(self.path), self.path / META_FILE, self.path / SKIPPED_FILE]:
            f.unlink(missing_ok=True)

    def _write_meta(self) -> None:
        tmp = self.path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(self.metadata, indent=2))
        os.replace(tmp, self.path / META_FILE)

    def existing(self) -> tuple[dict[str, str], dict[str, StoredRow]]:
        """What the store already holds: {path: sha256} and {sha256: first row with that content}."""
        if not _chunk_files(self.path):
            return {}, {}
        store = EmbeddingStore(self.path)
        columns = {c: store.vectors(c) for c, d in self.metadata["dims"].items() if d}
        table = store.to_pandas()[["path", "sha256", "width", "height"]]
        by_path, by_sha = {}, {}
        for i, (path, sha, width, height) in enumerate(table.itertuples(index=False)):
            by_path[path] = sha
            if sha not in by_sha:
                by_sha[sha] = StoredRow(path, int(width), int(height), {c: m[i] for c, m in columns.items()})
        return by_path, by_sha

    def add(self, path: str, sha256: str, width: int, height: int, vectors: dict[str, np.ndarray], duplicate_of: str | None = None) -> None:
        row = {"path": path, "sha256": sha256, "width": int(width), "height": int(height), "duplicate_of": duplicate_of}
        for column in self._schema.names[5:]:
            row[column] = np.asarray(vectors[column], dtype=np.float32)
        self._buffer.append(row)
        if len(self._buffer) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        columns = {}
        for field in self._schema:
            values = [r[field.name] for r in self._buffer]
            if pa.types.is_fixed_size_list(field.type):
                flat = pa.array(np.concatenate(values).astype(np.float32, copy=False))
                columns[field.name] = pa.FixedSizeListArray.from_arrays(flat, field.type.list_size)
            else:
                columns[field.name] = pa.array(values, type=field.type)
        table = pa.table(columns, schema=self._schema)
        final = self.path / f"part-{self._next_chunk:06d}.parquet"
        tmp = self.path / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self._next_chunk += 1
        self._buffer.clear()
        self.metadata["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._write_meta()

    def write_skipped(self, skipped: Iterable[tuple[str, str]]) -> None:
        pd.DataFrame(list(skipped), columns=["path", "reason"]).to_csv(self.path / SKIPPED_FILE, index=False)

    def close(self) -> None:
        self.flush()
