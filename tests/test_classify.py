"""The supervised classifiers: models, class weights, split, training, checkpoints, Grad-CAM, CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from stylecluster.classify import LabelledImages, create_classifier, fit_classifier, load_classifier, load_classifier_config
from stylecluster.classify.data import augmented_view, class_weights, clean_view, encode_views, split_three_ways
from stylecluster.classify.gradcam import grad_cam
from stylecluster.classify.train import make_optimizer
from stylecluster.cli import main
from stylecluster.features.backbones import WeightsError
from conftest import make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(cnn="test_efficientnet", cnn_weights="random", vit="test_vit", vit_weights="random", image_size=64)


def tiny_config(**overrides):
    return load_classifier_config(**{**TINY, **overrides})


def tiny_data(n: int = 24, size: int = 64, seed: int = 0) -> LabelledImages:
    """Two classes told apart by colour (red vs blue tint), 6 artists."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, size=(n, 3, size, size), dtype=np.uint8)
    targets = np.arange(n) % 2
    images[targets == 0, 0] += 120
    images[targets == 1, 2] += 120
    split = np.array(["train"] * (n - 8) + ["val"] * 4 + ["test"] * 4)
    return LabelledImages(torch.from_numpy(images), torch.as_tensor(targets), split, ["blue", "red"][::-1], [f"img{i}.png" for i in range(n)])


@pytest.mark.parametrize("kind", ["cnn", "vit", "fusion"])
def test_output_shapes_and_cached_path_equal_forward(kind):
    model = create_classifier(tiny_config(model=kind), num_classes=5).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        features = model.encode(x)
        logits = model(x)
    assert set(features) == set(model.parts)
    assert logits.shape == (3, 5)
    # frozen training classifies features read back from the fp16 cache (classify/data.py):
    # the logits stay those of the full forward pass to fp16 precision
    cached = {name: value.to("cpu", torch.float16) for name, value in features.items()}
    with torch.no_grad():
        from_cache = model.classify(cached)
    assert from_cache.dtype == torch.float32
    assert torch.allclose(logits, from_cache, atol=2e-2)
    assert not torch.equal(logits, from_cache)  # the cache really was read in half precision


def test_resnet50_and_plain_vit_load_weight_files(tmp_path):
    vit = timm.create_model("test_vit", pretrained=False, num_classes=0)
    torch.nn.init.constant_(vit.blocks[0].attn.qkv.weight, 0.125)
    weights = tmp_path / "vit.pth"
    torch.save({"state_dict": vit.state_dict()}, weights)
    model = create_classifier(tiny_config(model="fusion", cnn="resnet50", vit_weights=str(weights)), num_classes=3).eval()
    assert torch.all(model.vit.net.blocks[0].attn.qkv.weight == 0.125)
    assert model.cnn.num_features == 2048
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(WeightsError, match="weights"):
        create_classifier(tiny_config(model="cnn", cnn="resnet50", cnn_weights=None), num_classes=3)


def test_class_weights_are_inverse_frequency():
    weights = class_weights(torch.tensor([0, 0, 0, 1, 1, 2, 0, 0]), num_classes=4)
    # n / (K n_c) with n = 8, K = 4: counts 5, 2, 1, 0
    assert torch.allclose(weights, torch.tensor([8 / 20, 8 / 8, 8 / 4, 0.0]))


def test_fc_layer_alone_gets_l2():
    model = create_classifier(tiny_config(model="fusion"), num_classes=2)
    groups = make_optimizer(model, tiny_config()).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model.fc.weight), id(model.fc.bias)}
    assert groups[0]["weight_decay"] == 0.01


@pytest.mark.parametrize("kind", ["cnn", "vit", "fusion"])
def test_one_training_step_decreases_the_loss(kind):
    data = tiny_data(8)
    model = create_classifier(tiny_config(model=kind, dropout=0.0), num_classes=2)
    x, y = clean_view(data.images), data.targets
    optimizer = make_optimizer(model, tiny_config())  # lr 1e-4
    loss = torch.nn.functional.cross_entropy

    def current():
        model.eval()
        with torch.no_grad():
            return float(loss(model(x), y))

    before = current()
    model.train()
    optimizer.zero_grad()
    loss(model(x), y).backward()
    optimizer.step()
    assert current() < before


