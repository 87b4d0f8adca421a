"""Finding the images of a collection: a folder walked recursively, or an explicit list."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from ..errors import InputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"})


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def discover_images(root: str | Path, follow_symlinks: bool = True) -> list[Path]:
    """All image files below ``root``, sorted, by case-insensitive extension.

    Symlinked folders are followed when ``follow_symlinks``; each real folder is visited once,
    so symlink loops terminate. Hidden files and folders (starting with ``.``) are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        st = os.stat(dirpath)
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and is_image_name(name):
                found.append(Path(dirpath) / name)
    return sorted(found)


def read_path_list(list_file: str | Path, root: str | Path | None = None) -> list[Path]:
    """Image paths from a TXT (one per line) or CSV (a ``path`` column, else the first column).

    Relative entries are taken relative to ``root`` if given, else to the list file's folder.
    """
    list_file = Path(list_file)
    base = Path(root) if root is not None else list_file.parent
    if list_file.suffix.lower() == ".csv":
        with list_file.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                return []
            column = "path" if "path" in reader.fieldnames else reader.fieldnames[0]
            entries = [row[column] for row in reader]
    else:
        entries = list_file.read_text().splitlines()
    paths = []
    for entry in entries:
        entry = entry.strip()
        if entry and not entry.startswith("#"):
            p = Path(entry)
            paths.append(p if p.is_absolute() else base / p)
    return paths


def relative_name(path: Path, root: Path) -> str:
    """The path as stored: relative to the images root with POSIX separators, else absolute."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.resolve().as_posix()
