"""A cluster's most typical works as one image: a row of thumbnails, for the report and for
taking away (a slide, a catalogue draft). clustimage shows clusters the same way."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..io import save_atomic

TILE = 96
GAP = 4
PER_MONTAGE = 6


def montage_image(thumbnails: list[Path], tile: int = TILE) -> Image.Image:
    """Thumbnails side by side, each fitted into a ``tile``-pixel square on light grey."""
    canvas = Image.new("RGB", (len(thumbnails) * (tile + GAP) - GAP, tile), (238, 238, 238))
    for i, file in enumerate(thumbnails):
        with Image.open(file) as image:
            small = image.convert("RGB")
            small.thumbnail((tile, tile), Image.Resampling.LANCZOS)
        x = i * (tile + GAP) + (tile - small.width) // 2
        canvas.paste(small, (x, (tile - small.height) // 2))
    return canvas


def write_montage(thumbnails: list[Path], out: Path) -> Path | None:
    """A JPEG montage of up to :data:`PER_MONTAGE` thumbnails at ``out``; None when there are none."""
    thumbnails = thumbnails[:PER_MONTAGE]
    if not thumbnails:
        return None
    image = montage_image(thumbnails)
    return save_atomic(out, lambda tmp: image.save(tmp, format="JPEG", quality=82))
