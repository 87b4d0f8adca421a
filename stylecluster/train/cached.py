"""Cached-activation fine-tuning of a pretrained CNN's upper layers (the global branch's Lite0).

A full forward + backward of EfficientNet-Lite0 runs at ≈ 8 images/s on a 2-core CPU (≈ 25 min
per epoch of the 11.8k artist-labelled images). Its lower layers are generic texture detectors
that the Gram levels read as they are, so the network is cut after a block (``cut``, e.g.
``blocks.5``): everything up to the cut stays frozen at the ImageNet weights and is computed
**once** per augmented view of every training image, into an fp16 cache on disk; only the
layers above the cut train, from the ImageNet weights, on the cached activations. Measured on
this CPU (batch 32, 2 threads): with ``blocks.3`` cached (80 × 14 × 14) the rest trains at
≈ 42 images/s, with ``blocks.5`` cached (192 × 7 × 7) block 6 + the head conv at ≈ 340 images/s.

The loss is CSD's (Somepalli et al. 2024, §4) through the ``csd`` recipe: a supervised
contrastive term over artists (Khosla et al. 2020) on a style projection, in balanced artist
batches (:func:`.loop.grouped_batches`), plus the self-supervised NT-Xent term between two views
of one image (Chen et al. 2020, SimCLR). An optional third term (``dates_weight``, off by default) takes the
labels' ``year`` as weak supervision: the same supervised contrastive loss on the same style
projection, its positives the works of the same ``dates_window``-year bin (a decade by default),
computed over the dated works of the batch only — an undated work is neither anchor, positive nor
negative of it. Both projections are training scaffolding: the
checkpoint loads as plain backbone weights (``embed --weights out.pt``), the branch computes its
pooled + Gram vector from the trained network (Gram levels below the cut are unchanged, those
above it come from the trained layers: with the default levels and ``blocks.5``, level 4, block
6's output), and the closed-form artist-discriminant head is refitted
on those vectors afterwards (``train-style-head``) — the head stays the last step.

View 0 of every image is the whole painting exactly as the global branch embeds it (its resize
and centre crop), so the trained layers see the distribution they will embed; the others are
CSD-style views (:mod:`.augment`: crops of 35–100 % that keep the hand's marks, flips, small
rotations — no colour jitter, which lost accuracy on paintings). The cache is ``views.f16`` (a memory-mapped (N, V, C, H, W) float16 array) + ``manifest.json``
(names, shape, settings, chunks done): filled chunk by chunk, each chunk's views drawn from a
generator seeded by (seed, chunk), the manifest rewritten atomically after each chunk, so a killed
build is completed, not recomputed, and gives the same cache as an uninterrupted one. Nothing is
pickled; RAM holds one chunk of decoded images at a time.
"""
from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import GlobalConfig, load_dataclass_yaml
from ..data.decode import BadImage, load_image
from ..data.preload import square_pixels
from ..errors import ConfigError, InputError
from ..features.backbones import Backbone, create_backbone
from ..features.global_ import GlobalBranch
from ..io import save_atomic
from .augment import style_views
from .csd import multilabel_contrastive_loss
from .global_style import GlobalTrainConfig, _plain, create_recipe
from .loop import fit, make_optimizer, WarmupCosine

FORMAT = "stylecluster.view_cache/1"
CHUNK = 128  # images decoded and pushed through the frozen part at a time (bounds RAM)


# ----------------------------------------------------------------------------- the cut


def cut_index(model: nn.Module, cut: str) -> int:
    """The number of blocks frozen by ``cut`` ("blocks.K": the stem and blocks 0..K)."""
    blocks = getattr(model, "blocks", None)
    match = re.fullmatch(r"blocks\.(\d+)", str(cut))
    if blocks is None or not hasattr(model, "conv_head"):
        raise ConfigError(f"cut {cut}: cached fine-tuning needs an EfficientNet-style backbone (conv_stem, blocks, conv_head)")
    if match is None or int(match.group(1)) >= len(blocks):
        raise ConfigError(f"cut {cut!r} is not a block of this backbone: use blocks.0 … blocks.{len(blocks) - 1}")
    return int(match.group(1)) + 1


