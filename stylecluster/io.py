"""What stylecluster writes: files, atomically, and names in log lines, escaped.

Files
-----
Every output — store chunks and metadata, CLUSTERS.csv, the fitted model, JSON, HTML pages,
thumbnails, checkpoints — goes through :func:`save_atomic`: it is written to a hidden temporary
name beside its destination (``.NAME.<pid>-<n>.tmp<suffix>``) and renamed over it only when
complete. ``os.replace`` is atomic on POSIX and Windows, so a crash, a kill or a full disk leaves
either the old file or the new one, never a truncated one that a rerun would then refuse to
replace. A failed write removes its temporary file and raises :class:`OutputError`, whose message
is one line naming the path.

:func:`check_writable` is the same failure found before the work: commands call it on their
outputs before they compute anything (a read-only folder, a file where a folder should be).

Without ``fsync``: the atomicity protects against the process dying (kill -9, OOM, Ctrl-C, a full
disk), which is what this is for; surviving a power cut would cost a disk flush per file.

Log lines
---------
File names are user data and may hold newlines or terminal escapes; :func:`printable` escapes
them, so one message is always one line and cannot rewrite the terminal.
"""
from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple

from .errors import InputError, StyleclusterError

_COUNTER = itertools.count()


class OutputError(StyleclusterError):
    """An output cannot be written; ``str(exc)`` is one line naming the path and the reason."""

    def __init__(self, path: str | Path, reason: str | OSError):
        if isinstance(reason, OSError):
            reason = "no space left on the device" if reason.errno == errno.ENOSPC else reason.strerror or str(reason)
        super().__init__(f"cannot write {printable(path)}: {reason}")
        self.path = Path(path)


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path``, unique per process and call, ending in ``path``'s suffix
    (writers such as PIL and numpy choose the format from it)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{next(_COUNTER)}.tmp{path.suffix}")


