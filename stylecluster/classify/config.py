"""Settings of one classifier training run (``configs/classifier.yaml``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ..config import load_dataclass_yaml
from ..errors import ConfigError


@dataclass
class ClassifierConfig:
    """What a supervised style classifier is and how it is trained.

    The defaults are the CPU settings: frozen backbones (the CNN whole, the ViT's patch embedding)
    whose outputs are computed once per view and cached, 160-px inputs. For a GPU:
    ``freeze: none``, ``image_size: 224``, ``device: auto`` (mixed precision on CUDA).
    """

    model: str = "fusion"  # cnn | vit | fusion (see available_classifiers())
    cnn: str = "efficientnet_lite0"  # registered backbone or timm CNN name (resnet50 with cnn_weights)
    cnn_weights: str | None = None  # file, 'random', or None = the entry's offline default
    vit: str = "vit_hybrid_lite0"  # registered backbone or timm ViT name
    vit_weights: str | None = None
    image_size: int = 160
    freeze: str = "backbone"  # backbone: CNN and ViT patch embedding frozen (features cached); none: all trained
    transformer_dim: int = 256  # fusion: width of the encoder over the CNN's feature-map tokens
    transformer_depth: int = 2
    transformer_heads: int = 4
    dropout: float = 0.5  # before the FC layer (the fusion paper's keep probability 0.5)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-4
    fc_weight_decay: float = 0.01  # L2 on the FC layer only
    plateau_factor: float = 0.1  # ReduceLROnPlateau on the validation loss
    plateau_patience: int = 2
    early_stopping: int = 5  # epochs without a better validation loss before stopping
    views: int = 2  # frozen features: views cached per training image (the first unaugmented)
    max_rotation: float = 15.0
    crop_scale: tuple[float, float] = (0.8, 1.2)  # crop area as a fraction of the image (> 1 zooms out)
    color_jitter: float = 0.1  # brightness, contrast and saturation factors within 1 ± this
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train / validation / test, over artists
    seed: int = 0

    @property
    def cached(self) -> bool:
        return self.freeze == "backbone"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def load_classifier_config(path: str | Path | None = None, **overrides) -> ClassifierConfig:
    """A YAML file's settings over the defaults, then ``overrides`` (None values ignored)."""
    config = load_dataclass_yaml(ClassifierConfig, path, "classifier config", **overrides)
    if config.freeze not in ("backbone", "none"):
        raise ConfigError(f"freeze must be 'backbone' or 'none', got {config.freeze!r}")
    return config
