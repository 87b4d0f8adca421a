"""Content hashes of files (images, weights), streamed so large files never sit in memory."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_and_size(path: str | Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_sha256(path: str | Path) -> str:
    return sha256_and_size(path)[0]
