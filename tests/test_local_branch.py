"""The local branch: fixed-shape preprocessing, deterministic encoding, provenance, bad images."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from stylecluster.config import Config, LocalConfig
from stylecluster.data.dataset import ImageDataset, WorkItem, collate_items
from stylecluster.features.infovae import InfoVAE, save_checkpoint
from stylecluster.features.local_ import LocalBranch, default_model_path
from stylecluster.features.style_head import ArtistDiscriminantHead


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = InfoVAE()
    # A few training-mode passes give BatchNorm non-trivial running statistics.
    with torch.no_grad():
        for _ in range(3):
            model.encoder(torch.rand(16, 1, 64, 64))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "local.pt", model.eval(), epoch=1)


def painting(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def test_preprocess_fixed_shape_range_and_determinism(checkpoint):
    branch = LocalBranch(LocalConfig(model=str(checkpoint)))
    image = painting(300, 240)
    x = branch.preprocess(image, seed=5)
    assert x.shape == (5, 1, 64, 64) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1 and np.isclose(x.max(), 1)
    np.testing.assert_array_equal(x, branch.preprocess(image, seed=5))
    assert not np.array_equal(x, branch.preprocess(image, seed=6))


@pytest.mark.parametrize("size", [(1, 1), (400, 300), (33, 900)])
def test_bad_and_odd_images_keep_the_shape(checkpoint, size):
    branch = LocalBranch(LocalConfig(model=str(checkpoint)))
    x = branch.preprocess(Image.new("RGB", size), seed=0)  # all black
    assert x.shape == (5, 1, 64, 64) and np.isfinite(x).all() and not x.any()
    assert np.isfinite(branch.encode(torch.from_numpy(x[None]))).all()


def test_huge_image(checkpoint):
    branch = LocalBranch(LocalConfig(model=str(checkpoint)))
    assert branch.preprocess(painting(6000, 4500), seed=0).shape == (5, 1, 64, 64)


def test_encode_is_mean_of_patch_codes_and_batch_independent(checkpoint):
    branch = LocalBranch(LocalConfig(model=str(checkpoint)))
    inputs = [branch.preprocess(painting(260, 200, seed=s), seed=s) for s in range(3)]
    batch = default_collate(inputs)
    vectors = branch.encode(batch)
    assert vectors.shape == (3, 64) and vectors.dtype == np.float32 and branch.dim == 64
    with torch.no_grad():
        mu, _ = branch.encoder(torch.from_numpy(inputs[1]))
    np.testing.assert_allclose(vectors[1], mu.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    alone = branch.encode(default_collate(inputs[1:2]))  # eval-mode BN: no batch effects
    np.testing.assert_allclose(alone[0], vectors[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(branch.encode(batch), vectors)  # μ, no sampling


def test_mean_std_aggregate(checkpoint):
    branch = LocalBranch(LocalConfig(model=str(checkpoint), aggregate="mean+std"))
    inputs = default_collate([branch.preprocess(painting(260, 200), seed=0)])
    vectors = branch.encode(inputs)
    assert vectors.shape == (1, 128) and branch.dim == 128 and branch.parts == {"local": (0, 128)}
    with torch.no_grad():
        mu, _ = branch.encoder(inputs[0])
    np.testing.assert_allclose(vectors[0, 64:], mu.std(0, correction=0).numpy(), rtol=1e-4, atol=1e-5)


def test_provenance_names_weights_and_every_patch_parameter(checkpoint):
    branch = LocalBranch(LocalConfig(model=str(checkpoint)))
    info = branch.provenance()
    assert info["weights_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert set(info["patches"]) == {"patch_size", "stride", "top_fraction", "n_patches", "sigma1", "sigma2", "patch_scale", "relative_size"}
    relative = LocalBranch(LocalConfig(model=str(checkpoint), patch_scale="relative")).provenance()
    assert relative != info and relative["patches"]["patch_scale"] == "relative"
    assert branch.parts == {"local": (0, 64)} and LocalBranch.name == "local"


def test_configuration_errors(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="train-local"):
        LocalBranch(LocalConfig(model=str(tmp_path / "missing.pt")))
    with pytest.raises(ValueError, match="aggregate"):
        LocalBranch(LocalConfig(model=str(checkpoint), aggregate="median"))
    with pytest.raises(ValueError, match="patch_size"):
        LocalBranch(LocalConfig(model=str(checkpoint), patch_size=32))


def test_in_the_embedding_dataset(tmp_path, checkpoint):
    """Through the workers' dataset: a good image, an all-black one and a decompression bomb."""
    from test_patches import _png_header_only

    branch = LocalBranch(LocalConfig(model=str(checkpoint)))
    painting(300, 200).save(tmp_path / "good.png")
    Image.new("RGB", (120, 90)).save(tmp_path / "black.png")
    _png_header_only(tmp_path / "bomb.png", 20_000, 20_000)
    items = [WorkItem(i, tmp_path / name, f"{i:064x}") for i, name in enumerate(["good.png", "black.png", "bomb.png"])]
    dataset = ImageDataset(items, [branch], max_pixels=Config().ingest.max_pixels, min_side=32)
    batch, failures = collate_items([dataset[i] for i in range(3)])
    assert [f["kind"] for f in failures] == ["too_large"]
    assert batch["inputs"]["local"].shape == (2, 5, 1, 64, 64)
    assert branch.encode(batch["inputs"]["local"]).shape == (2, 64)


def test_shipped_encoder_loads():
    assert default_model_path().is_file(), "the package must ship stylecluster/models/local_infovae.pt"
    assert default_model_path().stat().st_size < 3_000_000
    branch = LocalBranch()
    x = branch.encode(default_collate([branch.preprocess(painting(500, 400), seed=0)]))
    assert x.shape == (1, 64) and np.isfinite(x).all()


def test_local_style_head_projects_the_aggregated_codes_and_must_fit_them(tmp_path, checkpoint):
    config = LocalConfig(model=str(checkpoint), n_patches=3, style_head=None)
    raw = LocalBranch(config)
    batch = default_collate([raw.preprocess(painting(96, 96, seed=i), seed=i) for i in range(12)])
    codes = raw.encode(batch)
    head = ArtistDiscriminantHead(n_components=2, pca_components=8).fit(codes, np.repeat(["a", "b", "c", "d"], 3), raw.parts)
    path = head.save(tmp_path / "local_head.pt", {"branch": raw.provenance()})

    branch = LocalBranch(replace(config, style_head=str(path)))
    assert branch.parts == {"style": (0, 2)} and branch.dim == 2
    np.testing.assert_allclose(branch.encode(batch), head.transform(codes), rtol=1e-4, atol=1e-4)
    assert branch.provenance()["style_head"] == branch.style_head.file_id
    with pytest.raises(ValueError, match="trained on patches"):
        LocalBranch(replace(config, n_patches=4, style_head=str(path)))
    # the packaged head belongs to the packaged encoder: "auto" leaves another encoder's codes raw
    assert LocalBranch(replace(config, style_head="auto")).parts == {"local": (0, 64)}
