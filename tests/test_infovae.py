"""InfoVAE: shapes, the MMD estimator, the loss, and the checkpoint format."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from stylecluster.features.infovae import (
    Decoder,
    Encoder,
    InfoVAE,
    InfoVAEArch,
    InfoVAELossWeights,
    export_encoder,
    infovae_loss,
    kl_to_standard_normal,
    load_checkpoint,
    load_encoder,
    load_infovae,
    mmd,
    save_checkpoint,
)
from stylecluster.features.patches import difference_of_gaussians, normalise_dog


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stroke_patches(n: int, seed: int = 0) -> torch.Tensor:
    """n DoG patches (n, 1, 64, 64) in [0, 1] of random line drawings."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((n, 64, 64), np.float32)
    rows, cols = np.mgrid[:64, :64]
    for i in range(n):
        for _ in range(3):
            a, b, c = rng.normal(size=3)
            canvas[i][np.abs(a * rows + b * cols + c * 20 - 10) < 2 * np.hypot(a, b)] = 255
    return torch.from_numpy(normalise_dog(difference_of_gaussians(canvas, 3.0, 5.0)) / 255.0).unsqueeze(1)


def test_encoder_and_decoder_shapes():
    x = torch.rand(3, 1, 64, 64)
    mu, logvar = Encoder()(x)
    assert mu.shape == logvar.shape == (3, 64)
    assert Decoder()(mu).shape == (3, 1, 64, 64)
    out = InfoVAE()(x)
    assert out["z"].shape == (3, 64) and out["logits"].shape == (3, 1, 64, 64)
    small = InfoVAE(InfoVAEArch(latent_dim=8, channels=(8, 16), image_size=32))
    assert small(torch.rand(2, 1, 32, 32))["logits"].shape == (2, 1, 32, 32)


def test_encoder_layers_as_specified():
    convs = [m for m in Encoder().features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in Encoder().modules()) == 4


def test_mmd_near_zero_for_prior_samples_and_large_for_shifted():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 64, generator=g), torch.randn(256, 64, generator=g)
    same = mmd(a, b).item()
    assert abs(same) < 0.01
    for moved in (a + 0.5, a * 0.2, a * 3.0):
        assert mmd(moved, b).item() > 20 * max(abs(same), 1e-3)
    assert mmd(a + 1.0, b).item() > mmd(a + 0.5, b).item()  # grows with the shift


def test_kl_matches_torch():
    mu, logvar = torch.randn(5, 64), torch.randn(5, 64)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), expected)


def test_loss_combines_terms_with_infovae_weights():
    torch.manual_seed(0)
    x = stroke_patches(8)
    weights = InfoVAELossWeights(alpha=0.95, lam=100.0)
    terms = infovae_loss(InfoVAE()(x), x, weights, generator=torch.Generator().manual_seed(1))
    expected = terms["recon"] + (1 - 0.95) * terms["kl"] + (0.95 + 100 - 1) * terms["mmd"]
    torch.testing.assert_close(terms["loss"], expected)
    assert all(torch.isfinite(v) for v in terms.values())


def test_loss_decreases_on_a_tiny_patch_set():
    torch.manual_seed(0)
    x = stroke_patches(16)
    model = InfoVAE()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    noise = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(10):
        terms = infovae_loss(model(x, generator=noise), x, generator=noise)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.8 * losses[0] and np.all(np.diff(losses[-5:]) < 0), losses


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = InfoVAE().eval()
    x = stroke_patches(4)
    path = save_checkpoint(tmp_path / "m.pt", model, epoch=3, history=[{"epoch": 1, "loss": 1.0}], patch={"patch_size": 64})
    restored, payload = load_infovae(path)
    restored.eval()
    assert payload["epoch"] == 3 and payload["history"][0]["loss"] == 1.0
    with torch.no_grad():
        torch.testing.assert_close(restored.encoder(x), model.encoder(x))
        torch.testing.assert_close(restored.decoder(torch.ones(2, 64)), model.decoder(torch.ones(2, 64)))
    # Encoder-only fp16 export: small, loads to fp32, same codes to fp16 precision.
    small = export_encoder(path, tmp_path / "enc.pt", half=True)
    assert small.stat().st_size < 0.6 * path.stat().st_size
    encoder, meta = load_encoder(small)
    assert meta["epoch"] == 3 and next(encoder.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(encoder(x)[0], model.encoder(x)[0], atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match="encoder only"):
        load_infovae(small)


class _Evil:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_checkpoint_loading_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "stylecluster.infovae", "version": 1, "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="evil.pt: not a stylecluster InfoVAE checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a stylecluster InfoVAE"):
        load_checkpoint(tmp_path / "other.pt")
