"""Training the global branch's backbone for style: what the recipes (simclr, csd) share.

A recipe says which heads sit on the backbone's pooled features, how a batch is drawn and what
the loss is; everything else — decoding the images once, the style-preserving views, the frozen
CNN stem, checkpoints, export — is here, and the loop itself in :mod:`.loop`. Recipes register
themselves by name, so the CLI never branches on a method.

The checkpoint ``out`` holds the network as ``backbone.*`` (+ ``style_head.weight`` when the
recipe trains a style projection) and loads directly as backbone weights:
``stylecluster embed --backbone NAME --weights out.pt``; :func:`export_global` writes the same
weights alone, in fp16, for shipping.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import load_dataclass_yaml
from ..data.discovery import discover_images, relative_name
from ..data.labels import read_labels
from ..data.preload import load_images
from ..data.splits import artist_groups
from ..device import resolve_device
from ..io import save_atomic
from ..features.backbones import StyleProjection, WeightsError, create_backbone, read_state_dict, split_style_head
from .augment import ViewParams, style_views
from .loop import Schedule, WarmupCosine, fit, make_optimizer
from ..errors import ConfigError, InputError
from ..registry import Registry


@dataclass
class GlobalTrainConfig:
    """One training run of the global backbone (``configs/train_simclr.yaml``, ``train_csd.yaml``,
    ``train_csd_cached.yaml``: with ``cut``, cached-activation fine-tuning of Lite0, train/cached.py)."""

    method: str = "simclr"
    backbone: str = "vit_hybrid_lite0"  # a timm ViT name or a registered ViT entry
    weights: str | None = None  # None = the entry's offline start (the hybrid: pretrained Lite0 stem)
    image_size: int = 128  # training views' side (the model keeps its native position grid, interpolated)
    cache_size: int = 144  # images are decoded once, shorter side resized to this, centre-cropped
    freeze_stem: bool = True  # the CNN stem of a hybrid; the patch projection of a plain ViT
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    temperature: float = 0.1
    hidden_dim: int = 512  # SSL projection head
    projection_dim: int = 128
    crop_scale: tuple[float, float] = (0.35, 1.0)
    max_rotation: float = 10.0
    style_dim: int = 128  # csd: style projection size
    images_per_artist: int = 4  # csd: images of one artist drawn together (positives in a batch)
    ssl_weight: float = 1.0  # csd: weight of the self-supervised term
    # cached-activation fine-tuning (train/cached.py) of an EfficientNet: freeze the backbone up
    # to this block ("blocks.5"), cache its output once per view, train the layers above it
    cut: str | None = None
    views_per_image: int = 4  # with a cut: augmented views cached per image
    cache_dir: str | None = None  # with a cut: the view cache's folder (default: beside --out)
    seed: int = 0

    def views(self) -> ViewParams:
        return ViewParams(size=self.image_size, scale=tuple(self.crop_scale), max_rotation=self.max_rotation)

    def schedule(self) -> Schedule:
        return Schedule(self.epochs, self.lr, self.weight_decay, self.warmup_epochs, self.seed)


def load_train_config(path: str | Path | None = None, **overrides) -> GlobalTrainConfig:
    """A YAML file's settings over the defaults, then ``overrides`` (None values ignored)."""
    return load_dataclass_yaml(GlobalTrainConfig, path, "train config", **overrides)


# ----------------------------------------------------------------------------- recipes


