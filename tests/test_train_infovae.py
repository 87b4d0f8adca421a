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
    patches, owners, skipped = collect_patches(sorted(images.glob("*.png")), [LocalConfig()], workers=0, progress=False)
    assert patches.shape == (4 * 5, 64, 64) and patches.dtype == np.uint8 and not skipped  # 4x5 grid → 5 each
    assert owners.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
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


def test_artist_term_pulls_one_artists_codes_together(tmp_path):
    """Two "artists" whose patches differ only in a faint texture the reconstruction hardly
    notices: with the artist term the codes of one artist end up closer to each other than to the
    other's (measured by the mean cosine similarity within vs between), without it they do not."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 64)).astype(np.float64)
    stripes = np.where((np.arange(64) // 2) % 2 == 0, 12.0, -12.0)
    patches = np.concatenate([base[:32] + stripes[None, None, :], base[32:] + stripes[None, :, None]]).clip(0, 255).astype(np.uint8)
    groups = np.repeat([0, 1], 32)

    def separation(weight: float) -> float:
        config = InfoVAETrainConfig(epochs=6, batch_size=16, lr=3e-3, arch=TINY, artist_weight=weight, patches_per_artist=4)
        fit_infovae(patches, tmp_path / f"w{weight}.pt", config, device="cpu", progress=False, groups=groups)
        model, _ = load_infovae(tmp_path / f"w{weight}.pt")
        with torch.inference_mode():
            mu, _ = model.eval().encoder(torch.from_numpy(patches).unsqueeze(1).float() / 255)
        unit = torch.nn.functional.normalize(mu, dim=1)
        similarity = unit @ unit.T
        same = torch.from_numpy(groups[:, None] == groups[None])
        return float(similarity[same].mean() - similarity[~same].mean())

    assert separation(5.0) > 0.3  # measured 0.40
    assert separation(0.0) < 0.15  # measured 0.04


def test_artist_term_needs_artists(tmp_path):
    from stylecluster.errors import ConfigError, InputError

    config = InfoVAETrainConfig(epochs=1, batch_size=8, arch=TINY, artist_weight=1.0)
    with pytest.raises(InputError, match="needs an artist for every patch"):
        fit_infovae(random_patches(16), tmp_path / "a.pt", config, device="cpu", progress=False)
    with pytest.raises(InputError, match="at least 2 artists"):
        fit_infovae(random_patches(16), tmp_path / "a.pt", config, device="cpu", progress=False, groups=np.array([0] * 8 + [-1] * 8))
    with pytest.raises(ConfigError, match="patches_per_artist must be at least 2"):
        InfoVAETrainConfig(patches_per_artist=1)


def test_train_local_reads_artists_per_folder(tmp_path):
    from stylecluster.train.infovae import patch_artists

    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        (folder / "x").mkdir(parents=True)
    (folders[0] / "labels.csv").write_text("path,artist\nx/1.png,Pierre-Auguste Renoir\nx/2.png,Claude Monet\n")
    (folders[1] / "labels.csv").write_text("path,artist\nx/1.png,pierre-auguste-renoir\n")
    paths = [folders[0] / "x/1.png", folders[0] / "x/2.png", folders[1] / "x/1.png", folders[1] / "x/3.png"]
    codes = patch_artists(paths, folders, [f / "labels.csv" for f in folders])
    # one artist across both folders (matched by name key), one other, and one image without a label
    assert codes.tolist() == [0, 1, 0, -1]
    with pytest.raises(ValueError, match="one labels file per images folder"):
        patch_artists(paths, folders, [folders[0] / "labels.csv"])


def test_train_local_command_with_artist_labels(tmp_path, capsys):
    from stylecluster.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (130, 170, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (tmp_path / "labels.csv").write_text("path,artist\n0.png,A\n1.png,A\n2.png,B\n3.png,B\n")
    args = ["train-local", str(images), "--out", str(tmp_path / "local.pt"), "--epochs", "1", "--batch-size", "8", "--workers", "0", "-q",
            "--set", "artist_weight=1.0", "--set", "patches_per_artist=4"]
    assert main(args) == 2  # the artist term without labels: one line, no traceback
    assert "needs an artist for every patch" in capsys.readouterr().err
    assert main([*args, "--labels", str(tmp_path / "labels.csv")]) == 0
    assert "artist" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "local.pt")["artists"] == 2