def save_atomic(path: str | Path, content: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``content`` to ``path`` all at once or not at all; returns ``path``.

    ``content`` is bytes, text (UTF-8), or a function that writes the file at the path it is
    given (e.g. ``lambda p: frame.to_csv(p, index=False)``). Missing parent folders are created.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        elif isinstance(content, str):
            tmp.write_text(content, encoding="utf-8")
        else:
            content(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(path, exc) from None
        raise
    return path


class CsvText(NamedTuple):
    """Rows already formatted as CSV (no header), and how many: what a worker process formats so
    that the writing process only writes (:func:`save_csv_batches`)."""

    text: str
    rows: int


def csv_text(frame) -> CsvText:
    """A DataFrame's rows as :class:`CsvText`: the bytes ``frame.to_csv`` writes, less the header."""
    return CsvText(frame.to_csv(index=False, header=False), len(frame))


def save_csv_batches(path: str | Path, pieces, header: str) -> int:
    """Write DataFrames (or :class:`CsvText` formatted elsewhere, with ``header`` as their
    columns) one after another as one CSV, atomically, holding one at a time (ten million rows
    need the memory of a batch); ``header`` is written alone when there is no row. Returns the
    number of rows written."""
    written, started = 0, False

    def write(tmp: Path) -> None:
        nonlocal written, started
        with open(tmp, "w", newline="") as f:
            for piece in pieces:
                if isinstance(piece, CsvText):
                    if not piece.rows:
                        continue
                    if not started:
                        f.write(header + "\n")
                    f.write(piece.text)
                    written += piece.rows
                else:
                    if not len(piece):
                        continue
                    piece.to_csv(f, index=False, header=not started)
                    written += len(piece)
                started = True
            if not started:
                f.write(header + "\n")

    save_atomic(path, write)
    return written


@contextmanager
def staged_folder(out: str | Path, install: Callable[[Path, Path], None] | None = None):
    """Yield a new hidden folder beside ``out``; when the block succeeds it replaces ``out``
    (renamed, so the old folder stays whole until the new one is complete); when it fails it is
    removed and ``out`` is left as it was. The folder-sized :func:`save_atomic` of reports and
    imported stores; an OSError is an :class:`OutputError` naming ``out`` unless it names a file
    elsewhere (an input).

    ``install(staging, out)``: put the finished folder in place another way (an imported store
    replaces only the store's own files of ``out``, :func:`stylecluster.store.install_store`).
    Staging folders that a killed run (``kill -9``) left beside ``out`` are removed first, once
    their process is gone.
    """
    out = Path(out)
    remove_stale_staging(out)
    staging = out.parent / f".{out.name}.{os.getpid()}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise OutputError(out, exc) from None
    try:
        yield staging
        (install or _swap_folder)(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.filename is not None and not _is_beside(Path(exc.filename), out):
            raise  # an input named by the error, not the output (a write's ENOSPC names no file)
        raise OutputError(out, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _is_beside(file: Path, out: Path) -> bool:
    """Whether an OSError's file is ``out``, in it, or in one of its hidden staging folders: a
    failure to write the output rather than to read an input."""
    folder, file = Path(os.path.abspath(out)), Path(os.path.abspath(file))
    return any(p == folder or (p.parent == folder.parent and p.name.startswith(f".{folder.name}.")) for p in (file, *file.parents))


def _swap_folder(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.{os.getpid()}.replaced"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def remove_stale_staging(out: str | Path) -> list[Path]:
    """Remove the hidden ``.OUT.<pid>.staging`` / ``.replaced`` folders beside ``out`` whose
    process no longer runs (a run killed with ``kill -9`` cannot clean up after itself); a
    folder whose process is alive (another run at work) is left alone. Returns what was removed."""
    out = Path(out)
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(\d+)\.(staging|replaced)")
    removed = []
    try:
        entries = list(out.parent.iterdir()) if out.parent.is_dir() else []
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def check_not_input(out: str | Path, inputs, folder: bool = False) -> Path:
    """Raise :class:`~stylecluster.errors.InputError` when writing ``out`` would destroy what the
    command reads: ``out`` is one of ``inputs``, lies inside an input folder (a store), or — for
    an output folder (``folder``), which a run replaces — holds an input. Paths are compared
    after resolving links; ``None`` inputs are ignored."""
    target = Path(os.path.realpath(out))
    for given in inputs:
        if given is None:
            continue
        source = Path(os.path.realpath(given))
        if target == source:
            raise InputError(f"{printable(out)}: is also an input of this command ({printable(given)}); choose another output")
        if source in target.parents and source.is_dir():
            raise InputError(f"{printable(out)}: lies inside {printable(given)}, which this command reads; choose an output outside it")
        if folder and target in source.parents:
            raise InputError(f"{printable(out)}: holds {printable(given)}, which this command reads, and would be replaced; choose another output")
    return Path(out)


def check_writable(path: str | Path, folder: bool = False) -> Path:
    """Raise :class:`OutputError` unless ``path`` can be written (created or replaced).

    ``folder``: the output is a folder (a store, a report) rather than a file. Nothing is left
    behind: a probe file is created in the nearest existing folder and removed, which is the
    only test that holds for every case (read-only mounts, ACLs, root on a chmod-ed folder).
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if folder and not path.is_dir():
            raise OutputError(path, "it exists and is not a folder")
        if not folder and path.is_dir():
            raise OutputError(path, "it is a folder")
    where = path if folder and path.is_dir() else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise OutputError(path, f"{printable(where)} is a file, not a folder")
    probe = where / f".stylecluster-probe-{os.getpid()}-{next(_COUNTER)}"
    try:
        probe.touch(exist_ok=False)
    except OSError as exc:
        raise OutputError(path, exc) from None
    probe.unlink(missing_ok=True)
    return path


# C0 and C1 control characters, line/paragraph separators, and lone surrogates (the bytes of a
# file name that is not valid UTF-8, which would make printing it fail).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds what :func:`printable` escapes: control characters, line separators
    or the lone surrogates of bytes that are not UTF-8."""
    return _UNPRINTABLE.search(text) is not None


def printable(text: object) -> str:
    """``text`` with control characters escaped as ``\\n``, ``\\x1b``, ``\\udcff``: one line, inert."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), str(text))