def test_split_is_artist_disjoint_with_7_1_2_proportions():
    rng = np.random.default_rng(1)
    artists = np.repeat([f"artist{i}" for i in range(100)], 3)
    labels = pd.DataFrame({"artist": artists, "style": rng.choice(["a", "b"], len(artists))}).sample(frac=1, random_state=0)
    side = split_three_ways(labels, (0.7, 0.1, 0.2), seed=3)
    per_artist = labels.groupby("artist").apply(lambda g: side[g.index].nunique(), include_groups=False)
    assert (per_artist == 1).all()
    artist_side = labels.assign(side=side).drop_duplicates("artist")["side"].value_counts()
    assert artist_side.to_dict() == {"train": 70, "test": 20, "val": 10}
    assert side.value_counts(normalize=True).round(2).to_dict() == {"train": 0.7, "test": 0.2, "val": 0.1}
    assert side.equals(split_three_ways(labels, (0.7, 0.1, 0.2), seed=3))  # reproducible


def test_uneven_artists_never_straddle_sides():
    sizes = [1, 50, 2, 7, 3, 20, 1, 1, 9, 4, 12, 5]
    labels = pd.DataFrame({"artist": np.repeat([f"a{i}" for i in range(len(sizes))], sizes)})
    side = split_three_ways(labels, seed=0)
    assert labels.assign(side=side).groupby("artist")["side"].nunique().max() == 1
    assert set(side) == {"train", "val", "test"}


def test_augmented_views_stay_in_range_and_vary():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 64, 64), dtype=np.uint8))
    config = tiny_config()
    a = augmented_view(images, config, torch.Generator().manual_seed(0))
    b = augmented_view(images, config, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    data = tiny_data()
    result = fit_classifier(data, tiny_config(model="fusion", epochs=2), tmp_path / "clf.pt", device="cpu", progress=False)
    trained = load_classifier(tmp_path / "clf.pt")
    x = clean_view(data.images)
    with torch.no_grad():
        assert torch.equal(result.model(x), trained.model(x))
    assert trained.classes == data.classes


def test_resume_continues_exactly(tmp_path):
    data = tiny_data()
    config = tiny_config(model="fusion", epochs=3, views=3)
    straight = fit_classifier(data, config, tmp_path / "a.pt", device="cpu", progress=False)
    fit_classifier(data, tiny_config(model="fusion", epochs=1, views=3), tmp_path / "b.pt", device="cpu", progress=False)
    resumed = fit_classifier(data, config, tmp_path / "b.pt", device="cpu", progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=True)["model"] for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="other config"):
        fit_classifier(data, tiny_config(model="fusion", epochs=3, views=3, lr=1e-3), tmp_path / "b.pt", device="cpu", progress=False)


def test_unfrozen_training_updates_the_backbone(tmp_path):
    data = tiny_data(12)
    config = tiny_config(model="cnn", freeze="none", epochs=1, lr=1e-3)
    start = create_classifier(config, 2).cnn.net.conv_stem.weight.detach().clone()
    result = fit_classifier(data, config, tmp_path / "clf.pt", device="cpu", progress=False)
    assert not torch.equal(result.model.cnn.net.conv_stem.weight, start)
    assert np.isfinite(result.history[0]["loss"])


