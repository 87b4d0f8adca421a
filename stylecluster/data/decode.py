"""Safe decoding of one image file into an RGB PIL image.

Every failure is turned into :class:`BadImage` with a short reason, so a bad file becomes one
line in the run's report instead of stopping it. The header is read before any pixel data, so
the pixel cap rejects decompression bombs without allocating them.

Memory per image is bounded
---------------------------
A 41 KB 14,000 x 14,000 one-bit PNG is under the 200-megapixel cap, yet decoding it into RGB
(PIL keeps RGB as 4 bytes a pixel), handing it to the branches and taking its luminance cost
2.5 GB of RSS and 30 s. Decoding therefore works at the size the branches can use:

* The branches are given at most :data:`MAX_WORKING_PIXELS` (24 megapixels, 6,000 x 4,000): the
  global branch resizes every image to ~300 px anyway, and at 64-px patches a larger scan only
  has finer brush strokes than any painting in the training sets (all under 2.5 megapixels).
  Larger images are reduced by an integer factor (box filter) before anything else happens;
  smaller ones are untouched, so their vectors are exactly what they were.
* JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale (``draft``), never at full size.
* When no branch of a run needs full resolution (the global branch alone: ``embed --no-local``),
  JPEGs are decoded at the smallest DCT scale that keeps twice the network's side
  (``draft_side``): 3,000-px versions of 12 AIC paintings decoded in 74 ms instead of 219 (machine
  busy), their global vectors at cosine 0.9928 (min) / 0.9983 (mean) to the full decode's. The
  brush-stroke branch needs a JPEG's own pixels only inside its patches: a JPEG decoded reduced
  carries :class:`NativeJpeg` (``image.info["native"]``), from which that branch reads the luma
  alone at full scale (features/patches.py, "Big JPEGs"), so both branches decode at the global
  branch's size too.
* Other formats must be decoded whole first; that costs pixels x bytes per pixel of the file's
  own mode (1 for one-bit, grey and palette images, 2 for 16-bit grey, 4 for colour). An image
  whose decode would take more than :data:`MAX_DECODE_BYTES` (320 MB: 80 megapixels of colour)
  is skipped as ``too_large``. The reduction then converts and reduces horizontal strips of the
  decoded image, so no full-size RGB copy is ever made.

Measured on this machine (``benchmarks/faults.py``: decoding and both branches' preprocessing of
one image, peak RSS above the process's): the one-bit PNG above 1,852 MB and 6.3 s before,
217 MB and 0.7 s now; the costliest accepted images, a 9,100 x 9,100 colour PNG and a 12,000 x
12,000 16-bit TIFF, 425 and 419 MB; a 14,000 x 10,000 JPEG 200 MB; the largest image that is not
reduced, 6,000 x 4,000 in colour, 219 MB (403 MB with the former 16-megapixel gradient strips).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..hashing import sha256_and_size

# We enforce our own, configurable pixel cap (IngestConfig.max_pixels) before decoding.
Image.MAX_IMAGE_PIXELS = None

#: Largest image handed to the branches; larger ones are reduced while decoding (module docstring).
MAX_WORKING_PIXELS = 24_000_000
#: Most memory the full-size decode of a non-JPEG image may take.
MAX_DECODE_BYTES = 320 * 2**20
#: Source pixels converted and reduced at a time.
STRIP_PIXELS = 4_000_000
#: A JPEG decoded for a network of side s keeps a shorter side of at least this many times s,
#: so that the final resize still averages several source pixels into each (decode_image).
DRAFT_MARGIN = 2
#: Files up to this size are read into memory once to be hashed and decoded (read_hashed).
WHOLE_READ_BYTES = 64 * 2**20
# PIL's storage per pixel for the modes that use less than 4 bytes.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Modes Image.reduce cannot work on, and what they are converted to first.
_REDUCIBLE_AS = {"1": "L", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}


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


@contextlib.contextmanager
def _decoding():
    """Turn the ways a decoder can fail into BadImage; its warnings are not the user's concern."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (content not recognised as any image format)", "not_image") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"decompression bomb: {exc}", "too_large") from None
    except FileNotFoundError:
        raise BadImage("unreadable: no such file", "unreadable") from None
    except PermissionError:
        raise BadImage("unreadable: permission denied", "unreadable") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        kind = "truncated" if "truncated" in text.lower() or isinstance(exc, EOFError) else "corrupt"
        raise BadImage(f"{'truncated' if kind == 'truncated' else 'corrupt'} image: {text}", kind) from None


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


