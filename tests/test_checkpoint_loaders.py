"""Foreign checkpoint layouts (DINO, CSD/CLIP), the hybrid's pretrained stem, and style heads.

Every checkpoint here is written by the test in the real layout of its source repository, from a
tiny model of the same architecture family, so the loaders are exercised on the real key names.
"""
from __future__ import annotations

import argparse
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from stylecluster.config import GlobalConfig
from stylecluster.features.backbones import WeightsError, create_backbone, read_state_dict
from stylecluster.features.global_ import GlobalBranch
from stylecluster.features.hybrid import stem_of

TINY_VIT = dict(depth=2, img_size=32)  # vit_tiny_patch16_224 with 2 blocks at 32 px: 2×2 patches
TINY_CLIP = dict(embed_dim=64, depth=2, num_heads=2, img_size=28)  # ViT-L/14 family, 2×2 patches


def _randomised(model):
    """Random values in every tensor (also norms and biases), so a mis-mapped key cannot pass."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _features(model, size):
    torch.manual_seed(1)
    with torch.inference_mode():
        return model.eval()(torch.randn(2, 3, size, size))


# ----------------------------------------------------------------------------- DINO


def _dino_checkpoint(teacher, student):
    def wrap(model, prefix):
        state = OrderedDict((f"{prefix}backbone.{k}", v) for k, v in model.state_dict().items())
        # DINOHead: a 3-layer MLP and a weight-normalised last layer
        state[f"{prefix}head.mlp.0.weight"] = torch.randn(32, model.num_features)
        state[f"{prefix}head.mlp.0.bias"] = torch.zeros(32)
        state[f"{prefix}head.last_layer.weight_g"] = torch.ones(100, 1)
        state[f"{prefix}head.last_layer.weight_v"] = torch.randn(100, 32)
        return state

    return {
        "student": wrap(student, "module."),  # DDP-wrapped during training
        "teacher": wrap(teacher, ""),
        "optimizer": torch.optim.SGD(student.parameters(), lr=0.1).state_dict(),
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=16, out_dim=100, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 100)},
    }


def test_dino_checkpoint_loads_the_teacher_backbone(tmp_path):
    teacher = _randomised(timm.create_model("vit_tiny_patch16_224", num_classes=0, **TINY_VIT))
    student = timm.create_model("vit_tiny_patch16_224", num_classes=0, **TINY_VIT)
    torch.save(_dino_checkpoint(teacher, student), tmp_path / "checkpoint.pth")
    backbone = create_backbone("vit_tiny_patch16_224", str(tmp_path / "checkpoint.pth"), **TINY_VIT)
    assert backbone.style_head is None
    assert torch.allclose(_features(backbone.model, 32), _features(teacher, 32), atol=1e-5)
    assert not torch.allclose(_features(backbone.model, 32), _features(student, 32), atol=1e-3)


def test_dino_checkpoint_for_another_architecture_names_the_keys(tmp_path):
    deeper = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=3, img_size=32)
    torch.save(_dino_checkpoint(deeper, deeper), tmp_path / "checkpoint.pth")
    with pytest.raises(WeightsError, match=r"unexpected keys: blocks\.2\."):
        create_backbone("vit_tiny_patch16_224", str(tmp_path / "checkpoint.pth"), **TINY_VIT)
    wider = timm.create_model("vit_small_patch16_224", num_classes=0, **TINY_VIT)
    torch.save(_dino_checkpoint(wider, wider), tmp_path / "small.pth")
    with pytest.raises(WeightsError, match=r"shape mismatch: .*\(model: "):
        create_backbone("vit_tiny_patch16_224", str(tmp_path / "small.pth"), **TINY_VIT)


# ----------------------------------------------------------------------------- CSD


def _clip_visual_names(state):
    """timm ViT names → OpenAI CLIP ``VisionTransformer`` names (written out independently of
    the loader, which uses timm's converter for the opposite direction)."""
    out = OrderedDict()
    for key, value in state.items():
        name = key
        if key == "cls_token":
            name, value = "class_embedding", value.reshape(-1)
        elif key == "pos_embed":
            name, value = "positional_embedding", value[0]
        elif key.startswith("patch_embed.proj."):
            name = "conv1." + key.rsplit(".", 1)[1]
        elif key.startswith("norm_pre."):
            name = "ln_pre." + key.rsplit(".", 1)[1]
        elif key.startswith("norm."):
            name = "ln_post." + key.rsplit(".", 1)[1]
        elif key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            rest = (rest.replace("norm1", "ln_1").replace("norm2", "ln_2").replace("attn.qkv.", "attn.in_proj_")
                    .replace("attn.proj", "attn.out_proj").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
            name = f"transformer.resblocks.{i}.{rest}"
        out[name] = value
    return out


@pytest.fixture(scope="module")
def csd_file(tmp_path_factory):
    reference = _randomised(timm.create_model("vit_large_patch14_clip_quickgelu_224", num_classes=0, **TINY_CLIP))
    torch.manual_seed(2)
    style, content = torch.randn(64, 16), torch.randn(64, 16)
    # CSD's train_csd.py saves {"model_state_dict": model.state_dict(), ...} of a DDP-wrapped
    # CSD_CLIP: backbone = clip visual with proj=None, plus the two projection matrices.
    state = OrderedDict((f"module.backbone.{k}", v) for k, v in _clip_visual_names(reference.state_dict()).items())
    state["module.last_layer_style"] = style
    state["module.last_layer_content"] = content
    path = tmp_path_factory.mktemp("csd") / "checkpoint.pth"
    torch.save({"model_state_dict": state, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path, reference, style


def test_csd_checkpoint_maps_clip_names_and_keeps_the_style_projection(csd_file):
    path, reference, style = csd_file
    assert "backbone.transformer.resblocks.1.attn.in_proj_weight" in read_state_dict(path)
    backbone = create_backbone("csd_vit_large", str(path), **TINY_CLIP)
    features = _features(backbone.model, 28)
    assert torch.allclose(features, _features(reference, 28), atol=1e-4)
    expected = F.normalize(features @ style, dim=1)  # CSD_CLIP.forward's style_output
    with torch.inference_mode():
        assert torch.allclose(backbone.style_head(features), expected, atol=1e-5)


def test_global_branch_uses_the_style_embedding(csd_file):
    path, _, _ = csd_file
    backbone = create_backbone("csd_vit_large", str(path), **TINY_CLIP)
    branch = GlobalBranch(GlobalConfig(backbone="csd_vit_large", gram_levels=(), image_size=28), backbone=backbone)
    assert branch.parts == {"style": (0, 16)}
    vectors = branch.encode(torch.randn(3, 3, 28, 28))
    assert vectors.shape == (3, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with_gram = GlobalBranch(GlobalConfig(backbone="csd_vit_large", gram_levels=(1,), gram_channels=8, image_size=28), backbone=backbone)
    assert with_gram.parts == {"style": (0, 16), "gram1": (16, 52)}


def test_csd_style_projection_of_the_wrong_size_is_refused(tmp_path, csd_file):
    path, _, _ = csd_file
    state = torch.load(path, weights_only=True)
    state["model_state_dict"]["module.last_layer_style"] = torch.randn(32, 16)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"style projection of shape \(32, 16\) does not fit 64"):
        create_backbone("csd_vit_large", str(tmp_path / "bad.pth"), **TINY_CLIP)


def test_clip_checkpoint_on_a_cnn_is_a_clear_error(csd_file):
    path, _, _ = csd_file
    with pytest.raises(WeightsError, match="needs a timm ViT backbone"):
        create_backbone("resnet10t", str(path))


def test_truncated_checkpoint_is_a_clear_error(tmp_path, csd_file):
    path, _, _ = csd_file
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="cut.pth: cannot read weights"):
        create_backbone("csd_vit_large", str(tmp_path / "cut.pth"), **TINY_CLIP)


# ----------------------------------------------------------------------------- hybrid


def test_hybrid_starts_from_the_pretrained_lite0_stem():
    hybrid = create_backbone("vit_hybrid_lite0", img_size=64)
    lite0 = create_backbone("efficientnet_lite0").model.state_dict()
    stem = stem_of(hybrid.model).state_dict()
    assert hybrid.weights_id.startswith("stem:sha256:5793442")
    assert all(torch.equal(v, lite0[k]) for k, v in stem.items())
    assert "blocks.4.0.conv_pw.weight" in stem and "blocks.5.0.conv_pw.weight" not in stem  # stride 16 only
    assert hybrid.data_config["mean"] == (0.5, 0.5, 0.5)
    assert _features(hybrid.model, 64).shape == (2, 192)
    assert create_backbone("vit_hybrid_lite0", "random", img_size=64).weights_id == "random"


def test_vit_trained_at_another_size_loads_with_resampled_positions(tmp_path):
    small = _randomised(timm.create_model("vit_tiny_patch16_224", num_classes=0, **TINY_VIT))
    torch.save(small.state_dict(), tmp_path / "vit32.pth")
    bigger = create_backbone("vit_tiny_patch16_224", str(tmp_path / "vit32.pth"), depth=2, img_size=64)
    assert bigger.model.pos_embed.shape == (1, 1 + 16, 192)
    assert torch.equal(bigger.model.blocks[1].mlp.fc1.weight, small.blocks[1].mlp.fc1.weight)


def test_gram_levels_a_backbone_lacks_are_a_clear_error():
    backbone = create_backbone("vit_hybrid_lite0", "random")
    with pytest.raises(ValueError, match=r"gram_levels \[1, 2, 3, 4\] do not fit"):
        GlobalBranch(GlobalConfig(backbone="vit_hybrid_lite0", weights="random", image_size=32), backbone=backbone)