class Recipe:
    """Heads, batches and loss of one training method."""

    name: ClassVar[str]
    needs_labels: ClassVar[bool] = False

    def __init__(self, config: GlobalTrainConfig):
        self.config = config

    def heads(self, num_features: int) -> tuple[nn.Module, StyleProjection | None]:
        """(self-supervised projection head, style projection or None)."""
        raise NotImplementedError

    def batches(self, groups: np.ndarray, generator: torch.Generator) -> list[torch.Tensor]:
        """Row indices of each batch of one epoch; by default a shuffle without the ragged end."""
        order = torch.randperm(len(groups), generator=generator)
        size = min(self.config.batch_size, len(groups))
        return [order[i : i + size] for i in range(0, len(order) - size + 1, size)]

    def loss(self, net: "StyleNet", features: torch.Tensor, groups: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms (``loss`` = the total) for pooled features of two views stacked (2B, F)."""
        raise NotImplementedError


RECIPES: Registry[type[Recipe]] = Registry("training method")


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: registers ``cls`` under its ``name``."""
    return RECIPES.register(cls.name, cls)


def available_recipes() -> list[str]:
    return RECIPES.names()


def create_recipe(config: GlobalTrainConfig) -> Recipe:
    return RECIPES.get(config.method)(config)


# ----------------------------------------------------------------------------- model


def stem_module(model: nn.Module) -> nn.Module:
    """The part ``freeze_stem`` freezes: a hybrid's CNN, or a plain ViT's patch projection (frozen
    random patch projections stabilise self-supervised ViT training; Chen et al. 2021, MoCo v3 §4)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None:
        raise ConfigError("freeze_stem needs a ViT backbone (one with a patch embedding)")
    return getattr(embed, "backbone", embed)


class StyleNet(nn.Module):
    """Backbone + heads; ``state_dict`` keys are what :func:`create_backbone` loads."""

    def __init__(self, backbone: nn.Module, ssl_head: nn.Module, style_head: StyleProjection | None, freeze_stem: bool):
        super().__init__()
        self.backbone = backbone
        self.ssl_head = ssl_head
        self.style_head = style_head
        self._frozen = stem_module(backbone) if freeze_stem else None
        if self._frozen is not None:
            self._frozen.requires_grad_(False)

    def train(self, mode: bool = True) -> "StyleNet":
        super().train(mode)
        if self._frozen is not None:
            self._frozen.eval()  # frozen BatchNorm statistics too
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def build_net(config: GlobalTrainConfig, recipe: Recipe) -> tuple[StyleNet, dict]:
    """The network to train (seeded) and the backbone's data config."""
    torch.manual_seed(config.seed)
    # dynamic size: trained at image_size on the model's native position grid (interpolated),
    # so checkpoints load into the default model and embed at any size the same way
    backbone = create_backbone(config.backbone, config.weights, dynamic_img_size=True)
    ssl_head, style_head = recipe.heads(backbone.model.num_features)
    return StyleNet(backbone.model, ssl_head, style_head, config.freeze_stem), backbone.data_config


# ----------------------------------------------------------------------------- data


def group_codes(labels: pd.DataFrame | None, n: int, column: str = "artist") -> np.ndarray:
    """Integer artist codes per row (rows without an artist get codes of their own)."""
    if labels is None:
        return np.arange(n)
    return pd.factorize(artist_groups(labels.reset_index(drop=True), column))[0]


def data_id(names: Sequence[str], config: GlobalTrainConfig) -> str:
    digest = hashlib.sha256("\n".join(names).encode())
    digest.update(f"{config.cache_size}".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- training


def _plain(config: GlobalTrainConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def train_on_images(
    images: torch.Tensor,
    groups: np.ndarray,
    config: GlobalTrainConfig,
    out: str | Path,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    data: str = "",
) -> list[dict[str, float]]:
    """Train on decoded uint8 images (N, 3, S, S) with artist codes ``groups`` (N,)."""
    device = resolve_device(device) if isinstance(device, str) else device
    recipe = create_recipe(config)
    net, data_config = build_net(config, recipe)
    views, mean, std = config.views(), data_config["mean"], data_config["std"]
    group_t = torch.as_tensor(np.asarray(groups), dtype=torch.long)

    def loss_fn(index: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = images[index].to(device, non_blocking=True)
        pair = torch.cat([style_views(x, views, generator, mean, std), style_views(x, views, generator, mean, std)])
        return recipe.loss(net, net(pair), group_t[index].to(device))

    metadata = {
        "data": data,
        "config": {k: v for k, v in _plain(config).items() if k != "epochs"},
        "backbone": config.backbone,
        "image_size": config.image_size,
        "method": config.method,
    }
    schedule = config.schedule()
    net.to(device)
    return fit(net, make_optimizer(net, schedule), loss_fn, lambda g: recipe.batches(np.asarray(groups), g), schedule.epochs,
               schedule.seed, out, device, WarmupCosine(schedule), resume=resume, progress=progress, metadata=metadata)


def train_global(
    images_dir: str | Path,
    out: str | Path,
    config: GlobalTrainConfig,
    labels_csv: str | Path | None = None,
    device: str = "auto",
    workers: int = 4,
    resume: bool = True,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train on the images below ``images_dir``; with ``labels_csv`` only on its rows (its
    ``path`` column is relative to ``images_dir``, its ``artist`` column groups them)."""
    root = Path(images_dir)
    recipe_cls = RECIPES.get(config.method)
    labels = None
    if labels_csv is not None:
        labels = read_labels(labels_csv, None, keep=("artist",))
        paths = [root / p for p in labels["path"]]
    elif recipe_cls.needs_labels:
        raise InputError(f"--method {config.method} learns from artists: pass --labels LABELS.csv with an 'artist' column")
    else:
        paths = discover_images(root)
    if not paths:
        raise InputError(f"{root}: no images found")
    if config.cut is not None:
        return _train_global_cached(root, paths, labels, config, out, device, workers, resume, progress)
    images, kept, skipped = load_images(paths, config.cache_size, workers, progress)
    for line in skipped:
        tqdm.write(f"skipped {line}")
    if labels is not None:
        labels = labels.iloc[kept]
    names = [relative_name(paths[i], root) for i in kept]
    return train_on_images(images, group_codes(labels, len(kept)), config, out, device, resume, progress, data_id(names, config))


def _train_global_cached(root: Path, paths: list[Path], labels: pd.DataFrame | None, config: GlobalTrainConfig, out: str | Path,
                         device: str, workers: int, resume: bool, progress: bool) -> list[dict[str, float]]:
    """``train_global`` with a cut: the frozen part's views cached once (resumable), then the rest trained."""
    from .cached import build_view_cache, train_cached

    names = [relative_name(p, root) for p in paths]
    folder = Path(config.cache_dir) if config.cache_dir else Path(f"{out}.views")
    cache = build_view_cache(paths, names, config, folder, workers, progress, resolve_device(device))
    skipped = {row for row, _ in cache.skipped}
    for _, line in cache.skipped:
        tqdm.write(f"skipped {line}")
    rows = np.array([i for i in range(len(paths)) if i not in skipped], dtype=np.int64)
    return train_cached(cache, group_codes(labels, len(paths))[rows], config, out, rows, resolve_device(device), resume, progress)


def export_global(checkpoint: str | Path, out: str | Path, fp16: bool = True) -> Path:
    """The trained backbone (+ style projection) alone, loadable with ``--weights``."""
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state, style = split_style_head(read_state_dict(checkpoint))
    weights = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not weights:
        raise WeightsError(f"{checkpoint}: not a train-global checkpoint (no backbone.* tensors)")
    if style is not None:
        weights["style_head.weight"] = style
    if fp16:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    meta = raw.get("metadata", {})
    exported = {"state_dict": weights, "backbone": meta.get("backbone"), "image_size": meta.get("image_size"), "method": meta.get("method")}
    return save_atomic(out, lambda tmp: torch.save(exported, tmp))


# Registers the recipes (imported last: they subclass Recipe).
from . import csd, simclr  # noqa: E402,F401
