"""The global branch: a style vector for the whole image from a timm backbone.

Object-trained networks' pooled last-layer features cluster paintings by *content* (a boat, a
face). Style lives in the correlations between feature channels at intermediate depth — the Gram
matrices of Gatys et al. (2016, "Image Style Transfer Using CNNs", eq. 3):
G = F Fᵀ / (H·W) for a feature map F of C channels × H·W positions. The vector is therefore
made of parts: ``pooled`` (the backbone's pooled output) and one ``gram<level>`` part per
intermediate level in ``GlobalConfig.gram_levels`` (the upper triangle of G).

To keep the Gram parts affordable (C(C+1)/2 values), each level's channels are first projected
to ``gram_channels`` dimensions by a fixed, seeded random orthogonal matrix — a Johnson–
Lindenstrauss style reduction that preserves the channel correlations' geometry on average and is
identical for every image and every run.

A backbone with a style projection (a CSD checkpoint, or one trained by ``stylecluster
train-global``) was trained so that the projection's normalised output *is* the style vector
(Somepalli et al. 2024, §4); its first part is then ``style`` instead of ``pooled``. For ViTs,
``gram_levels: []`` keeps the vector to that part alone.

With a style head (``GlobalConfig.style_head``, features/style_head.py) the pooled + Gram vector
is projected by the artist-discriminant head trained for this backbone, and the branch writes
that projection alone, as one ``style`` part.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from torchvision import transforms

from ..config import GlobalConfig
from ..device import autocast
from .backbones import Backbone, create_backbone
from .branch import HeadedBranch
from .style_head import StyleHead, packaged_global_head, resolve_style_head
from ..errors import ConfigError, InputError


@functools.lru_cache(maxsize=None)
def _upper_positions(channels: int) -> np.ndarray:
    """Flat positions of the upper triangle (incl. diagonal) of a C x C matrix, row by row (the
    order of ``torch.triu_indices``). A constant, not an operator, so the graph exports to ONNX
    (``aten::triu_indices`` has no ONNX form)."""
    return np.flatnonzero(np.triu(np.ones((channels, channels), dtype=bool)))


def gram_upper(features: torch.Tensor) -> torch.Tensor:
    """Upper triangles (incl. diagonal) of the Gram matrices of a (B, C, H, W) batch → (B, C(C+1)/2)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).float()
    gram = flat @ flat.transpose(1, 2) / (h * w)
    return gram.reshape(b, c * c)[:, torch.from_numpy(_upper_positions(c)).to(features.device)]


