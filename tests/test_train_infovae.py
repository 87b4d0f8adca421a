"""InfoVAE training: patch collection, per-epoch checkpoints, exact resume, data mismatch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylecluster.config import LocalConfig
from stylecluster.features.infovae import InfoVAEArch, load_checkpoint, load_infovae
from stylecluster.train.infovae import InfoVAETrainConfig, collect_patches, fit_infovae, train_local

TINY = InfoVAEArch(latent_dim=8, channels=(8, 16, 32, 64), image_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_patches(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8)


def test_checkpoint_each_epoch_and_exact_resume(tmp_path):
    patches = random_patches(48)
    settings = dict(batch_size=16, arch=TINY, seed=3)
    meta = {"data": "fingerprint-a"}
    straight = fit_infovae(patches, tmp_path / "a.pt", InfoVAETrainConfig(epochs=2, **settings), device="cpu", progress=False, metadata=meta)
    assert [r["epoch"] for r in straight] == [1, 2]
    assert all(np.isfinite(r[k]) for r in straight for k in ("loss", "recon", "kl", "mmd"))
    # An "interrupted" run: one epoch, then the same command with --epochs 2 resumes.
    fit_infovae(patches, tmp_path / "b.pt", InfoVAETrainConfig(epochs=1, **settings), device="cpu", progress=False, metadata=meta)
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 1
    resumed = fit_infovae(patches, tmp_path / "b.pt", InfoVAETrainConfig(epochs=2, **settings), device="cpu", progress=False, metadata=meta)
    assert len(resumed) == 2 and resumed[1]["loss"] == pytest.approx(straight[1]["loss"], rel=1e-5)
    a, _ = load_infovae(tmp_path / "a.pt")
    b, _ = load_infovae(tmp_path / "b.pt")
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb)
    with pytest.raises(ValueError, match="other data"):
        fit_infovae(patches, tmp_path / "b.pt", InfoVAETrainConfig(epochs=3, **settings), device="cpu", progress=False, metadata={"data": "b"})


def test_train_local_on_a_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    patches, skipped = collect_patches(sorted(images.glob("*.png")), [LocalConfig()], workers=0, progress=False)
    assert patches.shape == (4 * 5, 64, 64) and patches.dtype == np.uint8 and not skipped  # 4x5 grid → 5 each
    history = train_local(images, tmp_path / "local.pt", InfoVAETrainConfig(epochs=1, batch_size=8, workers=0), device="cpu", progress=False)
    assert len(history) == 1
    payload = load_checkpoint(tmp_path / "local.pt")
    assert payload["patch"]["patch_scale"] == ["pixels"] and payload["images"]["count"] == 5
    assert (tmp_path / "local.pt.patches.npz").is_file()
    cache = tmp_path / "local.pt.patches.npz"
    written = cache.stat().st_mtime_ns

    def no_extraction(*args, **kwargs):
        raise AssertionError("patches extracted again although the cache holds them")

    # Rerunning the finished command trains nothing more and reuses the patch cache: nothing is
    # extracted and the cache is not rewritten.
    monkeypatch.setattr("stylecluster.train.infovae.collect_patches", no_extraction)
    assert train_local(images, tmp_path / "local.pt", InfoVAETrainConfig(epochs=1, batch_size=8, workers=0), device="cpu", progress=False) == history
    assert cache.stat().st_mtime_ns == written
    # Other data (one image fewer) does not match the cache's fingerprint: extracted afresh.
    (images / "3.png").unlink()
    with pytest.raises(AssertionError, match="extracted again"):
        train_local(images, tmp_path / "local.pt", InfoVAETrainConfig(epochs=1, batch_size=8, workers=0), device="cpu", progress=False, resume=False)


def test_train_local_command(tmp_path, capsys):
    from stylecluster.cli import main
    from stylecluster.features.infovae import load_encoder

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (130, 170, 3), dtype=np.uint8)).save(images / f"{i}.png")
    args = ["train-local", str(images), "--out", str(tmp_path / "local.pt"), "--epochs", "1", "--batch-size", "8", "--workers", "0", "-q"]
    assert main([*args, "--export", str(tmp_path / "encoder.pt")]) == 0
    assert "epoch 1: loss" in capsys.readouterr().out
    encoder, payload = load_encoder(tmp_path / "encoder.pt")
    assert payload["epoch"] == 1 and payload.get("optimizer") is None