def reduction_factor(width: int, height: int) -> int:
    """The integer factor that brings an image down to at most :data:`MAX_WORKING_PIXELS`."""
    pixels = width * height
    return 1 if pixels <= MAX_WORKING_PIXELS else math.ceil(math.sqrt(pixels / MAX_WORKING_PIXELS))


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """``img`` reduced by ``factor`` (box filter), converted and reduced a strip at a time."""
    width, height = img.size
    mode = img.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
    mode = _REDUCIBLE_AS.get(mode, mode)
    out = Image.new(mode, (math.ceil(width / factor), math.ceil(height / factor)))
    rows = factor * max(1, STRIP_PIXELS // (width * factor))
    for top in range(0, height, rows):
        strip = img.crop((0, top, width, min(height, top + rows)))
        out.paste((strip if strip.mode == mode else strip.convert(mode)).reduce(factor), (0, top // factor))
    return out


def decode_image(data: bytes | BinaryIO, max_pixels: int, min_side: int, draft_side: int | None = None) -> Image.Image:
    """Decode an image (bytes or a binary file) into RGB with EXIF orientation applied (first
    frame of animations), at most :data:`MAX_WORKING_PIXELS` large.

    ``draft_side``: the shorter side the caller needs at least (None: full resolution). A JPEG
    is then decoded at the largest DCT scale (1/2, 1/4, 1/8) whose shorter side is still
    :data:`DRAFT_MARGIN` times that — the cost of the pixels used, not of the file: a 3,000-px
    photograph decodes at 1/4 for a 224-px network. Other formats, and JPEGs already small, are
    decoded as without it (a 224-px file's pixels are the same).

    ``image.info["full_size"]`` is the (width, height) of the image at full resolution, as
    displayed (after EXIF orientation).
    """
    with _decoding():
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        width, height = img.size
        if width * height > max_pixels:
            raise BadImage(
                f"too many pixels ({width}x{height} = {width * height:,} > max_pixels {max_pixels:,}; possible decompression bomb)",
                "too_large",
            )
        if min(width, height) < min_side:
            raise BadImage(f"too small ({width}x{height} px; shorter side < min_side {min_side})", "too_small")
        img.seek(0)
        factor = reduction_factor(width, height)
        is_jpeg, drafted = img.format == "JPEG", False
        if is_jpeg and draft_side is not None:
            scale = min(1.0, DRAFT_MARGIN * draft_side / min(width, height))
            drafted = 1 / scale > factor  # smaller than without draft_side: see NativeJpeg
            factor = max(factor, 1 / scale)
        if factor > 1 and img.format == "JPEG":
            img.draft(img.mode, (math.ceil(width / factor), math.ceil(height / factor)))  # decodes at 1/2, 1/4 or 1/8
        need = img.size[0] * img.size[1] * _BYTES_PER_PIXEL.get(img.mode, 4)
        if need > MAX_DECODE_BYTES:
            raise BadImage(
                f"too large to decode within {MAX_DECODE_BYTES >> 20} MB ({width}x{height} {img.mode} needs {need >> 20} MB)", "too_large"
            )
        orientation = img.getexif().get(0x0112, 1)
        img.load()
        factor = reduction_factor(*img.size)
        if factor > 1:
            img = _reduce(img, factor)
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img)
        img.info["full_size"] = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if drafted:
            native = NativeJpeg(data if isinstance(data, bytes) else getattr(data, "name", None) or _read_all(data))
            if native.size != img.size:
                img.info["native"] = native
    return img


def _read_all(stream: BinaryIO) -> bytes:
    stream.seek(0)
    return stream.read()


@dataclass(frozen=True)
class NativeJpeg:
    """Where the pixels of a JPEG that :func:`decode_image` decoded reduced (``draft_side``) are
    found at the resolution it decodes without ``draft_side``; ``image.info["native"]``.

    The brush-stroke branch cuts its patches from the luma at this resolution
    (:func:`stylecluster.features.patches.extract_patches_native`).
    """

    source: bytes | str = field(repr=False)  # the file's bytes, or its path when it was too large to read whole

    def _open(self) -> Image.Image:
        return Image.open(io.BytesIO(self.source) if isinstance(self.source, bytes) else self.source)

    def _decoder(self, mode: str | None = None) -> tuple[Image.Image, int]:
        """The file opened and drafted as :func:`decode_image` does without ``draft_side`` (in
        ``mode`` where the decoder can give it), and its EXIF orientation."""
        img = self._open()
        width, height = img.size
        factor = reduction_factor(width, height)
        if factor > 1 or mode is not None:  # Pillow takes one draft per opened file
            img.draft(mode or img.mode, (math.ceil(width / factor), math.ceil(height / factor)))
        return img, img.getexif().get(0x0112, 1)

    @functools.cached_property
    def size(self) -> tuple[int, int]:
        """(width, height), as displayed, of the image :func:`decode_image` returns without
        ``draft_side`` (read from the header: nothing is decoded)."""
        with _decoding():
            img, orientation = self._decoder()
            factor = reduction_factor(*img.size)
            width, height = (math.ceil(img.width / factor), math.ceil(img.height / factor)) if factor > 1 else img.size
        return (height, width) if orientation in (5, 6, 7, 8) else (width, height)

    def luminance(self) -> np.ndarray:
        """The JPEG's own luma (its Y channel: no colour conversion) as uint8 (height, width), at
        :attr:`size`: 1 byte a pixel, reduced as :func:`decode_image` reduces images larger than
        :data:`MAX_WORKING_PIXELS`.

        Why the whole file at full scale, measured on 3,000-px JPEGs made from the AIC paintings
        (quality 90, one thread, process time, idle machine): Pillow decodes them in 31 ms as RGB,
        15 ms as luma alone, 13 ms at 1/4 scale — the entropy decoding of the whole file, which any
        decoder must do to reach a region, is ~11 ms of the 15. A region decode (libjpeg-turbo's
        ``jpeg_skip_scanlines``/``jpeg_crop_scanline``) could save at most the other 4 ms, and no
        installed package offers it; Pillow cannot stop early without private hacks (its decoder
        reports a broken stream). The full-scale luma costs 1 byte a pixel (24 MB at most).
        """
        with _decoding():
            img, orientation = self._decoder("L")  # the same DCT scale, the luma channel alone
            img.load()
            if reduction_factor(*img.size) > 1:
                img = _reduce(img, reduction_factor(*img.size))
            if orientation != 1:  # exif_transpose copies the image even when it has nothing to do
                img = ImageOps.exif_transpose(img) or img
            if img.mode != "L":  # CMYK JPEGs have no luma channel to decode alone
                img = _to_rgb(img).convert("L")
        gray = np.asarray(img, dtype=np.uint8)
        if gray.shape != (self.size[1], self.size[0]):
            raise BadImage(f"corrupt image: full-resolution decode gave {gray.shape[1]}x{gray.shape[0]}, expected {self.size[0]}x{self.size[1]}", "corrupt")
        return gray


def load_image(path: str | Path, max_pixels: int = 200_000_000, min_side: int = 32, draft_side: int | None = None) -> Image.Image:
    """Read and decode one file (streamed, never read whole into memory); raises
    :class:`BadImage` with the reason. ``draft_side``: as :func:`decode_image`."""
    with _reading(), open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise BadImage("empty file (0 bytes)", "empty")
        return decode_image(f, max_pixels=max_pixels, min_side=min_side, draft_side=draft_side)


def read_hashed(path: str | Path) -> tuple[FileInfo, bytes | None]:
    """The file's content hash, and its bytes when it is at most :data:`WHOLE_READ_BYTES` (else
    None: it was hashed streamed, and is decoded from the file).

    Embedding hashes here, in the decoding workers, from the read that decodes the file, instead
    of in a pass of its own before the first batch (features/embedder.py).
    """
    with _reading(), open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise BadImage("empty file (0 bytes)", "empty")
        if size <= WHOLE_READ_BYTES:
            data = f.read()
            return FileInfo(hashlib.sha256(data).hexdigest(), len(data)), data
    return hash_file(path), None
