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
from stylecluster.data.dataset import ImageDataset, WorkItem, collate_items
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
