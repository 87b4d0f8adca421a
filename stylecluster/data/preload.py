"""Decoding a set of training images once into memory, as square uint8 tensors."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import InputError
from .decode import BadImage, load_image


def square_pixels(image: Image.Image, size: int) -> np.ndarray:
    """The image resized so its shorter side is ``size`` and centre-cropped to a square: (size, size, 3) uint8."""
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC, reducing_gap=3.0)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_images(paths: Sequence[Path], size: int, workers: int = 4, progress: bool = True) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode images once into uint8 (N, 3, size, size); returns the tensor, the rows of ``paths``
    it holds, and the skipped files' messages."""

    def one(path):
        try:
            return square_pixels(load_image(path, min_side=1), size), None
        except BadImage as exc:
            return None, f"{path}: {exc}"

    arrays, kept, skipped = [], [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, (array, error) in enumerate(tqdm(pool.map(one, paths), total=len(paths), desc="decoding", unit="img", disable=not progress)):
            if error:
                skipped.append(error)
            else:
                arrays.append(array)
                kept.append(i)
    if not arrays:
        raise InputError("no training image could be decoded")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), kept, skipped
