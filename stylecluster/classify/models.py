"""The three supervised style classifiers and their registry.

Every classifier splits into ``encode`` (the backbone parts that ``freeze: backbone`` freezes,
whose outputs can be computed once and cached) and ``classify`` (everything trained on top), so
``forward(x) == classify(encode(x))`` holds whether the features come fresh or from a cache.
Inputs are RGB images in [0, 1]; each backbone normalises them the way its weights expect.

* ``cnn``: CNN → global average pool → dropout → FC.
* ``vit``: ViT (patch embedding → transformer blocks) → CLS/pooled token → dropout → FC.
* ``fusion``: the cascade of the fusion paper: the CNN's last feature map becomes a token
  sequence for Transformer encoder layers (self-attention over local features); their pooled
  output is concatenated with the CNN's pooled features and the ViT's global features, then
  dropout → FC.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..features.backbones import Backbone, create_backbone
from .config import ClassifierConfig
from ..errors import InputError
from ..registry import Registry

Features = dict[str, torch.Tensor]


class Normalise(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FeatureMap(nn.Module):
    """A timm CNN without its pooling: [0, 1] images → last feature map (B, C, h, w).

    Grad-CAM hooks this module's output.
    """

    def __init__(self, backbone: Backbone):
        super().__init__()
        if hasattr(backbone.model, "patch_embed"):
            raise InputError(f"{backbone.name} is a vision transformer; the CNN part needs a CNN (e.g. resnet50, efficientnet_lite0)")
        self.net = backbone.model
        self.normalise = Normalise(backbone.data_config["mean"], backbone.data_config["std"])
        self.num_features = int(backbone.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(self.normalise(x))


class ViTEncoder(nn.Module):
    """A timm ViT in two steps: ``embed`` (patch tokens, the part that can be frozen) and
    ``pool`` (positions, transformer blocks, norm → the CLS/pooled global feature)."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        if not isinstance(backbone.model, VisionTransformer):
            raise InputError(f"{backbone.name} is not a timm vision transformer; the ViT part needs one (e.g. vit_hybrid_lite0, vit_small_patch16_224)")
        self.net = backbone.model
        self.normalise = Normalise(backbone.data_config["mean"], backbone.data_config["std"])
        self.num_features = int(backbone.model.num_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.patch_embed(self.normalise(x))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.norm_pre(net.patch_drop(net._pos_embed(tokens)))
        return net.forward_head(net.norm(net.blocks(x)), pre_logits=True)


class StyleClassifier(nn.Module):
    """Base class: subclasses set ``kind``, build their parts and define ``encode``/``classify``."""

    kind: ClassVar[str]
    #: the backbones the constructor takes, by keyword: "cnn" and/or "vit"
    parts: ClassVar[tuple[str, ...]]
    #: whether Grad-CAM applies (the model has a CNN feature map, ``self.cnn``)
    has_feature_map: ClassVar[bool] = False

    def __init__(self, freeze: bool):
        super().__init__()
        self.freeze = freeze

    def frozen_modules(self) -> list[nn.Module]:
        """The modules ``encode`` runs (frozen, in eval mode, when ``freeze``)."""
        raise NotImplementedError

    def freeze_encoders(self) -> None:
        if self.freeze:
            for module in self.frozen_modules():
                module.requires_grad_(False)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the state that training changes (all of it when nothing is frozen)."""
        frozen = {id(m) for m in self.frozen_modules()} if self.freeze else set()
        prefixes = tuple(name + "." for name, module in self.named_modules() if id(module) in frozen)
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not (prefixes and k.startswith(prefixes))}

    def train(self, mode: bool = True) -> "StyleClassifier":
        super().train(mode)
        if self.freeze:
            for module in self.frozen_modules():
                module.eval()  # frozen BatchNorm statistics and no dropout in what is cached
        return self

    def encode(self, x: torch.Tensor) -> Features:
        raise NotImplementedError

    def classify(self, features: Features) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encode(x))

    def fc_layers(self) -> list[nn.Module]:
        """The layers that get the L2 penalty."""
        return [self.fc]


class CNNClassifier(StyleClassifier):
    kind = "cnn"
    parts = ("cnn",)
    has_feature_map = True

    def __init__(self, cnn: Backbone, num_classes: int, config: ClassifierConfig):
        super().__init__(config.cached)
        self.cnn = FeatureMap(cnn)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.cnn.num_features, num_classes)
        self.freeze_encoders()

    def frozen_modules(self):
        return [self.cnn]

    def encode(self, x):
        return {"cnn": self.cnn(x)}

    def classify(self, features):
        return self.fc(self.dropout(features["cnn"].float().mean(dim=(2, 3))))


class ViTClassifier(StyleClassifier):
    kind = "vit"
    parts = ("vit",)

    def __init__(self, vit: Backbone, num_classes: int, config: ClassifierConfig):
        super().__init__(config.cached)
        self.vit = ViTEncoder(vit)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.vit.num_features, num_classes)
        self.freeze_encoders()

    def frozen_modules(self):
        return [self.vit.net.patch_embed]

    def encode(self, x):
        return {"vit": self.vit.embed(x)}

    def classify(self, features):
        return self.fc(self.dropout(self.vit.pool(features["vit"].float())))


class MapTransformer(nn.Module):
    """Transformer encoder layers over the positions of a feature map (B, C, h, w) → (B, dim)."""

    def __init__(self, in_channels: int, dim: int, depth: int, heads: int, grid: int):
        super().__init__()
        self.project = nn.Linear(in_channels, dim)
        self.position = nn.Parameter(torch.zeros(1, dim, grid, grid))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.1, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        h, w = feature_map.shape[-2:]
        position = self.position if self.position.shape[-2:] == (h, w) else nn.functional.interpolate(self.position, size=(h, w), mode="bilinear", align_corners=False)
        tokens = self.project(feature_map.flatten(2).transpose(1, 2)) + position.flatten(2).transpose(1, 2)
        return self.norm(self.encoder(tokens)).mean(dim=1)


class FusionClassifier(StyleClassifier):
    kind = "fusion"
    parts = ("cnn", "vit")
    has_feature_map = True

    def __init__(self, cnn: Backbone, vit: Backbone, num_classes: int, config: ClassifierConfig):
        super().__init__(config.cached)
        self.cnn = FeatureMap(cnn)
        self.vit = ViTEncoder(vit)
        grid = self._grid(config.image_size)
        self.transformer = MapTransformer(self.cnn.num_features, config.transformer_dim, config.transformer_depth, config.transformer_heads, grid)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.transformer_dim + self.cnn.num_features + self.vit.num_features, num_classes)
        self.freeze_encoders()

    def _grid(self, image_size: int) -> int:
        with torch.no_grad():
            return int(self.cnn.eval()(torch.zeros(1, 3, image_size, image_size)).shape[-1])

    def frozen_modules(self):
        return [self.cnn, self.vit.net.patch_embed]

    def encode(self, x):
        return {"cnn": self.cnn(x), "vit": self.vit.embed(x)}

    def classify(self, features):
        feature_map = features["cnn"].float()
        fused = torch.cat([self.transformer(feature_map), feature_map.mean(dim=(2, 3)), self.vit.pool(features["vit"].float())], dim=1)
        return self.fc(self.dropout(fused))


CLASSIFIERS: Registry[type[StyleClassifier]] = Registry("classifier")


def register_classifier(cls: type[StyleClassifier]) -> type[StyleClassifier]:
    """Class decorator: registers ``cls`` under its ``kind``."""
    return CLASSIFIERS.register(cls.kind, cls)


for _cls in (CNNClassifier, ViTClassifier, FusionClassifier):
    register_classifier(_cls)


def available_classifiers() -> list[str]:
    return CLASSIFIERS.names()


def classifier_class(kind: str) -> type[StyleClassifier]:
    return CLASSIFIERS.get(kind)


def _backbones(parts: tuple[str, ...], config: ClassifierConfig, pretrained: bool) -> dict[str, Backbone]:
    """The named backbones; with ``pretrained=False`` randomly initialised (their weights then
    come from a classifier checkpoint)."""
    out = {}
    # seeded per backbone: a part's random initialisation must not depend on which other parts
    # the model has (cached features are shared between model kinds)
    if "cnn" in parts:
        torch.manual_seed(config.seed)
        out["cnn"] = create_backbone(config.cnn, config.cnn_weights if pretrained else "random")
    if "vit" in parts:
        torch.manual_seed(config.seed)
        # dynamic size: the ViT runs at image_size on its native position grid, interpolated
        out["vit"] = create_backbone(config.vit, config.vit_weights if pretrained else "random", dynamic_img_size=True)
    return out


def create_classifier(config: ClassifierConfig, num_classes: int, pretrained: bool = True) -> StyleClassifier:
    """A classifier of kind ``config.model`` over the configured backbones (seeded)."""
    cls = classifier_class(config.model)
    torch.manual_seed(config.seed)
    backbones = _backbones(cls.parts, config, pretrained)
    return cls(**backbones, num_classes=num_classes, config=config)