def _split_transform(transform) -> tuple[Any, tuple[torch.Tensor, torch.Tensor] | None]:
    """(the PIL steps, (mean, std)) of a timm eval transform ending in to-tensor + normalise;
    ``(transform, None)`` for any other transform.

    The workers then send uint8 pixels (a quarter of float32's bytes through shared memory) and
    the main process normalises whole batches: measured in the profile of 300 wikiart images
    (py-spy, 2 workers), collating float32 images and normalising them one at a time cost the
    workers 4 % of the backbone's forward time.
    """
    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor") or not isinstance(steps[-1], transforms.Normalize):
        return transform, None
    normalise = steps[-1]
    mean = torch.as_tensor(normalise.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(normalise.std, dtype=torch.float32).view(-1, 1, 1)
    return transforms.Compose(steps[:-2]), (mean, std)


def _projection(in_channels: int, out_channels: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(in_channels, in_channels, generator=generator))
    return q[:, :out_channels].contiguous()  # (C_in, C_out), orthonormal columns


class _Vectors(torch.nn.Module):
    """A branch's :meth:`GlobalBranch.vectors` as a module, for export."""

    def __init__(self, branch: "GlobalBranch"):
        super().__init__()
        self.branch = branch
        self.model, self.head = branch.backbone.model, branch.style_head  # registered: their weights are the graph's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch.vectors(x)


class GlobalBranch(HeadedBranch):
    name = "global"

    def __init__(self, config: GlobalConfig | None = None, backbone: Backbone | None = None):
        self.config = config or GlobalConfig()
        self.backbone = backbone or create_backbone(self.config.backbone, self.config.weights)
        self.device = torch.device("cpu")
        data_config = dict(self.backbone.data_config)
        if self.config.image_size:
            data_config["input_size"] = (3, self.config.image_size, self.config.image_size)
        # The whole painting is style: resize the shorter side and centre-crop a square (no extra
        # 12.5 % margin crop as ImageNet evaluation does).
        data_config["crop_pct"] = 1.0
        self.data_config = data_config
        self.transform = timm.data.create_transform(**data_config, is_training=False)
        self._pixels, self._normalise = _split_transform(self.transform)
        self._levels = tuple(self.config.gram_levels)
        self._projections: list[torch.Tensor | None] = []
        self._parts: dict[str, tuple[int, int]] = {}
        self._probe_dimensions()
        self.style_head = self._resolve_style_head()
        if self.style_head is not None:
            self._parts = {"style": (0, self.style_head.out_features)}
            self._dim = self.style_head.out_features

    def _probe_dimensions(self) -> None:
        size = self.data_config["input_size"][1:]
        with torch.inference_mode():
            try:
                pooled, maps = self._forward(torch.zeros(1, 3, *size))
            except AssertionError as exc:  # timm's check of intermediate indices
                raise InputError(
                    f"{self.backbone.name}: gram_levels {list(self._levels)} do not fit this backbone ({exc}); "
                    "set global.gram_levels in the config (e.g. [] for a ViT with a style head)"
                ) from None
        start = pooled.shape[1]
        self._parts = {"style" if self.backbone.style_head is not None else "pooled": (0, start)}
        for level, fmap in zip(self._levels, maps):
            channels = fmap.shape[1]
            keep = min(self.config.gram_channels, channels) if self.config.gram_channels > 0 else channels
            self._projections.append(_projection(channels, keep, seed=level) if keep < channels else None)
            stop = start + keep * (keep + 1) // 2
            self._parts[f"gram{level}"] = (start, stop)
            start = stop
        self._dim = start

    def _resolve_style_head(self) -> StyleHead | None:
        if self.backbone.style_head is not None and self.config.style_head == "auto":
            return None  # a CSD / train-global checkpoint's own projection is the style vector
        return resolve_style_head(self.config.style_head, packaged_global_head(self.backbone.name), self._parts, self._raw_provenance())

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The first part (pooled features, or their style embedding) and the Gram levels' maps."""
        model, head = self.backbone.model, self.backbone.style_head
        if not self._levels:
            pooled, maps = model(x), []
        elif not hasattr(model, "forward_intermediates"):
            raise ConfigError(f"{self.backbone.name} does not expose intermediate features; set gram_levels: [] for it")
        else:
            final, maps = model.forward_intermediates(x, indices=list(self._levels))
            pooled = model.forward_head(final, pre_logits=True)
        return (head(pooled.float()) if head is not None else pooled), maps

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def parts(self) -> dict[str, tuple[int, int]]:
        return dict(self._parts)

    def preprocess(self, image: Image.Image, seed: int) -> torch.Tensor:
        """The resized, cropped image as a (3, H, W) uint8 tensor when the transform ends in
        to-tensor + normalise (done in :meth:`encode`, batched), else the transform's output."""
        if self._normalise is None:
            return self.transform(image)
        return torch.from_numpy(np.array(self._pixels(image), dtype=np.uint8, copy=True)).permute(2, 0, 1)

    def model_input(self, batch: torch.Tensor) -> torch.Tensor:
        """A collated batch of :meth:`preprocess` outputs as the backbone takes it (on its device,
        normalised, channels-last)."""
        x = batch.to(self.device, non_blocking=True)
        if self._normalise is not None:
            mean, std = self._normalise
            # exactly ToTensor's and Normalize's arithmetic, on the batch
            x = x.to(torch.float32).div(255).sub_(mean.to(self.device)).div_(std.to(self.device))
        return x.contiguous(memory_format=torch.channels_last)

    def to(self, device: torch.device) -> "GlobalBranch":
        self.device = torch.device(device)
        # channels_last halves the CPU time of the depthwise convolutions (measured: 1.6 s vs
        # 3.5 s per batch of 32 at 224 px on 2 cores) and suits tensor cores on GPUs.
        self.backbone.model.to(self.device, memory_format=torch.channels_last)
        for head in (self.backbone.style_head, self.style_head):
            if head is not None:
                head.to(self.device)
        self._projections = [p.to(self.device) if p is not None else None for p in self._projections]
        return self

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        if self.runtime is not None:  # the same network, compiled for this CPU (features/runtime.py)
            return self.runtime(self.model_input(batch))
        with torch.inference_mode(), autocast(self.device):
            vectors = self.vectors(self.model_input(batch))
        return vectors.cpu().numpy().astype(np.float32)

    def vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The branch's vectors of a :meth:`model_input` batch: pooled + Gram parts, through the
        style head when there is one — all of the branch a runtime may compile (:meth:`network`)."""
        pooled, maps = self._forward(x)
        vectors = torch.cat([pooled.float(), *self.gram_parts(maps)], dim=1)
        return self.style_head(vectors) if self.style_head is not None else vectors

    @property
    def decode_side(self) -> int:
        """The network's input side: the transform resizes the shorter side to it (crop_pct 1)."""
        return int(max(self.data_config["input_size"][1:]))

    def network(self) -> tuple[torch.nn.Module, torch.Tensor]:
        """(:meth:`vectors` as a module, an example input) for :mod:`.runtime` to export."""
        return _Vectors(self), torch.zeros(1, *self.data_config["input_size"])

    def gram_parts(self, maps: list[torch.Tensor], levels: list[int] | None = None) -> list[torch.Tensor]:
        """The ``gram<level>`` parts of feature maps of ``levels`` (default: every level of the
        branch), each level's channels projected as the branch projects them."""
        projections = dict(zip(self._levels, self._projections))
        out = []
        for level, fmap in zip(self._levels if levels is None else levels, maps):
            fmap, proj = fmap.float(), projections[level]
            if proj is not None:
                fmap = torch.einsum("bchw,ck->bkhw", fmap, proj)
            out.append(gram_upper(fmap))
        return out

    def _raw_provenance(self) -> dict[str, Any]:
        """What determines the pooled + Gram vector (a style head must match it)."""
        return {
            "backbone": self.backbone.name,
            "weights": self.backbone.weights_id,
            "gram_levels": list(self._levels),
            "gram_channels": self.config.gram_channels,
            "input": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
        }
