"""The faster embed path computes what the straightforward one did: each shortcut against the
computation it replaced (scipy's DoG, the unfolded encoder, timm's whole transform, a separate
hashing pass)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from conftest import make_image
from stylecluster.config import LocalConfig
from stylecluster.data.dataset import ImageDataset, WorkItem, collate_items, image_seed
from stylecluster.data.decode import hash_file, read_hashed
from stylecluster.features.global_ import GlobalBranch
from stylecluster.features.local_ import LocalBranch, posterior_mean_network
from stylecluster.features.patches import difference_of_gaussians, extract_patches, normalise_dog


@pytest.mark.parametrize("shape, sigma1, sigma2", [((5, 64, 64), 3.0, 5.0), ((300, 64, 64), 3.0, 5.0), ((2, 3, 20, 9), 1.0, 6.0)])
def test_dog_equals_scipy_gaussian_filter(shape, sigma1, sigma2):
    # 300 patches: more than OpenCV filters at once; 20 x 9 px with sigma 6: kernels wider than the patch
    stack = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    reference = gaussian_filter(stack, sigma1, mode="reflect", axes=(-2, -1)) - gaussian_filter(stack, sigma2, mode="reflect", axes=(-2, -1))
    dog = difference_of_gaussians(stack, sigma1, sigma2)
    assert dog.shape == shape and dog.dtype == np.float32
    assert np.abs(dog - reference).max() < 1e-4
    assert np.abs(normalise_dog(dog) - normalise_dog(reference)).max() < 1e-2  # on the 0-255 scale


def test_folded_encoder_gives_the_encoders_codes(one_torch_thread):
    branch = LocalBranch()
    patches = torch.rand(12, 1, 64, 64)
    with torch.inference_mode():
        mu, _ = branch.encoder(patches)
        folded = posterior_mean_network(branch.encoder)(patches.contiguous(memory_format=torch.channels_last))
    assert folded.shape == mu.shape
    assert (folded - mu).abs().max() < 1e-4
    # and the branch's vector is the mean of those codes
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    dog = extract_patches(image, LocalConfig(), seed=3).dog
    with torch.inference_mode():
        expected = branch.encoder(torch.from_numpy(dog[:, None] / np.float32(255.0)))[0].mean(0).numpy()
    got = branch.encode(branch.preprocess(image, 3)[None])[0]
    assert np.abs(got - expected).max() < 1e-4


def test_global_branch_uint8_input_is_exactly_timms_transform(one_torch_thread):
    branch = GlobalBranch()
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (180 + 40 * i, 240, 3), dtype=np.uint8)) for i in range(3)]
    pixels = torch.stack([branch.preprocess(im, 0) for im in images])
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 224, 224)
    reference = torch.stack([branch.transform(im) for im in images])
    assert torch.equal(branch.model_input(pixels), reference)
    normalise, branch._normalise = branch._normalise, None  # the whole transform, as before
    try:
        before = branch.encode(reference)
    finally:
        branch._normalise = normalise
    assert np.array_equal(branch.encode(pixels), before)


def test_workers_hash_what_hash_file_hashes(tmp_path):
    paths = [make_image(tmp_path / f"{i}.png", noise_seed=i) for i in range(3)]
    info, data = read_hashed(paths[0])
    assert info == hash_file(paths[0]) and info.sha256 == hashlib.sha256(paths[0].read_bytes()).hexdigest() and data == paths[0].read_bytes()
    known = frozenset({hash_file(paths[2]).sha256})
    dataset = ImageDataset([WorkItem(i, p, None) for i, p in enumerate(paths)], [], max_pixels=10**8, min_side=8, known_sha256=known)
    batch, others = collate_items([dataset[i] for i in range(3)])
    assert batch["sha256"] == [hash_file(p).sha256 for p in paths[:2]]
    assert others == [{"index": 2, "sha256": hash_file(paths[2]).sha256, "known": True}]  # not decoded


def test_a_224px_file_gives_bit_identical_vectors_with_both_branches(tmp_path, one_torch_thread):
    # Both branches now decode at the global branch's size (the local one cuts its patches from
    # the file's own pixels when a JPEG is reduced); a 224-px file is never reduced, so both
    # branches' inputs and vectors are those of the full-resolution decode (the former path).
    paths = [make_image(tmp_path / f"{i}.jpg", size=(224, 224 - 30 * i), noise_seed=i, quality=90) for i in range(3)]
    branches = [GlobalBranch(), LocalBranch()]
    items = [WorkItem(i, p, None) for i, p in enumerate(paths)]
    now = ImageDataset(items, branches, 10**8, 32)
    before = ImageDataset(items, branches, 10**8, 32)
    before.draft_side = None  # what the dataset did while the local branch asked for full resolution
    assert now.draft_side == 224
    batch_now, _ = collate_items([now[i] for i in range(3)])
    batch_before, _ = collate_items([before[i] for i in range(3)])
    for branch in branches:
        assert np.array_equal(np.asarray(batch_now["inputs"][branch.name]), np.asarray(batch_before["inputs"][branch.name]))
        assert np.array_equal(branch.encode(batch_now["inputs"][branch.name]), branch.encode(batch_before["inputs"][branch.name]))


def test_a_big_jpeg_is_decoded_once_reduced_and_its_patches_cut_at_native_resolution(tmp_path):
    from stylecluster.data.decode import load_image
    from stylecluster.features.patches import extract_patches_native

    rng = np.random.default_rng(5)
    texture = np.kron(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))  # 1600 x 1200
    path = tmp_path / "big.jpg"
    Image.fromarray(texture).save(path, quality=90)
    local = LocalBranch()
    dataset = ImageDataset([WorkItem(0, path, None)], [GlobalBranch(), local], 10**8, 32)
    item = dataset[0]
    assert (item["width"], item["height"]) == (1600, 1200)
    image = load_image(path, draft_side=dataset.draft_side)
    assert image.size == (800, 600)  # 1/2: 1/4 would keep 300 px of shorter side, under 2 x 224
    seed = image_seed(item["sha256"], 0)
    expected = extract_patches_native(image.info["native"], local.config, seed).dog
    assert np.array_equal(item["inputs"]["local"], (expected[:, None] / np.float32(255.0)).astype(np.float32))
