"""Where derived visualisation files (thumbnails, fitted UMAP reducers) are cached.

Beside the vectors, inside the store: ``STORE/_viz/``. Names starting with ``_`` are ignored by
pandas and pyarrow when they read the store folder, and the cache travels with the store. When
the store folder is read-only (a shared store), a per-user cache keyed by the store's absolute
path is used instead.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_NAME = "_viz"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def cache_dir(store) -> Path:
    """The visualisation cache folder of a store (created if needed)."""
    inside = Path(store.path) / CACHE_NAME
    if _writable(inside):
        return inside
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylecluster"
    key = hashlib.sha256(str(Path(store.path).resolve()).encode()).hexdigest()[:16]
    fallback = base / f"{Path(store.path).name}-{key}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback
