"""The local (brush-stroke) branch: n gradient-scored DoG patches per image → InfoVAE codes → one vector.

``preprocess`` (DataLoader worker) draws the image's ``n_patches`` DoG patches with the image's
seed (:mod:`stylecluster.features.patches`); ``encode`` (main process) maps every patch to its
posterior mean μ — deterministic, no sampling — and aggregates the n codes of an image into
their mean, or their mean and standard deviation (``LocalConfig.aggregate = "mean+std"``).

With a local style head (``LocalConfig.style_head``; the same artist-discriminant head as the
global branch's, features/style_head.py, fitted on aggregated patch codes) the branch writes the
head's projection as one ``style`` part: the directions of the codes that tell hands apart,
rather than where edges fall.
"""
from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..config import LocalConfig
from ..device import autocast
from .branch import HeadedBranch
from ..hashing import file_sha256
from .infovae import Encoder, load_encoder
from .style_head import PACKAGED_LOCAL_HEAD, resolve_style_head
from .patches import extract_patches, extract_patches_native, patch_params
from ..errors import ConfigError, InputError, MissingInputError

AGGREGATES = ("mean", "mean+std")


def default_model_path() -> Path:
    """The encoder shipped with the package (see ``stylecluster/models/LOCAL_MODEL_CARD.md``)."""
    return Path(str(resources.files("stylecluster") / "models" / "local_infovae.pt"))


def posterior_mean_network(encoder: Encoder) -> nn.Sequential:
    """The encoder's μ path for inference: batch norms folded into their convolutions, no log σ².

    With channels-last patches this took the branch's encoder from 110 to 74 ms per 32 images
    (5 patches each, one thread, process time; codes within 2e-6 of the unfolded encoder's).
    """
    layers: list[nn.Module] = []
    for block in encoder.features:
        if isinstance(block, nn.Sequential) and isinstance(block[0], nn.Conv2d) and isinstance(block[1], nn.BatchNorm2d):
            layers += [fuse_conv_bn_eval(block[0].eval(), block[1].eval()), *block[2:]]
        else:
            layers.append(copy.deepcopy(block))
    return nn.Sequential(*layers, copy.deepcopy(encoder.mu)).eval()


class LocalBranch(HeadedBranch):
    """Brush-stroke vectors from an InfoVAE encoder over DoG patches.

    Parameters
    ----------
    config : LocalConfig
        Patch parameters, ``aggregate`` and ``model`` (checkpoint path; None = the shipped one).
    device : torch.device or str
    """

    name = "local"

    def __init__(self, config: LocalConfig | None = None, device: torch.device | str = "cpu"):
        self.config = config or LocalConfig()
        if self.config.aggregate not in AGGREGATES:
            raise ConfigError(f"local.aggregate must be one of {AGGREGATES}, got {self.config.aggregate!r}")
        self.model_path = Path(self.config.model) if self.config.model else default_model_path()
        if not self.model_path.is_file():
            raise MissingInputError(f"{self.model_path}: no local InfoVAE checkpoint (train one with `stylecluster train-local`)")
        self.encoder, payload = load_encoder(self.model_path)
        if self.encoder.arch.image_size != self.config.patch_size:
            raise InputError(
                f"{self.model_path}: encoder takes {self.encoder.arch.image_size}-px patches, config.local.patch_size is {self.config.patch_size}"
            )
        self.weights_sha256 = file_sha256(self.model_path)
        self.style_head = resolve_style_head(self.config.style_head, PACKAGED_LOCAL_HEAD, {"local": (0, self._codes_dim)}, self._raw_provenance())
        self.device = torch.device("cpu")
        self.to(device)

    @property
    def _codes_dim(self) -> int:
        latent = self.encoder.arch.latent_dim
        return 2 * latent if self.config.aggregate == "mean+std" else latent

    @property
    def dim(self) -> int:
        return self.style_head.out_features if self.style_head is not None else self._codes_dim

    @property
    def parts(self) -> dict[str, tuple[int, int]]:
        return {"style" if self.style_head is not None else "local": (0, self.dim)}

    @property
    def decode_side(self) -> int:
        """What the branch needs of the decoded image: a JPEG decoded reduced carries its native
        luma's source (``image.info["native"]``), which the patches are cut from; relative patches
        come from an image of shorter side ``patch_size / relative_size``."""
        if self.config.patch_scale == "relative":
            return math.ceil(self.config.patch_size / self.config.relative_size)
        return self.config.patch_size

    def preprocess(self, image: Image.Image, seed: int) -> np.ndarray:
        """(n_patches, 1, s, s) float32 DoG patches in [0, 1]: cut at native resolution from a JPEG
        decoded reduced (patches.extract_patches_native), else from the image as given."""
        native = image.info.get("native")
        if native is None or self.config.patch_scale == "relative":
            dog = extract_patches(image, self.config, seed).dog
        else:
            dog = extract_patches_native(native, self.config, seed).dog
        return (dog[:, None] / np.float32(255.0)).astype(np.float32)

    def encode(self, batch: Any) -> np.ndarray:
        patches = torch.as_tensor(batch).to(self.device, torch.float32, non_blocking=True)
        n_images, n_patches = patches.shape[:2]
        with torch.inference_mode():
            flat = patches.flatten(0, 1).contiguous(memory_format=torch.channels_last)
            if self.runtime is not None:  # the encoder compiled for this CPU (features/runtime.py)
                codes = torch.from_numpy(self.runtime(flat))
            else:
                with autocast(self.device):  # fp16 on CUDA, as the global branch; full precision elsewhere
                    codes = self._posterior_mean(flat)
            codes = codes.float().view(n_images, n_patches, -1)
            parts = [codes.mean(dim=1)]
            if self.config.aggregate == "mean+std":
                parts.append(codes.std(dim=1, correction=0))
            vectors = torch.cat(parts, dim=1).float()
            if self.style_head is not None:
                vectors = self.style_head(vectors)
            return vectors.cpu().numpy()

    def network(self) -> tuple[torch.nn.Module, torch.Tensor]:
        """(the encoder's posterior mean, an example batch of patches) for :mod:`.runtime` to
        export; the aggregation and the head stay in torch (microseconds an image)."""
        size = self.config.patch_size
        return self._posterior_mean, torch.zeros(1, 1, size, size)

    def _raw_provenance(self) -> dict[str, Any]:
        """What determines the aggregated patch codes (a local style head must match it)."""
        return {
            "kind": "infovae",
            "model": self.model_path.name,
            "weights_sha256": self.weights_sha256,
            "latent_dim": self.encoder.arch.latent_dim,
            "aggregate": self.config.aggregate,
            "patches": patch_params(self.config),
        }

    def to(self, device: torch.device | str) -> "LocalBranch":
        self.device = torch.device(device)
        self.encoder.to(self.device)
        self._posterior_mean = posterior_mean_network(self.encoder).to(self.device, memory_format=torch.channels_last)
        if self.style_head is not None:
            self.style_head.to(self.device)
        return self