def red_square_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Grey noise; every second image has a red square (side size/4) somewhere."""
    rng = np.random.default_rng(seed)
    images = rng.integers(90, 160, size=(n, 3, size, size), dtype=np.uint8)
    side, corners = size // 4, []
    for i in range(0, n, 2):
        top, left = rng.integers(0, size - side, 2)
        images[i, :, top : top + side, left : left + side] = np.array([230, 20, 20], dtype=np.uint8)[:, None, None]
        corners.append((int(top), int(left)))
    return torch.from_numpy(images), torch.as_tensor(np.arange(n) % 2 == 0).long(), corners


def test_grad_cam_finds_a_planted_red_square():
    size = 128
    config = load_classifier_config(model="cnn", image_size=size, dropout=0.0, lr=1e-2)
    model = create_classifier(config, num_classes=2)  # offline ImageNet Lite0, frozen
    images, targets, _ = red_square_images(32, size, seed=0)
    cache = encode_views(model, images, np.arange(0), config, torch.device("cpu"), progress=False)
    optimizer = make_optimizer(model, config)
    model.train()
    for _ in range(20):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.classify(cache.features), targets).backward()
        optimizer.step()
    test, _, corners = red_square_images(2, size, seed=5)
    result = grad_cam(model, clean_view(test[:1]), target=1)
    assert result.cam.shape == (size, size)
    assert result.cam.min() >= 0 and result.cam.max() == pytest.approx(1.0)
    top, left = corners[0]
    inside = np.zeros((size, size), dtype=bool)
    inside[top : top + size // 4, left : left + size // 4] = True
    assert result.cam[inside].mean() > 1.5 * result.cam[~inside].mean()  # a 4x4 map upsampled: the heat is broad
    assert result.probabilities.argmax() == 1


def test_grad_cam_refuses_a_vit_model():
    model = create_classifier(tiny_config(model="vit"), num_classes=2)
    with pytest.raises(ValueError, match="feature map"):
        grad_cam(model, torch.rand(1, 3, 64, 64))


def test_cli_train_classify_explain_with_a_bad_image(tmp_path, capsys):
    root = tmp_path / "images"
    rows = []
    for i in range(30):
        style = ["Warm", "Cool"][i % 2]
        make_image(root / f"{i:02d}.png", size=(72, 64), color=(200, 60, 40) if style == "Warm" else (40, 60, 200))
        rows.append({"path": f"{i:02d}.png", "style": style, "artist": f"artist{i % 6}"})
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    rows.append({"path": "broken.jpg", "style": "Warm", "artist": "artist0"})
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    clf = tmp_path / "clf.pt"
    flags = ["--cnn", "test_efficientnet", "--cnn-weights", "random", "--vit", "test_vit", "--vit-weights", "random", "--image-size", "64"]
    assert main(["train-classifier", str(root), "--labels", str(labels), "--model", "fusion", "--out", str(clf), "--epochs", "2", "-q", *flags]) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "broken.jpg" in line]
    assert len(skipped) == 1 and "not an image" in skipped[0]
    split = pd.read_csv(tmp_path / "clf.split.csv")
    assert "broken.jpg" not in set(split["path"]) and split.groupby("artist")["split"].nunique().max() == 1

    out = tmp_path / "scored"
    assert main(["classify", str(clf), str(root), "--labels", str(tmp_path / "clf.split.csv"), "--split", "test", "--out", str(out), "-q"]) == 0
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == (split["split"] == "test").sum()
    assert np.allclose(predictions[["p_Cool", "p_Warm"]].sum(axis=1), 1.0, atol=1e-5)
    assert {"confusion.csv", "confusion.html", "per_class.csv", "scores.json"} <= {p.name for p in out.iterdir()}
    assert "accuracy" in capsys.readouterr().out

    assert main(["classify", str(clf), str(root), "--out", str(tmp_path / "all"), "-q"]) == 0
    assert len(pd.read_csv(tmp_path / "all" / "predictions.csv")) == 30
    assert "broken.jpg" in capsys.readouterr().err

    cam = tmp_path / "cam.png"
    assert main(["explain", str(clf), str(root / "00.png"), "--out", str(cam)]) == 0
    assert Image.open(cam).size == (448, 448)
    assert main(["explain", str(clf), str(root / "broken.jpg"), "--out", str(tmp_path / "x.png")]) == 2
    assert "broken.jpg" in capsys.readouterr().err
