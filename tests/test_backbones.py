"""Weight loading: every supported file layout, clear failures, and no code execution."""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from stylecluster.features.backbones import WeightsError, create_backbone, map_by_order, read_state_dict
from stylecluster.hashing import file_sha256
from stylecluster.features.global_ import GlobalBranch, gram_upper
from stylecluster.config import GlobalConfig

SMALL = "resnet10t"  # a small timm model to write checkpoints of


def _features(model, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        return model.eval()(x)


@pytest.fixture(scope="module")
def source_model():
    torch.manual_seed(1)
    return timm.create_model(SMALL, num_classes=7).eval()


@pytest.mark.parametrize("layout", ["plain.pth", "wrapped.pt", "ddp.pth", "model.safetensors"])
def test_state_dict_files_load_exactly(tmp_path, source_model, layout):
    state = source_model.state_dict()
    path = tmp_path / layout
    if layout == "plain.pth":
        torch.save(state, path)
    elif layout == "wrapped.pt":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif layout == "ddp.pth":
        torch.save({"model": OrderedDict((f"module.{k}", v) for k, v in state.items())}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    backbone = create_backbone(SMALL, str(path))
    assert backbone.weights_id == f"sha256:{file_sha256(path)}"
    reference = timm.create_model(SMALL, num_classes=0)
    reference.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    assert torch.allclose(_features(backbone.model), _features(reference), atol=1e-5)


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(tmp_path, source_model):
    state = source_model.state_dict()
    state.pop("conv1.0.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"missing keys: conv1\.0\.weight; unexpected keys: extra\.weight"):
        create_backbone(SMALL, str(tmp_path / "bad.pth"))


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="junk.pth: cannot read weights"):
        create_backbone(SMALL, str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="not found"):
        create_backbone(SMALL, str(tmp_path / "absent.pth"))


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('STYLECLUSTER_TEST_MARKER', '/tmp/never')}",))


def test_a_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("STYLECLUSTER_TEST_MARKER", str(marker))
    torch.save({"state_dict": {"w": _Exploit()}}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


def test_ordered_mapping_checks_every_shape():
    source = OrderedDict(a=torch.zeros(2, 3), b=torch.zeros(4))
    target = OrderedDict(x=torch.zeros(2, 3), y=torch.zeros(5))
    with pytest.raises(WeightsError, match=r"b has shape \(4,\) but y needs \(5,\)"):
        map_by_order(source, target, "f")
    with pytest.raises(WeightsError, match="layouts differ"):
        map_by_order(source, OrderedDict(x=torch.zeros(2, 3)), "f")
    assert list(map_by_order(source, OrderedDict(x=torch.zeros(2, 3), y=torch.zeros(4)), "f")) == ["x", "y"]


@pytest.mark.parametrize(
    "name, sha_prefix, size",
    [("efficientnet_lite0", "5793442", 224), ("efficientnet_lite1", "77cc716", 240), ("efficientnet_lite2", "9656183", 260)],
)
def test_offline_default_lite_weights_are_real_imagenet_weights(name, sha_prefix, size):
    backbone = create_backbone(name)
    assert backbone.weights_id.startswith(f"sha256:{sha_prefix}")  # the packaged file, every shape checked on load
    assert backbone.data_config["mean"] == (0.5, 0.5, 0.5) and backbone.data_config["input_size"] == (3, size, size)
    # ImageNet-trained first-layer filters are far from their random initialisation
    random = create_backbone(name, "random")
    trained_bn = backbone.model.bn1.running_var
    assert not torch.allclose(trained_bn, random.model.bn1.running_var)
    assert random.weights_id == "random"


def test_unknown_weights_source_is_a_clear_error():
    with pytest.raises(WeightsError, match="no offline weights are known"):
        create_backbone(SMALL)


def test_hub_failure_offline_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match="offline"):
        create_backbone(SMALL, "hub")


def test_gram_upper_by_hand():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # B=1, C=2, H=1, W=2
    # G = F Fᵀ / 2 = [[5, 11], [11, 25]] / 2 → upper triangle (00, 01, 11)
    assert torch.allclose(gram_upper(f), torch.tensor([[2.5, 5.5, 12.5]]))


def test_global_branch_vector_layout_and_determinism():
    branch = GlobalBranch(GlobalConfig(gram_levels=(2, 3), gram_channels=16))
    assert branch.parts == {"pooled": (0, 1280), "gram2": (1280, 1416), "gram3": (1416, 1552)}
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)) for _ in range(2)]
    batch = torch.stack([branch.preprocess(im, 0) for im in images])
    assert batch.shape == (2, 3, 224, 224)
    a, b = branch.encode(batch), branch.encode(batch)
    assert a.shape == (2, branch.dim) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.allclose(a[0], a[1])
    prov = branch.provenance()
    assert prov["backbone"] == "efficientnet_lite0" and prov["gram_levels"] == [2, 3] and prov["weights"].startswith("sha256:")
