"""Safe decoding of one image file into an RGB PIL image.

Every failure is turned into :class:`BadImage` with a short reason, so a bad file becomes one
line in the run's report instead of stopping it. The header is read before any pixel data, so
the pixel cap rejects decompression bombs without allocating them.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..hashing import sha256_and_size

# We enforce our own, configurable pixel cap (IngestConfig.max_pixels) before decoding.
Image.MAX_IMAGE_PIXELS = None


class BadImage(Exception):
    """A file that cannot be used; ``str(exc)`` is the one-line reason."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.kind = kind  # short category used in the end-of-run summary


@dataclass(frozen=True)
class FileInfo:
    sha256: str
    size: int


@contextlib.contextmanager
def _reading():
    """Turn the ways a file can fail to be read into BadImage."""
    try:
        yield
    except PermissionError:
        raise BadImage("unreadable: permission denied", "unreadable") from None
    except IsADirectoryError:
        raise BadImage("unreadable: is a folder", "unreadable") from None
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror or exc}", "unreadable") from None


def read_file(path: str | Path) -> bytes:
    with _reading():
        data = Path(path).read_bytes()
    if not data:
        raise BadImage("empty file (0 bytes)", "empty")
    return data


def hash_file(path: str | Path) -> FileInfo:
    """sha256 of the file's bytes, streamed so huge files are not held in memory."""
    with _reading():
        digest, size = sha256_and_size(path)
    if size == 0:
        raise BadImage("empty file (0 bytes)", "empty")
    return FileInfo(digest, size)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        elif arr.max() > 255:  # 16-bit samples in a 32-bit or I;16 container
            arr = arr / 257.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes, max_pixels: int, min_side: int) -> Image.Image:
    """Decode bytes into an RGB image with EXIF orientation applied (first frame of animations)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise BadImage(
                    f"too many pixels ({width}x{height} = {width * height:,} > max_pixels {max_pixels:,}; possible decompression bomb)",
                    "too_large",
                )
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            img = _to_rgb(img)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (content not recognised as any image format)", "not_image") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"decompression bomb: {exc}", "too_large") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        kind = "truncated" if "truncated" in text.lower() or isinstance(exc, EOFError) else "corrupt"
        raise BadImage(f"{'truncated' if kind == 'truncated' else 'corrupt'} image: {text}", kind) from None
    if min(img.size) < min_side:
        raise BadImage(f"too small ({img.size[0]}x{img.size[1]} px; shorter side < min_side {min_side})", "too_small")
    return img


def load_image(path: str | Path, max_pixels: int = 200_000_000, min_side: int = 32) -> Image.Image:
    """Read and decode one file; raises :class:`BadImage` with the reason."""
    return decode_image(read_file(path), max_pixels=max_pixels, min_side=min_side)
