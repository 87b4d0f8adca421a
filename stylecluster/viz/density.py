"""The map's density overview: every point counted into a raster, drawn under a sample of points.

At ten million points the per-point numbers alone are ~290 MB of ``points.js`` and far past what a
browser draws in seconds, so a large map shows every point as a picture instead: the map's extent
cut into pixels, each pixel counting its points per legend group. Its colour is the groups'
colours mixed by their share of the pixel, its opacity the pixel's count on a log scale (a
cluster core holds thousands of times more points than its fringe; a linear scale would show only
the cores). The counts are added a batch of points at a time (:meth:`DensityRaster.partial_fit`),
so the raster needs the coordinates and the groups' ``uint16`` codes, never a copy of them: its own
memory is ``groups x height x width`` counts (40 x 768 x 768 x 8 bytes = 189 MB at most, and
as much again while a batch is added).
"""
from __future__ import annotations

import base64
import io

import numpy as np

#: The raster's longer side in pixels: finer than the plot's 720-px height, so a pixel is at most
#: a screen pixel before the reader zooms, and ~100-300 KB as PNG.
RASTER_SIDE = 768
#: Points counted per batch: bounds the temporary pixel and key arrays (8 bytes a point each).
BATCH_ROWS = 1_000_000
#: Opacity of a pixel holding a single point; the fullest pixel is opaque.
MIN_ALPHA = 0.25


def raster_shape(extent: tuple[float, float, float, float], side: int = RASTER_SIDE) -> tuple[int, int]:
    """(height, width) with the extent's aspect ratio and ``side`` pixels along its longer side."""
    x0, x1, y0, y1 = extent
    width, height = max(x1 - x0, 1e-12), max(y1 - y0, 1e-12)
    if width >= height:
        return max(1, round(side * height / width)), side
    return side, max(1, round(side * width / height))


def padded_extent(coords: np.ndarray, pad: float = 0.02, batch_rows: int = BATCH_ROWS) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) around every point, ``pad`` of the span added on each side, read in batches."""
    low, high = np.full(2, np.inf), np.full(2, -np.inf)
    for start in range(0, len(coords), batch_rows):
        block = np.asarray(coords[start : start + batch_rows], dtype=np.float64)
        low, high = np.minimum(low, block.min(axis=0)), np.maximum(high, block.max(axis=0))
    span = np.maximum(high - low, 1e-6)
    low, high = low - pad * span, high + pad * span
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


class DensityRaster:
    """Points per pixel and legend group over a fixed extent, counted a batch at a time.

    ``extent`` is (x0, x1, y0, y1); row 0 of the raster is the top (``y1``), as in an image.
    Points on the far edges fall into the last pixel; points outside the extent are not counted.

    Learned attributes: ``counts_`` (groups, height, width) ``int64``, ``n_points_`` counted.
    """

    def __init__(self, extent: tuple[float, float, float, float], n_groups: int, side: int = RASTER_SIDE):
        self.extent = tuple(float(v) for v in extent)
        self.n_groups = int(n_groups)
        self.side = side

    def _reset(self) -> None:
        height, width = raster_shape(self.extent, self.side)
        self.counts_ = np.zeros((self.n_groups, height, width), np.int64)
        self.n_points_ = 0

    def partial_fit(self, coords: np.ndarray, groups: np.ndarray) -> "DensityRaster":
        """Add a batch: ``coords`` (n, 2) and each point's group in ``[0, n_groups)``."""
        if not hasattr(self, "counts_"):
            self._reset()
        n_groups, height, width = self.counts_.shape
        x0, x1, y0, y1 = self.extent
        x, y = np.asarray(coords[:, 0], np.float64), np.asarray(coords[:, 1], np.float64)
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        column = np.minimum(((x[inside] - x0) / (x1 - x0) * width).astype(np.int64), width - 1)
        row = np.minimum(((y1 - y[inside]) / (y1 - y0) * height).astype(np.int64), height - 1)
        key = (np.asarray(groups)[inside].astype(np.int64) * height + row) * width + column
        self.counts_ += np.bincount(key, minlength=self.counts_.size).reshape(self.counts_.shape)
        self.n_points_ += int(inside.sum())
        return self

    def fit(self, coords: np.ndarray, groups: np.ndarray, batch_rows: int = BATCH_ROWS) -> "DensityRaster":
        self._reset()
        for start in range(0, len(coords), batch_rows):
            self.partial_fit(coords[start : start + batch_rows], groups[start : start + batch_rows])
        return self

    def rgba(self, colours: list[str]) -> np.ndarray:
        """(height, width, 4) ``uint8``: each pixel the colours of its groups mixed by their share,
        its opacity from :data:`MIN_ALPHA` (one point) to 1 (the fullest pixel) on a log scale,
        transparent where no point falls."""
        rgb = np.array([_hex_rgb(c) for c in colours], np.float64)  # (groups, 3)
        total = self.counts_.sum(axis=0)
        share = self.counts_ / np.maximum(total, 1)
        mixed = np.einsum("ghw,gc->hwc", share, rgb)
        top = np.log1p(max(int(total.max()), 1))
        alpha = np.where(total > 0, MIN_ALPHA + (1 - MIN_ALPHA) * np.log1p(total) / top, 0.0)
        return np.dstack([mixed, alpha * 255]).round().clip(0, 255).astype(np.uint8)

    def png_uri(self, colours: list[str]) -> str:
        """:meth:`rgba` as a PNG data URI, for the plot's layout image."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.rgba(colours), "RGBA").save(buffer, format="PNG", optimize=True)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    if colour.startswith("rgb"):
        return tuple(int(float(v)) for v in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3])
    colour = colour.lstrip("#")
    return tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))
