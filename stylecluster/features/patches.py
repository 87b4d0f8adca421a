"""Brush-stroke patches: gradient-scored, sampled, and filtered by a Difference of Gaussians.

The pipeline (every parameter lives in :class:`~stylecluster.config.LocalConfig`):

1. luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, OpenCV ``COLOR_RGB2GRAY``);
2. Sobel 3x3 gradients (OpenCV), magnitude ``|∇I| = sqrt(Gx² + Gy²)``;
3. every ``s x s`` patch on a grid of stride ``stride`` is scored by its mean ``|∇I|``; all scores
   come from one integral image of the magnitude (four look-ups per patch, no loop over patches);
4. the top ``top_fraction`` of patches by score are the candidates, ``ceil(top_fraction · N)`` but
   never fewer than ``n_patches`` (ties broken by grid position, row-major);
5. ``n_patches`` candidates are drawn **without replacement** with probability proportional to
   score (successive sampling: each draw ∝ score among the candidates not yet drawn) from
   ``numpy.random.default_rng(seed)``; the same image and seed give the same patches. Sampling
   instead of taking the best n spreads the patches over the picture;
6. each drawn patch is filtered by ``DoG = G(sigma1) * P - G(sigma2) * P`` (reflecting borders);
7. ``P_final = 255 (|DoG| - min|DoG|) / (max|DoG| - min|DoG|)`` per patch; a patch whose
   ``|DoG|`` range is below :data:`FLAT_RANGE` (a constant patch) becomes all zeros, never NaN.

Defined behaviour at the edges
------------------------------
* **Patch scale.** With ``patch_scale="pixels"`` a patch is ``patch_size`` pixels of the image as
  decoded. With ``"relative"`` the image is first resampled (area interpolation when shrinking)
  so that its shorter side is ``patch_size / relative_size``; a patch then spans ``relative_size``
  of the shorter side whatever the scan's resolution, and arrives at ``patch_size`` pixels.
* **Too few candidates.** When the grid holds fewer than ``n_patches`` positions (an image
  smaller than a patch, or e.g. 90x150 px), the image is upsampled (bilinear, aspect kept) until
  its shorter side is ``patch_size + stride · (ceil(sqrt(n)) - 1)``, which guarantees at least
  ``ceil(sqrt(n))²  ≥ n`` positions. Extreme strips (aspect beyond :data:`MAX_ASPECT`) are
  squashed to that aspect instead of being blown up. A 1x1 or all-black image thus yields
  ``n`` all-zero DoG patches.
* **Zero scores.** Draws are ∝ score; when fewer than ``n`` candidates have a non-zero score
  (flat regions), the zero-score candidates share a tiny weight so the remaining draws are
  uniform among them; a completely flat image is sampled uniformly.
* **Huge images.** Gradients and integral images are computed in horizontal strips of at most
  ``max_strip_pixels`` pixels (with a one-row halo, so the scores equal the whole-image ones),
  bounding the working memory for e.g. 20,000 x 10,000 px scans.

Returned boxes are ``(x, y, width, height)`` in the pixels of the image as given.

Big JPEGs
---------
The embedder decodes a big JPEG once, reduced by DCT scaling to what the global branch needs
(:func:`stylecluster.data.decode.decode_image`, ``draft_side``); the brush-stroke patches need the
file's own pixels, and :func:`extract_patches_native` reads only its luma at native resolution
(:class:`~stylecluster.data.decode.NativeJpeg`: the Y channel decoded alone, 1 byte a pixel,
15 ms instead of 31 for RGB at 3,000 px), scores the native grid's patches (same positions,
``top_fraction`` and draws) by the mean Sobel magnitude of their windows on that luma reduced
:data:`SCORING_REDUCTION` times, and cuts the drawn patches at native resolution. Why 2: on 12
AIC paintings enlarged to 3,000 px, the top-10 % candidates scored at 1/2 share 90 % (min 76 %)
with the full-resolution scoring's, Spearman 0.989 over all patches; at 1/4 only 71 % (min 35 %),
at 1/8 54 %; Sobel and integral image at 1/2 cost a quarter of the full-size 53 ms. Files the
embedder does not reduce — every file near the network's size, e.g. all 224-px ones — take
:func:`extract_patches` unchanged, so their vectors are bit-identical.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..config import LocalConfig
from ..io import save_atomic
from ..errors import ConfigError

#: |DoG| ranges below this (on the 0..255 intensity scale) count as a constant patch.
FLAT_RANGE = 1e-3
#: Upsampling a too-small image never makes it longer than this many times its shorter side.
MAX_ASPECT = 32
#: Working-memory bound for gradient strips (pixels per strip). A strip costs ~20 bytes a pixel
#: (two Sobel derivatives and their magnitude in float32, the float64 integral image): 80 MB at
#: 4 megapixels; at 16 it was 320 MB, most of what a 24-megapixel image cost to embed.
MAX_STRIP_PIXELS = 1 << 22
#: Big JPEGs' patches are scored on their luma reduced this many times ("Big JPEGs" above).
SCORING_REDUCTION = 2
# Most channels OpenCV 5 filters in one image (measured: 128 works, 129 does not).
_CV_MAX_CHANNELS = 128

#: LocalConfig fields that determine the patches (recorded in provenance and checkpoints).
PATCH_FIELDS = ("patch_size", "stride", "top_fraction", "n_patches", "sigma1", "sigma2", "patch_scale", "relative_size")


@dataclass
class Patches:
    """Patches of one image, in draw order (or score order for :func:`candidate_patches`)."""

    boxes: np.ndarray  # (n, 4) int64: x, y, width, height in the input image's pixels
    scores: np.ndarray  # (n,) float32: mean gradient magnitude of each patch
    raw: np.ndarray  # (n, s, s) uint8: luminance patches (resampled to s x s)
    dog: np.ndarray  # (n, s, s) float32 in [0, 255]: normalised |DoG|

    def __len__(self) -> int:
        return len(self.scores)


def patch_params(config: LocalConfig) -> dict:
    """The configuration fields that determine the patches."""
    return {name: getattr(config, name) for name in PATCH_FIELDS}


# ----------------------------------------------------------------------------- scoring


def luminance(image: Image.Image | np.ndarray) -> np.ndarray:
    """BT.601 luma as uint8 (H, W) from a PIL image or an RGB / gray uint8 array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim == 2:
        return np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def sobel_magnitude(gray: np.ndarray) -> np.ndarray:
    """|∇I| from OpenCV's 3x3 Sobel derivatives, float32 (H, W)."""
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def grid_positions(length: int, size: int, stride: int) -> np.ndarray:
    """Start offsets of the patches that fit along one axis."""
    return np.arange(0, length - size + 1, stride, dtype=np.int64) if length >= size else np.zeros(0, np.int64)


