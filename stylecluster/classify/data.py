"""What the classifier trains on: artist-disjoint splits, class weights, augmented views, and the
cache of frozen-backbone features."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data.splits import split_by_artist
from ..train.augment import ViewParams, style_views
from .config import ClassifierConfig
from ..errors import ConfigError

SPLITS = ("train", "val", "test")


def split_three_ways(labels: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0, column: str = "artist") -> pd.Series:
    """``"train"``/``"val"``/``"test"`` per row, with the *artists* (not the images) divided in
    ``fractions``; an artist's images are always on one side."""
    train, val, test = (float(f) for f in fractions)
    if min(train, val, test) <= 0:
        raise ConfigError(f"split fractions must all be positive, got {list(fractions)}")
    rest, test_rows = split_by_artist(labels, test / (train + val + test), seed, column)
    _, val_rows = split_by_artist(rest, val / (train + val), seed, column)
    side = pd.Series("train", index=labels.index, dtype=object)
    side[test_rows.index] = "test"
    side[val_rows.index] = "val"
    return side


def class_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (K · n_c) (1 for every class of a balanced set; 0 for a class
    with no example, which then never appears as a target)."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    weights = torch.where(counts > 0, len(targets) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def clean_view(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) → float in [0, 1], unaugmented."""
    return images.float().div_(255.0)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB → (B, 1, H, W), ITU-R BT.601 weights."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def augmented_view(images: torch.Tensor, config: ClassifierConfig, generator: torch.Generator) -> torch.Tensor:
    """Random crop (area ``crop_scale``), flip, rotation (≤ ``max_rotation``°), then mild
    brightness, contrast and saturation changes; uint8 (B, 3, S, S) → float in [0, 1]."""
    params = ViewParams(size=config.image_size, scale=tuple(config.crop_scale), max_rotation=config.max_rotation)
    x = style_views(images, params, generator, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    j = config.color_jitter
    brightness, contrast, saturation = (1 - j + 2 * j * torch.rand(3, len(x), 1, 1, 1, generator=generator)).to(x.device)
    x = x * brightness
    mean = luminance(x).mean(dim=(2, 3), keepdim=True)
    x = mean + (x - mean) * contrast
    gray = luminance(x)
    x = gray + (x - gray) * saturation
    return x.clamp_(0.0, 1.0)


@dataclass
class FeatureCache:
    """Frozen-backbone outputs of several views of each image.

    ``features[name][rows[i, v]]`` is view ``v`` of image ``i`` (``rows[i, v] == -1``: not
    computed); view 0 is the unaugmented image.
    """

    features: dict[str, torch.Tensor]
    rows: torch.Tensor  # (N, V) long

    def views_of(self, index: torch.Tensor) -> torch.Tensor:
        return (self.rows[index] >= 0).sum(dim=1)

    def take(self, index: torch.Tensor, view: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = self.rows[index, view]
        return {name: values[rows] for name, values in self.features.items()}

    def to_dict(self) -> dict:
        return {"features": self.features, "rows": self.rows}

    @classmethod
    def from_dict(cls, payload: dict) -> "FeatureCache":
        return cls(payload["features"], payload["rows"])


def view_generator(seed: int, view: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7919 + view)


@torch.inference_mode()
def encode_views(
    model, images: torch.Tensor, augmented_rows: np.ndarray, config: ClassifierConfig,
    device: torch.device, batch_size: int = 32, progress: bool = True,
) -> FeatureCache:
    """Run ``model.encode`` (the frozen parts) once per view: the clean view of every image, and
    ``config.views - 1`` augmented views of the images ``augmented_rows`` (the training set);
    stored in fp16."""
    model.eval().to(device)
    n = len(images)
    augmented_rows = np.asarray(augmented_rows, dtype=np.int64)
    plan = [(0, np.arange(n))] + [(v, augmented_rows) for v in range(1, config.views)]
    rows = torch.full((n, max(1, config.views)), -1, dtype=torch.long)
    chunks: dict[str, list[torch.Tensor]] = {}
    done = 0
    bar = tqdm(total=sum(len(r) for _, r in plan), desc="encoding views", unit="img", disable=not progress)
    for view, members in plan:
        generator = view_generator(config.seed, view)
        for start in range(0, len(members), batch_size):
            index = torch.as_tensor(members[start : start + batch_size])
            batch = images[index].to(device)
            x = clean_view(batch) if view == 0 else augmented_view(batch, config, generator)
            for name, value in model.encode(x).items():
                chunks.setdefault(name, []).append(value.to("cpu", torch.float16))
            rows[index, view] = torch.arange(done, done + len(index))
            done += len(index)
            bar.update(len(index))
    bar.close()
    return FeatureCache({name: torch.cat(values) for name, values in chunks.items()}, rows)
