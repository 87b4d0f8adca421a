"""Small JPEG thumbnails of a store's images, cached by content hash.

A thumbnail is named after the image's sha256, so duplicates share one, a moved collection keeps
its cache, and no user-supplied file name ever ends up in a URL.
"""
from __future__ import annotations

import base64
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from PIL import Image

from ..data.decode import BadImage
from ..data.image_paths import load_stored_image
from ..io import printable, save_atomic

log = logging.getLogger("stylecluster")

#: Longest side of a thumbnail in pixels: sharp in a 112-px card, about 5 KB as JPEG.
THUMB_SIZE = 128
JPEG_QUALITY = 75


def thumbnail_bytes(image: Image.Image, size: int = THUMB_SIZE) -> bytes:
    small = image.copy()
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def ensure_thumbnails(
    images_root: Path | None, items: Iterable[tuple[str, str]], cache: Path, workers: int = 2
) -> dict[str, Path]:
    """Thumbnails for ``(path, sha256)`` items, made where the cache lacks them.

    Returns {sha256: thumbnail file}; images that cannot be read (moved, deleted, corrupt) are
    left out, with one warning for all of them.
    """
    folder = cache / "thumbs"
    folder.mkdir(parents=True, exist_ok=True)
    by_sha = {sha: path for path, sha in items}
    found = {sha: folder / f"{sha}.jpg" for sha in by_sha}
    todo = [sha for sha, f in found.items() if not f.is_file()]
    failed: list[str] = []

    def make(sha: str) -> None:
        if images_root is None:
            failed.append(by_sha[sha])
            return
        try:
            image = load_stored_image(images_root, by_sha[sha])
        except BadImage as exc:
            failed.append(f"{by_sha[sha]} ({exc})")
            return
        save_atomic(found[sha], thumbnail_bytes(image))

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(make, todo))
    if failed:
        where = images_root if images_root is not None else "an unknown folder (the store records no images root)"
        log.warning("%d images could not be read from %s and have no thumbnail, e.g. %s", len(failed), printable(where), printable(failed[0]))
    return {sha: f for sha, f in found.items() if f.is_file()}


def jpeg_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def data_uri(path: Path) -> str:
    """A thumbnail file as a data URI, for pages that must stand alone."""
    return jpeg_uri(path.read_bytes())