def patch_scores(gray: np.ndarray, size: int, stride: int, max_strip_pixels: int = MAX_STRIP_PIXELS) -> np.ndarray:
    """Mean Sobel magnitude of every ``size x size`` patch on the ``stride`` grid, (rows, cols)."""
    height, width = gray.shape
    ys, xs = grid_positions(height, size, stride), grid_positions(width, size, stride)
    return window_means(gray, ys, ys + size, xs, xs + size, max_strip_pixels)


def window_means(gray: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray,
                 max_strip_pixels: int = MAX_STRIP_PIXELS) -> np.ndarray:
    """Mean Sobel magnitude of ``gray`` over rows ``[y0[i], y1[i])`` x columns ``[x0[j], x1[j])``
    for every (i, j), float32 (len(y0), len(x0)); ``y0`` and ``y1`` non-decreasing.

    Each strip's window sums are four integral-image look-ups, broadcast over all its windows.
    """
    height, width = gray.shape
    sums = np.zeros((len(y0), len(x0)), np.float64)
    if sums.size == 0:
        return sums.astype(np.float32)
    budget = max(1, max_strip_pixels // max(width, 1))  # rows of the image per strip
    r0 = 0
    while r0 < len(y0):
        r1 = max(r0 + 1, int(np.searchsorted(y1, y0[r0] + budget, side="right")))
        top, bottom = int(y0[r0]), int(y1[r0:r1].max())
        # One halo row each side makes the strip's Sobel identical to the whole image's.
        lo, hi = max(top - 1, 0), min(bottom + 1, height)
        magnitude = sobel_magnitude(gray[lo:hi])[top - lo : bottom - lo]
        ii = cv2.integral(magnitude, sdepth=cv2.CV_64F)
        a, b = (y0[r0:r1] - top)[:, None], (y1[r0:r1] - top)[:, None]
        c, d = x0[None, :], x1[None, :]
        sums[r0:r1] = ii[b, d] - ii[a, d] - ii[b, c] + ii[a, c]
        r0 = r1
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return (sums / area).astype(np.float32)


def _scaled_windows(starts: np.ndarray, size: int, scale: float, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``[start, start + size)`` of the native image → [lo, hi) on an image ``scale`` times
    as large, at least one pixel wide and inside its ``length``."""
    lo = np.clip(np.round(starts * scale), 0, length - 1).astype(np.int64)
    hi = np.clip(np.round((starts + size) * scale), lo + 1, length).astype(np.int64)
    return lo, hi


# ----------------------------------------------------------------------------- selection


def n_candidates(n_positions: int, top_fraction: float, n: int) -> int:
    """How many top-scoring patches are kept: ceil(fraction · N), at least n, at most N."""
    return min(n_positions, max(n, math.ceil(top_fraction * n_positions)))


def top_candidates(scores: np.ndarray, top_fraction: float, n: int) -> np.ndarray:
    """Flat indices of the candidate patches, best first (ties by position)."""
    flat = np.ravel(scores)
    order = np.argsort(-flat, kind="stable")
    return order[: n_candidates(flat.size, top_fraction, n)]


def sample_without_replacement(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct indices, successively drawn ∝ weight; returned in draw order.

    Zero weights only get drawn once every positive one has been (see module docstring).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if n > weights.size:
        raise ValueError(f"cannot draw {n} distinct items from {weights.size}")
    positive = weights > 0
    if positive.sum() < n:
        # Orders of magnitude below any positive weight: the positives are (practically) drawn
        # first, then the rest uniformly.
        floor = 1e-9 * weights.max() if positive.any() else 1.0
        weights = np.where(positive, weights, floor)
    return rng.choice(weights.size, size=n, replace=False, p=weights / weights.sum())


# ----------------------------------------------------------------------------- filtering


def gaussian_blur(stack: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the last two axes of a float32 (n, H, W) stack, reflecting borders.

    The kernel is scipy's ``gaussian_filter`` kernel (radius ``int(4 sigma + 0.5)``, border mode
    ``reflect`` = OpenCV's ``BORDER_REFLECT``), run by OpenCV on the patches as the channels of one
    image, in float64 as scipy computes: 0.41 ms for an image's five 64-px patches against 0.77 ms
    with scipy (one thread, process time); the float32 differences of Gaussians agree within 3e-5. (OpenCV in
    float32 took 0.21 ms but differed by 8e-5, enough to move the local vectors by 1.6e-4.)
    """
    n, height, width = stack.shape
    size = 2 * int(4.0 * sigma + 0.5) + 1
    out = np.empty_like(stack)
    for start in range(0, n, _CV_MAX_CHANNELS):
        channels = np.ascontiguousarray(stack[start : start + _CV_MAX_CHANNELS].transpose(1, 2, 0), dtype=np.float64)
        blurred = cv2.GaussianBlur(channels, (size, size), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
        out[start : start + _CV_MAX_CHANNELS] = blurred.reshape(height, width, -1).transpose(2, 0, 1)
    return out


def difference_of_gaussians(patches: np.ndarray, sigma1: float, sigma2: float) -> np.ndarray:
    """G(sigma1) * P - G(sigma2) * P over the last two axes of a (..., H, W) stack."""
    stack = np.asarray(patches, dtype=np.float32)
    flat = stack.reshape(-1, *stack.shape[-2:])
    if flat.shape[0] == 0:
        return stack.copy()
    return (gaussian_blur(flat, sigma1) - gaussian_blur(flat, sigma2)).reshape(stack.shape)


def normalise_dog(dog: np.ndarray) -> np.ndarray:
    """|DoG| min-max scaled to [0, 255] per patch; constant patches become zeros."""
    magnitude = np.abs(np.asarray(dog, dtype=np.float32))
    lo = magnitude.min(axis=(-2, -1), keepdims=True)
    span = magnitude.max(axis=(-2, -1), keepdims=True) - lo
    flat = span < FLAT_RANGE
    scaled = 255.0 * (magnitude - lo) / np.where(flat, 1.0, span)
    return np.where(flat, 0.0, np.clip(scaled, 0.0, 255.0)).astype(np.float32)


# ----------------------------------------------------------------------------- pipeline


def working_image(gray: np.ndarray, config: LocalConfig) -> tuple[np.ndarray, float, float]:
    """The luminance image patches are cut from, and its scale (x, y) relative to the input."""
    height, width = gray.shape
    size, stride, n = config.patch_size, config.stride, config.n_patches
    target = None
    if config.patch_scale == "relative":
        if not 0 < config.relative_size <= 1:
            raise ConfigError(f"relative_size must be in (0, 1], got {config.relative_size}")
        target = size / config.relative_size
    elif config.patch_scale != "pixels":
        raise ConfigError(f"patch_scale must be 'pixels' or 'relative', got {config.patch_scale!r}")
    short, long = min(height, width), max(height, width)
    new_short = float(short) if target is None else target
    new_long = long * new_short / short

    def n_positions(a: float, b: float) -> int:
        return len(grid_positions(round(a), size, stride)) * len(grid_positions(round(b), size, stride))

    if n_positions(new_short, new_long) < n:
        new_short = size + stride * (math.ceil(math.sqrt(n)) - 1)
        new_long = min(long * new_short / short, MAX_ASPECT * new_short)
    new_short, new_long = round(new_short), max(round(new_long), round(new_short))
    new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
    if (new_h, new_w) == (height, width):
        return gray, 1.0, 1.0
    shrinking = new_h * new_w < height * width
    resized = cv2.resize(gray, (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return resized, new_w / width, new_h / height


def _to_input_pixels(start: np.ndarray, size: int, scale: float, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Patch offsets on the working image → (offset, extent) in the input image's pixels."""
    lo = np.clip(np.floor(start / scale), 0, length - 1).astype(np.int64)
    hi = np.clip(np.ceil((start + size) / scale), lo + 1, length).astype(np.int64)
    return lo, hi - lo


@dataclass
class _ScoredImage:
    gray: np.ndarray  # working luminance image
    scale: tuple[float, float]  # working / input pixels, (x, y)
    shape: tuple[int, int]  # input image (height, width)
    scores: np.ndarray  # flat patch scores, row-major over the grid
    n_cols: int

    def gather(self, order: np.ndarray, config: LocalConfig) -> Patches:
        size, stride = config.patch_size, config.stride
        ys, xs = (order // self.n_cols) * stride, (order % self.n_cols) * stride
        offsets = np.arange(size)
        raw = self.gray[ys[:, None, None] + offsets[None, :, None], xs[:, None, None] + offsets[None, None, :]]
        dog = normalise_dog(difference_of_gaussians(raw, config.sigma1, config.sigma2))
        (x, w), (y, h) = _to_input_pixels(xs, size, self.scale[0], self.shape[1]), _to_input_pixels(ys, size, self.scale[1], self.shape[0])
        return Patches(boxes=np.stack([x, y, w, h], axis=1), scores=self.scores[order], raw=raw, dog=dog)


def _score_image(image: Image.Image | np.ndarray, config: LocalConfig) -> _ScoredImage:
    gray = luminance(image)
    work, sx, sy = working_image(gray, config)
    grid = patch_scores(work, config.patch_size, config.stride)
    return _ScoredImage(work, (sx, sy), gray.shape, grid.ravel(), grid.shape[1])


def extract_patches(image: Image.Image | np.ndarray, config: LocalConfig | None = None, seed: int = 0) -> Patches:
    """The ``n_patches`` patches of one image, drawn ∝ gradient score from the top candidates."""
    config = config or LocalConfig()
    scored = _score_image(image, config)
    candidates = top_candidates(scored.scores, config.top_fraction, config.n_patches)
    drawn = sample_without_replacement(scored.scores[candidates], config.n_patches, np.random.default_rng(seed))
    return scored.gather(candidates[drawn], config)


def extract_patches_native(native, config: LocalConfig | None = None, seed: int = 0) -> Patches:
    """:func:`extract_patches` of a big JPEG the embedder decoded reduced, the patches scored on its
    luma reduced :data:`SCORING_REDUCTION` times and cut from its luma at native resolution
    (module docstring, "Big JPEGs"). Boxes are in native pixels; scores are the reduced image's.

    ``native``: an object whose ``luminance()`` is the image's uint8 luma at the resolution the
    patches are cut from (:class:`stylecluster.data.decode.NativeJpeg`).
    """
    config = config or LocalConfig()
    size, stride, n = config.patch_size, config.stride, config.n_patches
    gray = native.luminance()
    height, width = gray.shape
    ys, xs = grid_positions(height, size, stride), grid_positions(width, size, stride)
    if config.patch_scale != "pixels" or len(ys) * len(xs) < n:  # resampled as extract_patches does
        return extract_patches(gray, config, seed)
    f = SCORING_REDUCTION
    even = gray[: height // f * f, : width // f * f]
    small = cv2.resize(even, (even.shape[1] // f, even.shape[0] // f), interpolation=cv2.INTER_AREA)  # f x f box means
    y0, y1 = _scaled_windows(ys, size, 1 / f, small.shape[0])
    x0, x1 = _scaled_windows(xs, size, 1 / f, small.shape[1])
    scores = window_means(small, y0, y1, x0, x1).ravel()
    candidates = top_candidates(scores, config.top_fraction, n)
    drawn = sample_without_replacement(scores[candidates], n, np.random.default_rng(seed))
    return _ScoredImage(gray, (1.0, 1.0), (height, width), scores, len(xs)).gather(candidates[drawn], config)


def candidate_patches(image: Image.Image | np.ndarray, config: LocalConfig | None = None) -> Patches:
    """All top-``top_fraction`` candidate patches of one image, best first (the training set)."""
    config = config or LocalConfig()
    scored = _score_image(image, config)
    return scored.gather(top_candidates(scored.scores, config.top_fraction, config.n_patches), config)


def extract_patches_to_dir(
    image_path: str | Path, out_dir: str | Path, config: LocalConfig | None = None, seed: int = 0, max_pixels: int = 200_000_000
) -> list[Path]:
    """Write one image's drawn patches as PNGs: ``<stem>_p<i>_raw.png``, ``<stem>_p<i>_dog.png``.

    Also writes ``<stem>_patches.json`` (boxes, scores, parameters). Returns the PNG paths.
    """
    from ..data.decode import load_image

    config = config or LocalConfig()
    image_path, out_dir = Path(image_path), Path(out_dir)
    patches = extract_patches(load_image(image_path, max_pixels=max_pixels, min_side=1), config, seed)
    written = []
    for i, (raw, dog) in enumerate(zip(patches.raw, patches.dog)):
        for kind, pixels in (("raw", raw), ("dog", np.round(dog).astype(np.uint8))):
            path = out_dir / f"{image_path.stem}_p{i}_{kind}.png"
            written.append(save_atomic(path, lambda tmp: Image.fromarray(pixels, "L").save(tmp)))
    record = {
        "image": str(image_path),
        "seed": seed,
        "boxes_xywh": patches.boxes.tolist(),
        "scores": [round(float(s), 4) for s in patches.scores],
        "params": patch_params(config),
    }
    save_atomic(out_dir / f"{image_path.stem}_patches.json", json.dumps(record, indent=2))
    return written
