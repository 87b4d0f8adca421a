"""A CNN-stem ViT: transformer blocks over the stride-16 feature map of EfficientNet-Lite0.

No ViT weights can be downloaded offline, but the Lite0 ImageNet weights ship as a package. The
hybrid keeps Lite0's first five stages (stride 16, 112 channels, 0.7 M parameters) as the patch
embedding (timm ``HybridEmbed``, as in ViT's hybrid variant, Dosovitskiy et al. 2021, §3.1) and
puts a small transformer on top — the CNN→Transformer cascade. Its offline starting point is the
pretrained stem with freshly initialised blocks; ``stylecluster train-global`` trains the rest.

The model is registered with timm, so ``timm.create_model("vit_hybrid_lite0")`` works, and
with the backbone registry, where its offline default loads the packaged stem weights.
"""
from __future__ import annotations

from collections import OrderedDict

import timm
from timm.layers import HybridEmbed
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .backbones import BackboneEntry, WeightsError, create_backbone, register_backbone

LITE0 = "tf_efficientnet_lite0"
STEM_INDEX = 3  # Lite0's intermediate level at stride 16 (112 channels)


def lite0_stem() -> nn.Module:
    """Lite0 truncated after its stride-16 stage; ``forward`` returns the (B, 112, H/16, W/16) map."""
    stem = timm.create_model(LITE0, pretrained=False, num_classes=0, global_pool="")
    stem.prune_intermediate_layers(indices=[STEM_INDEX], prune_head=True)
    return stem


def _hybrid(img_size: int = 224, embed_dim: int = 192, depth: int = 4, num_heads: int = 3, **kwargs) -> VisionTransformer:
    kwargs.setdefault("dynamic_img_size", True)  # embed at any size: the position grid is interpolated
    model = VisionTransformer(
        img_size=img_size,
        patch_size=1,  # one token per stride-16 feature-map position
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        embed_layer=lambda **embed_args: HybridEmbed(backbone=lite0_stem(), **embed_args),
        **kwargs,
    )
    # The stem's weights were converted from TensorFlow and expect inputs in [-1, 1].
    model.pretrained_cfg = dict(
        input_size=(3, img_size, img_size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        interpolation="bicubic", crop_pct=1.0, num_classes=kwargs.get("num_classes", 1000),
    )
    return model


@register_model
def vit_hybrid_lite0(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """4 blocks of width 192 over the Lite0 stem (≈ 2.5 M parameters)."""
    if pretrained:
        raise WeightsError("vit_hybrid_lite0 has no hub weights; use the backbone registry's offline default")
    for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(timm_only, None)
    return _hybrid(**kwargs)


def stem_of(model: nn.Module) -> nn.Module:
    return model.patch_embed.backbone


def load_lite0_stem(model: nn.Module) -> str:
    """Copy the packaged Lite0 ImageNet weights into the hybrid's stem; returns the weights id."""
    lite0 = create_backbone("efficientnet_lite0")
    stem = stem_of(model)
    wanted = stem.state_dict()
    source = lite0.model.state_dict()
    missing = [k for k in wanted if k not in source]
    if missing:
        raise WeightsError(f"Lite0 weights lack stem keys: {', '.join(missing[:6])}")
    stem.load_state_dict(OrderedDict((k, source[k]) for k in wanted))
    return f"stem:{lite0.weights_id}"


register_backbone(BackboneEntry("vit_hybrid_lite0", "vit_hybrid_lite0", default_init=load_lite0_stem))
