"""Cached-activation fine-tuning (stylecluster/train/cached.py) on the real offline Lite0 weights.

Two synthetic "hands" (stripes and blotches, each in its own palette), 64-px views, so that the
whole file runs in seconds on two cores.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from stylecluster.cli import main
from stylecluster.config import GlobalConfig
from stylecluster.errors import ConfigError, InputError
from stylecluster.features.backbones import create_backbone
from stylecluster.features.global_ import GlobalBranch
from stylecluster.train import cached
from stylecluster.train.cached import (CutNet, ViewCache, build_view_cache, dates_contrastive_loss, forward_above, forward_below, levels_above,
                                       load_cached_config, train_cached)
from stylecluster.train.global_style import create_recipe, load_train_config

SMALL = dict(method="csd", backbone="efficientnet_lite0", weights=None, cut="blocks.5", image_size=64, cache_size=72, views_per_image=3,
             batch_size=8, images_per_artist=4, epochs=3, lr=1e-3, warmup_epochs=0.0, hidden_dim=32, projection_dim=16, style_dim=16)


def small_config(**overrides):
    return load_train_config(None, **{**SMALL, **overrides})


def hand(artist: int, seed: int) -> np.ndarray:
    """A painting by one of two hands: fine diagonal stripes (0) or soft blotches (1)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:80, 0:88]
    if artist == 0:
        tone = np.sin((x + y + rng.uniform(0, 6)) / 1.5)[..., None] * 60 + np.array([150, 110, 60])
    else:
        blobs = sum(np.exp(-((x - rng.uniform(0, 88)) ** 2 + (y - rng.uniform(0, 80)) ** 2) / 150.0) for _ in range(6))
        tone = blobs[..., None] * 120 + np.array([40, 80, 150])
    return np.clip(tone + rng.normal(0, 8, (80, 88, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def paintings(tmp_path_factory):
    root = tmp_path_factory.mktemp("hands")
    rows = []
    for i in range(16):
        name = f"a{i % 2}/p{i:02d}.png"
        (root / name).parent.mkdir(exist_ok=True)
        Image.fromarray(hand(i % 2, i)).save(root / name)
        rows.append({"path": name, "artist": f"hand{i % 2}", "style": "never used"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root, [root / r["path"] for r in rows], np.arange(16) % 2


@pytest.fixture(scope="module")
def cache(paintings, tmp_path_factory):
    _, paths, _ = paintings
    return build_view_cache(paths, [p.name for p in paths], small_config(), tmp_path_factory.mktemp("cache") / "views", 1, False, chunk_size=6)


def test_cache_holds_the_frozen_part_of_the_whole_painting_and_its_views(paintings, cache):
    _, paths, _ = paintings
    assert cache.views.shape == (16, 3, 192, 2, 2) and cache.views.dtype == np.float16 and not cache.skipped
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["chunks_done"] == manifest["chunks"] == 3
    # view 0 is the branch's own input: the frozen part of what embed computes
    branch = GlobalBranch(GlobalConfig(image_size=64, gram_levels=(), style_head=None))
    with torch.inference_mode():
        x = branch.model_input(torch.stack([branch.preprocess(Image.open(p).convert("RGB"), 0) for p in paths[:4]]))
        expected = forward_below(branch.backbone.model, 6, x).numpy()
    np.testing.assert_allclose(cache.views[:4, 0].astype(np.float32), expected, atol=2e-2, rtol=1e-2)
    assert not np.allclose(cache.views[:, 1], cache.views[:, 2])  # crops differ from each other


def test_a_killed_cache_is_completed_not_recomputed(paintings, cache, tmp_path, monkeypatch):
    _, paths, _ = paintings
    folder = tmp_path / "views"
    decoded = []
    real = cached._decode
    monkeypatch.setattr(cached, "_decode", lambda path, *a: decoded.append(path) or real(path, *a))
    build_view_cache(paths, [p.name for p in paths], small_config(), folder, 1, False, chunk_size=6)
    # a kill after the first chunk: the manifest says one chunk, the later rows were never written
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "chunks_done": 1}))
    views = np.memmap(folder / "views.f16", dtype=np.float16, mode="r+", shape=tuple(manifest["shape"]))
    views[6:] = 0
    views.flush()
    with pytest.raises(InputError, match="not a complete view cache"):
        ViewCache.open(folder)
    decoded.clear()
    resumed = build_view_cache(paths, [p.name for p in paths], small_config(), folder, 1, False, chunk_size=6)
    assert decoded == paths[6:]  # only the missing chunks were computed
    assert np.array_equal(resumed.views, cache.views)  # and they equal an uninterrupted build
    with pytest.raises(InputError, match="other images or settings"):
        build_view_cache(paths, [p.name for p in paths], small_config(views_per_image=2), folder, 1, False, chunk_size=6)


def test_a_bad_cut_is_one_line():
    model = create_backbone("efficientnet_lite0").model
    for cut in ("blocks.7", "head", "blocks.x"):
        with pytest.raises(ConfigError, match="blocks.0 … blocks.6") as info:
            cached.cut_index(model, cut)
        assert "\n" not in str(info.value)


def _fixed_loss(net: CutNet, cache: ViewCache, groups: np.ndarray, config) -> float:
    recipe = create_recipe(config)
    with torch.no_grad():
        net.eval()
        pair = torch.from_numpy(np.concatenate([cache.views[:, 0], cache.views[:, 1]])).float()
        return float(recipe.loss(net, net(pair), torch.as_tensor(groups))["style"])


def test_training_moves_only_the_layers_above_the_cut_and_separates_the_hands(paintings, cache, tmp_path):
    _, _, groups = paintings
    config = small_config()
    out = tmp_path / "ft.pt"
    history = train_cached(cache, groups, config, out, progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    start = create_backbone("efficientnet_lite0").model.state_dict()
    trained = torch.load(out, weights_only=True)["model"]
    below = [k for k in start if k.startswith(("conv_stem", "bn1")) or any(k.startswith(f"blocks.{i}.") for i in range(6))]
    above = [k for k in start if k.startswith(("blocks.6.", "conv_head")) and start[k].is_floating_point()]
    assert below and all(torch.equal(trained[f"backbone.{k}"], start[k]) for k in below)  # bit-identical
    assert all(not torch.equal(trained[f"backbone.{k}"], start[k]) for k in above if k.endswith("weight"))
    # the supervised contrastive term on fixed views falls: the hands lie further apart
    recipe = create_recipe(config)
    def net_with(state):
        torch.manual_seed(config.seed)
        model = create_backbone("efficientnet_lite0").model
        net = CutNet(model, 6, *recipe.heads(model.num_features))
        if state is not None:
            net.load_state_dict(state)
        return net
    assert _fixed_loss(net_with(trained), cache, groups, config) < _fixed_loss(net_with(None), cache, groups, config)
    # resuming with more epochs continues the same checkpoint
    assert [h["epoch"] for h in train_cached(cache, groups, small_config(epochs=4), out, progress=False)] == [1, 2, 3, 4]


def test_the_checkpoint_embeds_as_the_trained_network(paintings, cache, tmp_path):
    _, paths, groups = paintings
    out = tmp_path / "ft.pt"
    train_cached(cache, groups, small_config(epochs=1), out, progress=False)
    settings = dict(image_size=64, style_head=None)
    trained = GlobalBranch(GlobalConfig(weights=str(out), **settings))
    imagenet = GlobalBranch(GlobalConfig(**settings))
    assert trained.backbone.style_head is None and "pooled" in trained.parts  # the projections are not loaded
    batch = torch.stack([trained.preprocess(Image.open(p).convert("RGB"), 0) for p in paths[:3]])
    vectors, before = trained.encode(batch), imagenet.encode(batch)
    model = trained.backbone.model
    assert levels_above(model, 6, trained.config.gram_levels) == [4]  # block 6's output; levels 1-3 lie below the cut
    with torch.inference_mode():
        pooled, maps = forward_above(model, 6, forward_below(imagenet.backbone.model, 6, imagenet.model_input(batch)), [4])
        expected = {"pooled": pooled.numpy(), "gram4": trained.gram_parts(maps, [4])[0].numpy()}
    for name, (a, b) in trained.parts.items():
        if name in expected:  # the trained network's forward from the frozen part's output
            np.testing.assert_allclose(vectors[:, a:b], expected[name], atol=1e-3, rtol=1e-4)
            assert not np.allclose(vectors[:, a:b], before[:, a:b], atol=1e-3)
        else:  # Gram levels below the cut are untouched
            np.testing.assert_allclose(vectors[:, a:b], before[:, a:b], atol=1e-5)


def test_cli_train_global_with_a_cut(paintings, tmp_path, capsys):
    root, _, _ = paintings
    (tmp_path / "small.yaml").write_text("\n".join(f"{k}: {v}" for k, v in SMALL.items() if v is not None and k != "epochs") + "\n")
    args = ["train-global", str(root), "--labels", str(root / "labels.csv"), "--out", str(tmp_path / "g.pt"), "--config", str(tmp_path / "small.yaml"),
            "--epochs", "1", "-q"]
    assert main(args) == 0
    assert "epoch 1: loss" in capsys.readouterr().out and (tmp_path / "g.pt.views" / "manifest.json").is_file()
    assert main(args[:-3] + ["--set", "cut=conv_head", "-q"]) == 2
    assert "cut 'conv_head' is not a block" in capsys.readouterr().err


def test_the_dates_term_by_hand():
    # rows 0 and 1 share the 1900s, row 2 (1950) has no positive, row 3 is undated
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    years = torch.tensor([1900.0, 1905.0, 1950.0, float("nan")])
    # anchor 0: logits 0 (row 1, its positive), 1 (row 2) -> -log(1 + e); anchor 1: 0, 0 -> -log 2.
    # Row 3 would add a logit of 0 to anchor 0's denominator: undated rows take no part at all.
    expected = (math.log(1 + math.e) + math.log(2)) / 2  # 1.003204
    assert float(dates_contrastive_loss(z, years, 10.0, 1.0)) == pytest.approx(expected, abs=1e-5)
    # 1899 lies outside the 1900s bin: now rows 1 and 2 are the pair (anchor 1: -log 2, anchor 2: -log(1 + e))
    assert float(dates_contrastive_loss(z[:3], torch.tensor([1899.0, 1900.0, 1905.0]), 10.0, 1.0)) == pytest.approx(expected, abs=1e-5)
    # a century bin holds rows 0-2 together: anchors 0 and 2 give log(1 + e) - 1/2 each, anchor 1 log 2
    century = (2 * (math.log(1 + math.e) - 0.5) + math.log(2)) / 3  # 0.773223
    assert float(dates_contrastive_loss(z, years, 100.0, 1.0)) == pytest.approx(century, abs=1e-5)
    # no row with a positive: zero, and still a tensor the optimiser can step through
    lone = dates_contrastive_loss(z.requires_grad_(), torch.tensor([1900.0, float("nan"), 1950.0, float("nan")]), 10.0, 1.0)
    assert lone.detach().item() == 0.0 and lone.requires_grad


def test_training_with_the_dates_term(paintings, cache, tmp_path):
    _, _, groups = paintings
    years = np.where(np.arange(16) % 4 == 3, np.nan, 1900.0 + 40 * groups)
    config = load_cached_config(None, **{**SMALL, "epochs": 1, "dates_weight": 0.5})
    history = train_cached(cache, groups, config, tmp_path / "dates.pt", progress=False, years=years)
    assert history[0]["dates"] > 0 and history[0]["loss"] == pytest.approx(history[0]["style"] + history[0]["ssl"] + 0.5 * history[0]["dates"], rel=1e-4)
    with pytest.raises(InputError, match="one year"):
        train_cached(cache, groups, config, tmp_path / "none.pt", progress=False)
    # without the dates term a cached config trains (and resumes) as the plain one
    train_cached(cache, groups, small_config(epochs=1), tmp_path / "plain.pt", progress=False)
    resumed = train_cached(cache, groups, load_cached_config(None, **{**SMALL, "epochs": 2}), tmp_path / "plain.pt", progress=False)
    assert [h["epoch"] for h in resumed] == [1, 2] and "dates" not in resumed[-1]
