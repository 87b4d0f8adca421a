"""Stored image paths: the one rule checked before a path becomes a store row or a file is opened.

A store's paths are relative to its images root (POSIX separators). Imported stores take their
paths from a file someone else wrote, and maps, reports and ``similar`` pages — made to be
shared — embed thumbnails of what those paths open. So a path is used only when it:

* holds no control characters and is valid UTF-8 (a NUL made Python raise; a newline or a
  terminal escape would break the one-line messages);
* stays inside the root: not absolute, no ``..`` component. The check is on the path's text, not
  on the resolved file: a symlinked folder *inside* the collection, which ``embed`` follows by
  design (``ingest.follow_symlinks``), is the user's own link and keeps working;
* names a regular file, checked with ``stat`` before ``open``: a FIFO made ``plot`` wait forever
  on its ``open``, a device would be read without end.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..io import has_control_characters
from .decode import BadImage, load_image


#: A Windows drive ("C:") or UNC ("\\\\server") start, absolute on that system.
_WINDOWS_ROOT = re.compile(r"[A-Za-z]:|\\\\")


def path_problem(path: str) -> str | None:
    """Why ``path`` may not be stored or opened under an images root, or None when it may."""
    if not isinstance(path, str) or not path:
        return "empty path"
    if has_control_characters(path):
        return "path holds control characters or bytes that are not UTF-8"
    # string tests, not PurePath objects: an import checks every row (1M paths: 1.2 s, against 7.4 s)
    if path.startswith("/") or _WINDOWS_ROOT.match(path):
        return "absolute path; paths must be relative to the images root"
    if ".." in path.split("/"):
        return "path leaves the images root (a '..' component)"
    return None


def image_file(root: Path, path: str) -> Path:
    """The file of stored ``path`` under ``root``, checked by the rule above; raises
    :class:`~stylecluster.data.decode.BadImage` (kind ``unsafe_path``, ``missing`` or
    ``not_file``) instead of opening anything else."""
    problem = path_problem(path)
    if problem is not None:
        raise BadImage(problem, "unsafe_path")
    file = Path(root) / path
    try:
        mode = os.stat(file).st_mode
    except FileNotFoundError:
        raise BadImage("no such file under the images root", "missing") from None
    except OSError as exc:
        raise BadImage(f"cannot be read ({exc.strerror or exc})", "unreadable") from None
    if not stat.S_ISREG(mode):
        raise BadImage("not a regular file (a folder, a FIFO or a device)", "not_file")
    return file


def load_stored_image(root: Path, path: str, max_pixels: int = 200_000_000, min_side: int = 1):
    """The decoded image of stored ``path`` under ``root`` (:func:`image_file`, then
    :func:`~stylecluster.data.decode.load_image`); raises ``BadImage``."""
    return load_image(image_file(root, path), max_pixels=max_pixels, min_side=min_side)
