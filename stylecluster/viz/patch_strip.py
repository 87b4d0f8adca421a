"""The DoG patches behind an image's local-branch vector, drawn as one PNG strip.

The patches are re-drawn exactly as the embedder drew them: the same patch parameters (from the
store's provenance) and the same per-image seed (content hash + run seed), so the strip shows
the patches the local branch actually encoded. A store made without the local branch shows the
patches the default local settings would use.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ..config import Config
from ..data.dataset import image_seed
from ..data.decode import BadImage
from ..data.image_paths import load_stored_image
from ..features.patches import Patches, extract_patches
from ..io import printable

log = logging.getLogger("stylecluster")

GAP = 4  # pixels between patches


@dataclass
class PatchStrip:
    file: Path
    boxes: np.ndarray  # (n, 4): x, y, width, height in the image's pixels, in strip order


def strip_image(dog: np.ndarray) -> Image.Image:
    """(n, s, s) DoG patches in [0, 255] side by side on a dark background."""
    n, size = dog.shape[0], dog.shape[1]
    canvas = np.full((size, n * size + (n - 1) * GAP), 40, np.uint8)
    for i, patch in enumerate(np.round(dog).astype(np.uint8)):
        x = i * (size + GAP)
        canvas[:, x : x + size] = patch
    return Image.fromarray(canvas, "L")


def drawn_patches(image: Image.Image, sha256: str, config: Config) -> Patches:
    """The patches the local branch drew from this image when it was embedded with ``config``."""
    return extract_patches(image, config.local, image_seed(sha256, config.embed.seed))


def write_patch_strips(
    images_root: Path | None, items: Iterable[tuple[str, str]], folder: Path, config: Config, workers: int = 2
) -> dict[str, PatchStrip]:
    """A ``<sha256>.png`` strip in ``folder`` for each ``(path, sha256)``; unreadable images are left out."""
    folder.mkdir(parents=True, exist_ok=True)
    by_sha = dict((sha, path) for path, sha in items)
    failed: list[str] = []

    def make(sha: str) -> tuple[str, PatchStrip | None]:
        if images_root is None:
            return sha, None
        try:
            image = load_stored_image(images_root, by_sha[sha], max_pixels=config.ingest.max_pixels)
        except BadImage as exc:
            failed.append(f"{by_sha[sha]} ({exc})")
            return sha, None
        patches = drawn_patches(image, sha, config)
        file = folder / f"{sha}.png"
        strip_image(patches.dog).save(file, optimize=True)
        return sha, PatchStrip(file, patches.boxes)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        strips = {sha: strip for sha, strip in pool.map(make, list(by_sha)) if strip is not None}
    if failed:
        log.warning("%d images could not be read for their patches, e.g. %s", len(failed), printable(failed[0]))
    return strips