def forward_below(model: nn.Module, stop: int, x: torch.Tensor) -> torch.Tensor:
    """The frozen part: stem and blocks ``[0, stop)``."""
    x = model.bn1(model.conv_stem(x))
    for block in model.blocks[:stop]:
        x = block(x)
    return x


def levels_above(model: nn.Module, start: int, levels) -> list[int]:
    """The Gram levels (``forward_intermediates`` indices) computed by the trained layers."""
    return [level for level in levels if model.stage_ends[level] - 1 >= start]


def forward_above(model: nn.Module, start: int, x: torch.Tensor, levels=()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The trained part — blocks ``[start, end)``, the head conv, the pooling: (pooled features,
    the feature maps of the Gram ``levels`` above the cut, in order)."""
    wanted = {model.stage_ends[level] - 1: level for level in levels}  # stage_ends counts the stem as 0
    maps = {}
    for index, block in enumerate(model.blocks[start:], start):
        x = block(x)
        if index in wanted:
            maps[wanted[index]] = x
    return model.forward_head(model.bn2(model.conv_head(x)), pre_logits=True), [maps[level] for level in levels]


class CutNet(nn.Module):
    """The backbone (its part below the cut frozen) + the recipe's projections, run from cached
    activations; ``state_dict`` holds ``backbone.*`` — what :func:`create_backbone` loads — and
    the projections under other names, which a loader drops."""

    def __init__(self, backbone: nn.Module, start: int, ssl_head: nn.Module, projection: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.start = start
        self.ssl_head = ssl_head
        self.projection = projection
        for module in (backbone.conv_stem, backbone.bn1, *backbone.blocks[:start]):
            module.requires_grad_(False)

    @property
    def style_head(self) -> nn.Module:
        # the name the csd recipe's loss uses; stored as ``projection``, so that the checkpoint
        # loads as plain backbone weights and the artist-discriminant head is refitted instead
        return self.projection

    def train(self, mode: bool = True) -> "CutNet":
        super().train(mode)
        # BatchNorm keeps its ImageNet statistics everywhere: most cached views are crops, not the
        # whole paintings the branch embeds, and the running statistics are what embedding uses
        self.backbone.eval()
        return self

    def forward(self, cached: torch.Tensor) -> torch.Tensor:
        return forward_above(self.backbone, self.start, cached)[0]


def start_backbone(config: GlobalTrainConfig) -> tuple[Backbone, int]:
    """The backbone at its starting (ImageNet) weights and the index of its first trained block."""
    backbone = create_backbone(config.backbone, config.weights)
    return backbone, cut_index(backbone.model, config.cut)


# ----------------------------------------------------------------------------- the cache


@dataclass
class ViewCache:
    """The frozen part's output for ``views`` augmented views of every image (fp16, memory-mapped)."""

    folder: Path
    names: list[str]
    views: np.memmap  # (N, V, C, H, W) float16
    fingerprint: str
    skipped: list[tuple[int, str]]  # rows that could not be decoded (left zero) and why

    @classmethod
    def open(cls, folder: str | Path) -> "ViewCache":
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest is None or manifest["chunks_done"] < manifest["chunks"]:
            raise InputError(f"{folder}: not a complete view cache; run the build again to complete it")
        views = np.memmap(folder / "views.f16", dtype=np.float16, mode="r", shape=tuple(manifest["shape"]))
        return cls(folder, list(manifest["names"]), views, manifest["fingerprint"], [(int(r), m) for r, m in manifest["skipped"]])


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: not a view cache of this version ({manifest.get('format')})")
    return manifest


def _decode(path: Path, size: int, branch: GlobalBranch) -> tuple[torch.Tensor, torch.Tensor] | str:
    """(square uint8 pixels of side ``size`` to crop views from, the branch's own input) or why not."""
    try:
        image = load_image(path, min_side=1)
    except BadImage as exc:
        return f"{path}: {exc}"
    return torch.from_numpy(np.array(square_pixels(image, size))).permute(2, 0, 1), branch.preprocess(image, 0)


def cache_settings(config: GlobalTrainConfig, backbone: Backbone) -> dict:
    """Everything that decides the cached activations."""
    keys = ("backbone", "cut", "views_per_image", "cache_size", "image_size", "crop_scale", "max_rotation", "seed")
    plain = _plain(config)
    return {"weights": backbone.weights_id, **{k: plain[k] for k in keys}}


def build_view_cache(
    paths: Sequence[Path], names: Sequence[str], config: GlobalTrainConfig, folder: str | Path,
    workers: int = 4, progress: bool = True, device: str | torch.device = "cpu", chunk_size: int = CHUNK,
) -> ViewCache:
    """Fill (or complete) the cache of ``paths`` under ``folder``; ``names`` identify the images
    (e.g. paths relative to the images folder). A cache of other images or settings is refused."""
    folder = Path(folder)
    device = torch.device(device)
    backbone, stop = start_backbone(config)
    model = backbone.model.to(device).eval()
    settings = cache_settings(config, backbone)
    digest = hashlib.sha256(json.dumps([list(names), settings, chunk_size], sort_keys=True).encode()).hexdigest()
    with torch.inference_mode():
        probe = forward_below(model, stop, torch.zeros(1, 3, config.image_size, config.image_size, device=device))
    shape = (len(paths), config.views_per_image, *probe.shape[1:])
    chunks = -(-len(paths) // chunk_size)
    manifest = read_manifest(folder)
    if manifest is not None and manifest["fingerprint"] != digest:
        raise InputError(f"{folder}: holds a view cache of other images or settings; use another cache folder")
    if manifest is None:
        folder.mkdir(parents=True, exist_ok=True)
        np.memmap(folder / "views.f16", dtype=np.float16, mode="w+", shape=shape).flush()
        manifest = {"format": FORMAT, "fingerprint": digest, "settings": settings, "names": list(names), "shape": list(shape),
                    "chunk_size": chunk_size, "chunks": chunks, "chunks_done": 0, "skipped": []}
        save_atomic(folder / "manifest.json", json.dumps(manifest))
    views = np.memmap(folder / "views.f16", dtype=np.float16, mode="r+", shape=shape)
    whole = GlobalBranch(GlobalConfig(backbone=config.backbone, weights=config.weights, gram_levels=(), image_size=config.image_size, style_head=None), backbone)
    whole.to(device)
    mean, std = backbone.data_config["mean"], backbone.data_config["std"]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for chunk in tqdm(range(manifest["chunks_done"], chunks), desc="caching views", unit="chunk", disable=not progress,
                          initial=manifest["chunks_done"], total=chunks):
            rows = list(range(chunk * chunk_size, min(len(paths), (chunk + 1) * chunk_size)))
            decoded = list(pool.map(lambda row: _decode(paths[row], config.cache_size, whole), rows))
            kept = [row for row, d in zip(rows, decoded) if not isinstance(d, str)]
            manifest["skipped"] += [[row, d] for row, d in zip(rows, decoded) if isinstance(d, str)]  # rows left zero
            if kept:
                pixels = torch.stack([d[0] for d in decoded if not isinstance(d, str)])
                generator = torch.Generator().manual_seed(config.seed * 1_000_003 + chunk)
                with torch.inference_mode():
                    for v in range(config.views_per_image):
                        if v == 0:  # the whole painting exactly as the global branch embeds it
                            x = whole.model_input(torch.stack([d[1] for d in decoded if not isinstance(d, str)]))
                        else:
                            x = style_views(pixels, config.views(), generator, mean, std).to(device)
                        out = forward_below(backbone.model, stop, x.contiguous(memory_format=torch.channels_last))
                        views[kept, v] = out.float().cpu().numpy().astype(np.float16)
                views.flush()
            manifest["chunks_done"] = chunk + 1
            save_atomic(folder / "manifest.json", json.dumps(manifest))
    return ViewCache.open(folder)


# ----------------------------------------------------------------------------- the dates term


@dataclass
class CachedTrainConfig(GlobalTrainConfig):
    """A cached fine-tuning run: :class:`GlobalTrainConfig` + the dates term."""

    dates_weight: float = 0.0  # weight of the dates term; 0 = off
    dates_window: float = 10.0  # years per bin: works of one bin are the dates term's positives


DATES_KEYS = tuple(f.name for f in fields(CachedTrainConfig) if f.name.startswith("dates_"))


def load_cached_config(path: str | Path | None = None, **overrides) -> CachedTrainConfig:
    """``load_train_config`` for :class:`CachedTrainConfig` (a YAML file's settings, then ``overrides``)."""
    return load_dataclass_yaml(CachedTrainConfig, path, "train config", **overrides)


def dates_contrastive_loss(embeddings: torch.Tensor, years: torch.Tensor, window: float, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss whose classes are ``window``-year bins of ``years`` (N,),
    over the rows that have a year (NaN = none); 0 (with a gradient path) when no row has a
    positive."""
    dated = ~torch.isnan(years)
    bins = torch.floor(years[dated] / window)
    if len(bins) < 2 or len(torch.unique(bins)) == len(bins):
        return embeddings.sum() * 0.0
    codes = torch.unique(bins, return_inverse=True)[1]
    return multilabel_contrastive_loss(embeddings[dated], codes, temperature)


# ----------------------------------------------------------------------------- training


def train_cached(
    cache: ViewCache,
    groups: np.ndarray,
    config: GlobalTrainConfig,
    out: str | Path,
    rows: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    progress: bool = True,
    years: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Train the layers above ``config.cut`` on the cache's ``rows`` (all by default) with artist
    codes ``groups`` (one per row), through :func:`.loop.fit`. Each step draws two different
    cached views of each image of the batch. ``years`` (one per row, NaN where unknown) feed the
    dates term of a :class:`CachedTrainConfig` with ``dates_weight`` > 0."""
    if config.views_per_image < 2:
        raise ConfigError("views_per_image must be at least 2: the self-supervised term pairs two views of one image")
    device = torch.device(device)
    rows = np.arange(len(cache.names)) if rows is None else np.asarray(rows)
    if len(groups) != len(rows):
        raise InputError(f"{len(groups)} artist codes for {len(rows)} cached images")
    dates_weight = getattr(config, "dates_weight", 0.0)  # a plain GlobalTrainConfig has no dates term
    if dates_weight and (years is None or len(years) != len(rows)):
        raise InputError(f"dates_weight {dates_weight}: needs one year (or NaN) per cached image, got {0 if years is None else len(years)}")
    year_t = torch.as_tensor(np.asarray(years, dtype=np.float64), dtype=torch.float32) if dates_weight else None
    recipe = create_recipe(config)
    torch.manual_seed(config.seed)
    backbone, start = start_backbone(config)
    ssl_head, projection = recipe.heads(backbone.model.num_features)
    # channels-last: the depthwise convolutions of the trained blocks run faster on the CPU (≈ 1.3x, measured under load)
    net = CutNet(backbone.model, start, ssl_head, projection).to(device, memory_format=torch.channels_last)
    group_t = torch.as_tensor(np.asarray(groups), dtype=torch.long)
    n_views = cache.views.shape[1]

    def loss_fn(index: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        first = torch.randint(n_views, (len(index),), generator=generator)
        second = (first + torch.randint(1, n_views, (len(index),), generator=generator)) % n_views  # another view
        cached = rows[index.numpy()]
        pair = np.concatenate([cache.views[cached, first.numpy()], cache.views[cached, second.numpy()]])
        features = net(torch.from_numpy(pair).float().to(device).contiguous(memory_format=torch.channels_last))
        terms = recipe.loss(net, features, group_t[index].to(device))
        if not dates_weight:
            return terms
        year = year_t[index].to(device)
        dates = dates_contrastive_loss(net.style_head(features.float()), torch.cat([year, year]), config.dates_window, config.temperature)
        return {**terms, "loss": terms["loss"] + dates_weight * dates, "dates": dates}

    data = f"{cache.fingerprint}:{hashlib.sha256(rows.tobytes()).hexdigest()[:16]}"
    if dates_weight:
        data += f":{hashlib.sha256(year_t.numpy().tobytes()).hexdigest()[:16]}"
    # without the dates term its keys stay out, so checkpoints of before it still resume
    plain = {k: v for k, v in _plain(config).items() if k != "epochs" and (dates_weight or k not in DATES_KEYS)}
    metadata = {"data": data, "config": plain,
                "backbone": config.backbone, "method": f"{config.method}-cached", "cut": config.cut}
    schedule = config.schedule()
    return fit(net, make_optimizer(net, schedule), loss_fn, lambda g: recipe.batches(np.asarray(groups), g), schedule.epochs,
               schedule.seed, out, device, WarmupCosine(schedule), resume=resume, progress=progress, metadata=metadata)
