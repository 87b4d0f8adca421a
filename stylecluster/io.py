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
from typing import Callable

from .errors import StyleclusterError

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


@contextmanager
def staged_folder(out: str | Path):
    """Yield a new hidden folder beside ``out``; when the block succeeds it replaces ``out``
    (renamed, so the old folder stays whole until the new one is complete); when it fails it is
    removed and ``out`` is left as it was. The folder-sized :func:`save_atomic` of reports and
    imported stores."""
    out = Path(out)
    staging = out.parent / f".{out.name}.{os.getpid()}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        if out.exists():
            old = out.parent / f".{out.name}.{os.getpid()}.replaced"
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(out, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


def printable(text: object) -> str:
    """``text`` with control characters escaped as ``\\n``, ``\\x1b``, ``\\udcff``: one line, inert."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), str(text))
