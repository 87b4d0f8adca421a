"""The artist-discriminant style head: what it learns, its folding, its file, and its use in embedding."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from conftest import MeanColourBranch, make_image
from stylecluster.cli import main
from stylecluster.cluster.fuse import Block, Fuser, blocks_for_store
from stylecluster.config import Config, GlobalConfig
from stylecluster.data.discovery import discover_images
from stylecluster.evaluate import nmi
from stylecluster.features.embedder import embed_images
from stylecluster.features.global_ import GlobalBranch
from stylecluster.features.style_head import ArtistDiscriminantHead, packaged_global_head, discriminant_ratios, load_style_head
from stylecluster.store import load_store
from stylecluster.viz.provenance import config_for_store

PARTS = {"a": (0, 30), "b": (30, 50)}


def artists_in_styles(n_styles=4, artists_per_style=6, images=40, seed=0, artist_offset=0):
    """Vectors in which style lives in 3 low-variance directions, drowned by 47 loud nuisance ones.

    Each artist sits near its style's centre (artist-specific offset); every image adds content
    noise that is 6x stronger than the style signal in the nuisance directions.
    """
    rng = np.random.default_rng(seed)
    style_centres = np.random.default_rng(123).normal(size=(n_styles, 3)) * 1.0
    X, styles, artists = [], [], []
    for s in range(n_styles):
        for a in range(artists_per_style):
            centre = style_centres[s] + 0.15 * rng.normal(size=3)
            for _ in range(images):
                signal = centre + 0.1 * rng.normal(size=3)
                nuisance = 6.0 * rng.normal(size=47)
                X.append(np.concatenate([signal[:2], nuisance[:28], signal[2:], nuisance[28:]]))
                styles.append(s)
                artists.append(f"artist{artist_offset + s * artists_per_style + a}")
    return np.asarray(X), np.asarray(styles), np.asarray(artists)


def painting(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.kron(rng.integers(0, 256, (16, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8))


def kmeans_nmi(X, truth, k):
    return nmi(truth, KMeans(k, n_init=10, random_state=0).fit_predict(X))


def test_head_fitted_on_artists_separates_styles_of_unseen_artists():
    X, _, artists = artists_in_styles(seed=0)
    X_new, styles_new, artists_new = artists_in_styles(seed=1, artist_offset=1000)
    assert not set(artists) & set(artists_new)
    head = ArtistDiscriminantHead(n_components=8, pca_components=30, shrinkage=0.1).fit(X, artists, PARTS)
    raw = kmeans_nmi(X_new, styles_new, 4)
    projected = kmeans_nmi(head.transform(X_new), styles_new, 4)
    assert raw < 0.3
    assert projected > 0.8
    assert head.weight_.shape == (50, 8) and head.bias_.shape == (8,) and head.n_artists_ == 24


def test_folded_head_equals_the_fuser_then_discriminant_it_was_built_from():
    X, _, artists = artists_in_styles()
    head = ArtistDiscriminantHead(n_components=5, pca_components=12, shrinkage=0.2).fit(X, artists, PARTS)
    blocks = [Block("global", n, a, b, 1 / np.sqrt(2)) for n, (a, b) in PARTS.items()]
    fuser = Fuser(blocks, pca_components=12, whiten=True).fit(X)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.2).fit(fuser.transform(X).astype(np.float64), artists)
    expected = lda.transform(fuser.transform(X).astype(np.float64))[:, :5]
    np.testing.assert_allclose(head.transform(X), expected, rtol=1e-3, atol=1e-3)


def test_wccn_head_whitens_within_artists_and_keeps_every_direction():
    X, _, artists = artists_in_styles()
    head = ArtistDiscriminantHead(n_components=None, pca_components=30, shrinkage=0.0).fit(X, artists, PARTS)
    out = head.transform(X).astype(np.float64)
    assert out.shape == (len(X), 50) and head.n_components_ == 50  # every dimension of both parts (30 + 20)
    frame = pd.DataFrame(out)
    centred = (frame - frame.groupby(artists).transform("mean")).to_numpy()
    np.testing.assert_allclose(centred.T @ centred / len(X), np.eye(50), atol=1e-3)  # within-artist covariance = I
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)  # centred on the mean image
    shrunk = ArtistDiscriminantHead(n_components=None, pca_components=30, shrinkage=0.5).fit(X, artists, PARTS)
    assert np.linalg.norm(shrunk.transform(X)) < np.linalg.norm(out)  # shrinkage towards the mean variance tames weak directions
    X_new, styles_new, _ = artists_in_styles(seed=1, artist_offset=1000)
    assert kmeans_nmi(head.transform(X_new), styles_new, 4) > kmeans_nmi(X_new, styles_new, 4) + 0.3


def test_discriminant_ratios_by_hand():
    # artist a: 0, 2; artist b: 10, 12 → within-artist variance 1, total 26, between 25
    ratios = discriminant_ratios(np.array([[0.0], [2.0], [10.0], [12.0]]), np.array(["a", "a", "b", "b"]))
    np.testing.assert_allclose(ratios, [25.0])


def test_posterior_weighting_scales_each_direction_by_its_measured_signal():
    X, _, artists = artists_in_styles()
    plain = ArtistDiscriminantHead(n_components=5, pca_components=30).fit(X, artists, PARTS)
    weighted = ArtistDiscriminantHead(n_components=5, pca_components=30, weighting="posterior").fit(X, artists, PARTS)
    ratios = plain.eigenvalues_
    assert ratios[0] > 10 * ratios[-1]  # the first directions carry the artists, the last little
    np.testing.assert_allclose(weighted.transform(X), plain.transform(X) * ratios / (1 + ratios), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="weighting must be one of"):
        ArtistDiscriminantHead(weighting="sqrt").fit(X, artists, PARTS)


def test_single_image_artists_are_left_out_and_too_few_artists_refused():
    X, _, artists = artists_in_styles(n_styles=1, artists_per_style=2)
    lonely = np.array([f"solo{i}" for i in range(5)])
    with pytest.raises(ValueError, match="at least 3 artists with 2 or more images"):
        ArtistDiscriminantHead().fit(np.vstack([X, X[:5]]), np.concatenate([artists, lonely]), PARTS)


def test_saved_head_loads_as_a_module_that_computes_the_same(tmp_path):
    X, _, artists = artists_in_styles()
    head = ArtistDiscriminantHead(n_components=6, pca_components=16).fit(X, artists, PARTS)
    path = head.save(tmp_path / "head.pt", {"branch": {"backbone": "toy"}})
    module = load_style_head(path)
    assert module.parts == PARTS and module.out_features == 6 and len(module.file_id) == 16
    with torch.inference_mode():
        out = module(torch.tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(out, head.transform(X), rtol=1e-4, atol=1e-4)


def test_head_files_are_checked(tmp_path):
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a stylecluster style head"):
        load_style_head(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable style head"):
        load_style_head(tmp_path / "junk.pt")
    X, _, artists = artists_in_styles()
    path = ArtistDiscriminantHead(n_components=4, pca_components=8).fit(X, artists, PARTS).save(
        tmp_path / "head.pt", {"branch": {"backbone": "toy", "gram_levels": [1, 2]}})
    head = load_style_head(path)
    with pytest.raises(ValueError, match="expects parts"):
        head.check_fits({"a": (0, 50)}, {"backbone": "toy"}, "here")
    with pytest.raises(ValueError, match=r"trained on gram_levels \[1, 2\], this branch uses \[3\]"):
        head.check_fits(PARTS, {"backbone": "toy", "gram_levels": [3]}, "here")
    assert head.fits(PARTS, {"backbone": "toy", "gram_levels": [1, 2]})


def test_default_global_branch_writes_the_packaged_heads_projection():
    assert packaged_global_head(GlobalConfig().backbone).is_file()
    branch = GlobalBranch()
    raw = GlobalBranch(GlobalConfig(style_head=None), backbone=branch.backbone)
    assert branch.parts == {"style": (0, branch.style_head.out_features)} and "style_head" in branch.provenance()
    assert "style_head" not in raw.provenance() and "pooled" in raw.parts
    batch = torch.stack([branch.preprocess(painting(seed), 0) for seed in range(3)])
    with torch.inference_mode():
        expected = branch.style_head(torch.from_numpy(raw.encode(batch))).numpy()
    np.testing.assert_allclose(branch.encode(batch), expected, rtol=1e-4, atol=1e-4)


def test_auto_head_is_skipped_for_a_backbone_layout_it_was_not_trained_on(tmp_path):
    assert GlobalBranch(GlobalConfig(gram_levels=(1, 2))).style_head is None
    X, _, artists = artists_in_styles()
    path = ArtistDiscriminantHead(n_components=4, pca_components=8).fit(X, artists, PARTS).save(tmp_path / "toy.pt", {})
    with pytest.raises(ValueError, match="toy.pt: the style head expects parts"):
        GlobalBranch(GlobalConfig(style_head=str(path)))


def test_fuser_keeps_the_geometry_of_a_learned_style_part():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 8)) * np.array([5, 3, 2, 1, 1, 1, 1, 1]) + 10
    store = type("S", (), {"vectors": lambda self, c: X if c == "global" else None,
                           "parts": lambda self, c: {"style": (0, 8)} if c == "global" else {}})()
    blocks = blocks_for_store(store)[1]
    assert [b.whiten for b in blocks] == [False]
    variances = Fuser(blocks, pca_components=8).fit_transform(X).var(axis=0)
    assert variances[0] > 2 * variances[-1]  # the leading directions keep their larger variance
    whitened = Fuser([Block("global", "pooled", 0, 8, 1.0)], pca_components=8).fit_transform(X).var(axis=0)
    np.testing.assert_allclose(whitened, whitened[0], rtol=1e-3)


@pytest.fixture
def artist_folder(tmp_path):
    """3 styles (colour families) × 4 artists × 4 images, with labels.csv."""
    rng = np.random.default_rng(0)
    rows = []
    for style, base in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        for artist in range(4):
            tint = rng.integers(-25, 25, size=3)
            for i in range(4):
                colour = tuple(int(np.clip(c + t + rng.integers(-8, 8), 0, 255)) for c, t in zip(base, tint))
                path = f"s{style}/a{artist}_{i}.png"
                make_image(tmp_path / "images" / path, size=(40, 40), color=colour)
                rows.append({"path": path, "style": f"style{style}", "artist": f"painter{style}-{artist}"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    config = Config()
    config.embed.workers = 0
    out = tmp_path / "raw.store"
    embed_images(discover_images(tmp_path / "images"), tmp_path / "images", out, config, quiet=True, branches=[MeanColourBranch()])
    return tmp_path, out


def test_cli_trains_a_head_and_scores_it_on_held_out_artists(artist_folder, capsys):
    root, store = artist_folder
    head = root / "head.pt"
    args = ["train-style-head", str(store), "--labels", str(root / "labels.csv"), "--out", str(head),
            "--holdout", "0.34", "--score-column", "style", "--n-components", "4", "--pca-components", "3", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "held-out artists: 4 (16 images)" in out and "style head" in out
    module = load_style_head(head)
    assert module.parts == {"mean": (0, 3), "std": (3, 6)} and module.out_features == 4
    assert module.source["artists"] == 8 and module.source["holdout_scores"]["head"]["nmi"] > 0.5
    before = head.read_bytes()
    assert main(args) == 2  # refuses to replace the user's file
    assert "exists; pass --overwrite" in capsys.readouterr().err and head.read_bytes() == before


def test_one_head_from_several_collections_matches_artists_across_them(artist_folder, tmp_path, capsys):
    """A second collection names the same painters as a museum would ("Painter0 1" for
    "painter0-1"): the head counts them once, and a store of other vectors is refused."""
    root, store = artist_folder
    labels = pd.read_csv(root / "labels.csv")
    museum = labels.assign(artist=labels["artist"].str.replace("painter", "Painter").str.replace("-", " "))
    museum.to_csv(tmp_path / "museum.csv", index=False)
    head = tmp_path / "head.pt"
    assert main(["train-style-head", str(store), str(store), "--labels", str(root / "labels.csv"), str(tmp_path / "museum.csv"),
                 "--out", str(head), "--n-components", "4", "--pca-components", "3", "-q"]) == 0
    source = load_style_head(head).source
    assert source["artists"] == 12 and source["images"] == 2 * len(labels) and [Path(p).name for p in source["labels"]] == ["labels.csv", "museum.csv"]
    assert main(["train-style-head", str(store), "--labels", str(root / "labels.csv"), str(tmp_path / "museum.csv"), "--out", str(tmp_path / "h2.pt")]) == 2
    assert "one labels file per store" in capsys.readouterr().err

    other = tmp_path / "other.store"
    config = Config()
    config.embed.workers = 0
    embed_images(discover_images(root / "images"), root / "images", other, config, quiet=True, branches=[MeanColourBranch(tag="v2")])
    assert main(["train-style-head", str(store), str(other), "--labels", str(root / "labels.csv"), str(root / "labels.csv"), "--out", str(tmp_path / "h3.pt")]) == 2
    assert "differs from" in capsys.readouterr().err


def test_cli_refuses_a_store_that_is_already_projected(artist_folder, tmp_path, capsys):
    root, _ = artist_folder
    store = tmp_path / "style.store"

    class StyleBranch(MeanColourBranch):
        @property
        def parts(self):
            return {"style": (0, 6)}

    config = Config()
    config.embed.workers = 0
    embed_images(discover_images(root / "images"), root / "images", store, config, quiet=True, branches=[StyleBranch()])
    assert main(["train-style-head", str(store), "--labels", str(root / "labels.csv"), "--out", str(tmp_path / "h.pt")]) == 2
    assert "already a learned style projection" in capsys.readouterr().err


def test_store_provenance_records_the_head_and_rebuilds_its_config(tmp_path):
    make_image(tmp_path / "imgs" / "a.png", size=(48, 48), noise_seed=1)
    make_image(tmp_path / "imgs" / "b.png", size=(48, 48), noise_seed=2)
    for style_head, expected in (("auto", "auto"), (None, None)):
        config = Config()
        config.local.enabled = False
        config.embed.workers = 0
        config.global_.style_head = style_head
        out = tmp_path / f"{style_head}.store"
        embed_images(discover_images(tmp_path / "imgs"), tmp_path / "imgs", out, config, quiet=True)
        store = load_store(out)
        recorded = json.loads((out / "_stylecluster.json").read_text())["branches"]["global"]
        assert ("style_head" in recorded) == (style_head is not None)
        assert config_for_store(store).global_.style_head == expected


def test_auto_finds_the_head_shipped_for_the_backbone_in_use():
    lite2 = GlobalBranch(GlobalConfig(backbone="efficientnet_lite2"))
    assert packaged_global_head("efficientnet_lite2").is_file()
    assert lite2.style_head is not None and lite2.parts == {"style": (0, lite2.style_head.out_features)}
    assert lite2.style_head.source["branch"]["backbone"] == "efficientnet_lite2"
    assert lite2.style_head.file_id != GlobalBranch().style_head.file_id
    # a backbone nothing was shipped for writes its raw vector
    assert not packaged_global_head("efficientnet_lite1").is_file()
    assert GlobalBranch(GlobalConfig(backbone="efficientnet_lite1")).style_head is None
