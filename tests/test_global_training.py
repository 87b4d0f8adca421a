"""Global-branch training: artist splits, style-preserving views, both recipes, checkpoints.

Everything runs on the hybrid ViT (pretrained Lite0 stem + transformer blocks) at 32 px on a few
generated images, so the whole file stays well under a minute on two cores.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from stylecluster.cli import main
from stylecluster.config import GlobalConfig
from stylecluster.data.splits import split_by_artist
from stylecluster.features.backbones import create_backbone
from stylecluster.features.global_ import GlobalBranch
from stylecluster.train.augment import ViewParams, style_views
from stylecluster.train.csd import multilabel_contrastive_loss
from stylecluster.train.global_style import (
    build_net, create_recipe, export_global, load_train_config, train_on_images,
)
from stylecluster.train.loop import Schedule, make_optimizer, train_step

from conftest import make_image

# random weights: the pretrained stem's loading is tested in test_checkpoint_loaders.py
TINY = dict(weights="random", image_size=32, cache_size=40, batch_size=8, images_per_artist=2, epochs=2, hidden_dim=32, projection_dim=16, style_dim=16)


def tiny_config(method: str, **overrides):
    return load_train_config(None, method=method, **{**TINY, **overrides})


@pytest.fixture(scope="module")
def tiny_set():
    """16 images of 8 'artists': each artist has its own colour scheme and stripe frequency."""
    rng = np.random.default_rng(0)
    images, groups = [], []
    for artist in range(8):
        base = rng.integers(30, 225, 3)
        for _ in range(2):
            stripes = np.sin(np.arange(40) * (artist + 1) / 3.0)[None, :, None] * 40
            noise = rng.normal(0, 12, (40, 40, 3))
            images.append(np.clip(base + stripes + noise, 0, 255).astype(np.uint8))
            groups.append(artist)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), np.array(groups)


# ----------------------------------------------------------------------------- splits


def test_split_never_puts_an_artist_on_both_sides():
    rng = np.random.default_rng(1)
    labels = pd.DataFrame({"path": [f"{i}.jpg" for i in range(400)], "artist": rng.integers(0, 37, 400).astype(str)})
    labels.loc[::50, "artist"] = None  # unknown artists are their own group
    train, val = split_by_artist(labels, 0.3, seed=3)
    assert len(train) + len(val) == len(labels) and not set(train.index) & set(val.index)
    assert not set(train.artist.dropna()) & set(val.artist.dropna())
    assert abs(val.artist.nunique() / labels.artist.nunique() - 0.3) < 0.05
    again, _ = split_by_artist(labels, 0.3, seed=3)
    other, _ = split_by_artist(labels, 0.3, seed=4)
    assert train.index.equals(again.index) and not train.index.equals(other.index)
    with pytest.raises(ValueError, match="no 'artist' column"):
        split_by_artist(labels.drop(columns="artist"))


# ----------------------------------------------------------------------------- views


def test_views_keep_colour_and_are_seeded():
    flat = torch.zeros(4, 3, 40, 40, dtype=torch.uint8)
    flat[:, 0], flat[:, 1], flat[:, 2] = 200, 40, 90
    views = style_views(flat, ViewParams(size=32), torch.Generator().manual_seed(0), (0.0,) * 3, (1.0,) * 3)
    assert views.shape == (4, 3, 32, 32)
    # geometric only: a flat colour stays exactly that colour (no jitter, no grayscale, no dark corners)
    assert torch.allclose(views, torch.tensor([200, 40, 90]).view(1, 3, 1, 1) / 255.0, atol=1e-5)
    ramp = torch.arange(40, dtype=torch.uint8).repeat(2, 3, 40, 1) * 6
    a = style_views(ramp, ViewParams(size=32), torch.Generator().manual_seed(5), (0.0,) * 3, (1.0,) * 3)
    b = style_views(ramp, ViewParams(size=32), torch.Generator().manual_seed(5), (0.0,) * 3, (1.0,) * 3)
    c = style_views(ramp, ViewParams(size=32), torch.Generator().manual_seed(6), (0.0,) * 3, (1.0,) * 3)
    assert torch.equal(a, b) and not torch.allclose(a, c)


# ----------------------------------------------------------------------------- losses and steps


def test_multilabel_contrastive_loss_by_hand():
    z = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1])
    t = 0.5
    sim = z @ z.T / t
    # anchor 0: positive 1 among {1, 2}; anchor 1: positive 0 among {0, 2}; anchor 2: none (skipped)
    expected = -((sim[0, 1] - torch.logsumexp(sim[0, [1, 2]], 0)) + (sim[1, 0] - torch.logsumexp(sim[1, [0, 2]], 0))) / 2
    assert torch.allclose(multilabel_contrastive_loss(z, labels, t), expected)
    multi_hot = torch.tensor([[1, 0], [1, 1], [0, 1]])  # 1 shares a tag with both
    assert multilabel_contrastive_loss(z, multi_hot, t) != multilabel_contrastive_loss(z, labels, t)


def test_csd_batches_draw_artists_together(tiny_set):
    _, groups = tiny_set
    recipe = create_recipe(tiny_config("csd"))
    batches = recipe.batches(groups, torch.Generator().manual_seed(0))
    assert len(batches) == 2 and sorted(torch.cat(batches).tolist()) == list(range(16))
    for batch in batches:
        _, counts = np.unique(groups[batch.numpy()], return_counts=True)
        assert (counts == 2).all()


@pytest.mark.parametrize("method", ["simclr", "csd"])
def test_one_step_of_each_recipe_decreases_the_loss(tiny_set, method):
    images, groups = tiny_set
    config = tiny_config(method, lr=1e-4)
    recipe = create_recipe(config)
    net, data_config = build_net(config, recipe)
    index = torch.arange(8)
    group_t = torch.as_tensor(groups)

    def loss_fn(idx, generator):
        generator.manual_seed(11)  # the same views before and after the step
        x = images[idx]
        pair = torch.cat([style_views(x, config.views(), generator, data_config["mean"], data_config["std"]) for _ in range(2)])
        return recipe.loss(net, net(pair), group_t[idx])

    net.train()
    frozen_before = net.backbone.patch_embed.backbone.conv_stem.weight.clone()
    with torch.no_grad():
        before = loss_fn(index, torch.Generator())["loss"].item()
    optimizer = make_optimizer(net, Schedule(lr=1e-4))
    terms = train_step(net, loss_fn, index, torch.Generator(), optimizer, torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"))
    assert terms["loss"] == pytest.approx(before, rel=1e-5)
    with torch.no_grad():
        after = loss_fn(index, torch.Generator())["loss"].item()
    assert after < before
    assert torch.equal(net.backbone.patch_embed.backbone.conv_stem.weight, frozen_before)  # frozen stem


# ----------------------------------------------------------------------------- runs


def _state(path):
    return torch.load(path, weights_only=True)


def test_checkpoint_resume_equals_an_uninterrupted_run_and_seeds_decide(tmp_path, tiny_set):
    images, groups = tiny_set
    full = train_on_images(images, groups, tiny_config("csd"), tmp_path / "full.pt", device="cpu", progress=False, data="d")
    train_on_images(images, groups, tiny_config("csd", epochs=1), tmp_path / "split.pt", device="cpu", progress=False, data="d")
    assert _state(tmp_path / "split.pt")["epoch"] == 1
    resumed = train_on_images(images, groups, tiny_config("csd"), tmp_path / "split.pt", device="cpu", progress=False, data="d")
    a, b = _state(tmp_path / "full.pt"), _state(tmp_path / "split.pt")
    assert b["epoch"] == 2 and [r["loss"] for r in resumed] == [r["loss"] for r in full]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # another seed trains differently; another data set or setting refuses to resume
    train_on_images(images, groups, tiny_config("csd", epochs=1, seed=1), tmp_path / "seed1.pt", device="cpu", progress=False, data="d")
    first = _state(tmp_path / "seed1.pt")["model"]["style_head.weight"]
    assert not torch.equal(first, _state(tmp_path / "split.pt")["model"]["style_head.weight"])
    with pytest.raises(ValueError, match="other data"):
        train_on_images(images, groups, tiny_config("csd", epochs=3), tmp_path / "full.pt", device="cpu", progress=False, data="e")
    with pytest.raises(ValueError, match="other config"):
        train_on_images(images, groups, tiny_config("csd", epochs=3, lr=1.0), tmp_path / "full.pt", device="cpu", progress=False, data="d")


def test_trained_checkpoints_embed_through_the_global_branch(tmp_path, tiny_set):
    images, groups = tiny_set
    train_on_images(images, groups, tiny_config("csd", epochs=1), tmp_path / "csd.pt", device="cpu", progress=False)
    exported = export_global(tmp_path / "csd.pt", tmp_path / "csd16.pt")
    assert _state(exported)["state_dict"]["style_head.weight"].dtype == torch.float16
    for weights in (tmp_path / "csd.pt", exported):
        branch = GlobalBranch(GlobalConfig(backbone="vit_hybrid_lite0", weights=str(weights), gram_levels=(), image_size=32))
        assert branch.parts == {"style": (0, 16)}
        vectors = branch.encode(torch.randn(2, 3, 32, 32))
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    train_on_images(images, groups, tiny_config("simclr", epochs=1), tmp_path / "simclr.pt", device="cpu", progress=False)
    backbone = create_backbone("vit_hybrid_lite0", str(tmp_path / "simclr.pt"))
    assert backbone.style_head is None  # SimCLR's projection head is dropped: pooled features


def test_cli_train_global(tmp_path, capsys):
    root = tmp_path / "images"
    rows = []
    for i in range(12):
        name = f"a{i % 4}/img{i}.png"
        make_image(root / name, size=(48, 40), noise_seed=i)
        rows.append({"path": name, "artist": f"artist{i % 4}", "style": "never used"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "tiny.yaml").write_text("weights: random\nimage_size: 32\ncache_size: 40\nhidden_dim: 32\nprojection_dim: 16\nstyle_dim: 16\nimages_per_artist: 2\n")
    out = tmp_path / "global.pt"
    args = ["train-global", str(root), "--method", "csd", "--labels", str(tmp_path / "labels.csv"), "--out", str(out),
            "--config", str(tmp_path / "tiny.yaml"), "--epochs", "1", "--batch-size", "8", "--export", str(tmp_path / "small.pt"), "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "epoch 1: loss" in printed and "--weights" in printed and (tmp_path / "small.pt").is_file()
    assert main(["train-global", str(root), "--method", "csd", "--out", str(tmp_path / "x.pt"), "-q"]) == 2
    assert "pass --labels" in capsys.readouterr().err


def test_views_zoom_out_when_the_scale_exceeds_one():
    from stylecluster.train.augment import ViewParams, view_affines

    generator = torch.Generator().manual_seed(0)
    theta = view_affines(64, ViewParams(scale=(1.2, 1.2), ratio=(1.0, 1.0), max_rotation=0.0, flip=False), generator)
    np.testing.assert_allclose(theta[:, 0, 0].numpy(), np.sqrt(1.2), rtol=1e-5)  # the view spans more than the image
    assert (theta[:, :, 2].abs() <= np.sqrt(1.2) - 1 + 1e-6).all()  # and still covers all of it
    usual = view_affines(64, ViewParams(scale=(0.35, 1.0)), torch.Generator().manual_seed(0))
    assert usual[:, 0, :2].norm(dim=1).max() <= 1.0 + 1e-6  # scales up to 1 never leave the image
