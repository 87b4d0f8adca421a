"""Patch extraction: Sobel scoring, top-fraction selection, sampling ∝ score, DoG and normalisation."""
from __future__ import annotations

import itertools
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from stylecluster.config import LocalConfig
from stylecluster.data.decode import BadImage
from stylecluster.features.patches import (
    candidate_patches,
    difference_of_gaussians,
    extract_patches,
    extract_patches_native,
    extract_patches_to_dir,
    luminance,
    n_candidates,
    normalise_dog,
    patch_scores,
    sample_without_replacement,
    sobel_magnitude,
    top_candidates,
    window_means,
    working_image,
)


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture with strokes: structure at several scales, no flat regions."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8), (width, height))
    for _ in range(40):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = rng.integers(0, width), rng.integers(0, height)
        cv2.line(base, (int(x0), int(y0)), (int(x1), int(y1)), tuple(int(c) for c in rng.integers(0, 256, 3)), 3)
    return base


# ----------------------------------------------------------------------------- scoring


def test_luminance_is_bt601():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]]], dtype=np.uint8)
    expected = np.round(rgb.astype(float) @ [0.299, 0.587, 0.114])
    np.testing.assert_allclose(luminance(rgb)[0], expected[0], atol=1)
    assert luminance(Image.fromarray(rgb)).dtype == np.uint8


def test_step_edge_scores_and_ranking():
    # Vertical step between columns 127 and 128: the 3x3 Sobel x-kernel sums to 4, so columns
    # 127 and 128 have |∇I| = 4 * 255 and every other column 0.
    gray = np.zeros((256, 256), np.uint8)
    gray[:, 128:] = 255
    magnitude = sobel_magnitude(gray)
    assert np.allclose(magnitude[:, [127, 128]], 1020) and np.count_nonzero(magnitude) == 2 * 256
    scores = patch_scores(gray, 64, 32)
    assert scores.shape == (7, 7)  # offsets 0, 32, ..., 192 on both axes
    expected_column = np.zeros(7)
    expected_column[3] = 2 * 64 * 1020 / 64**2  # x = 96 holds both edge columns
    expected_column[[2, 4]] = 64 * 1020 / 64**2  # x = 64 and x = 128 hold one each
    np.testing.assert_allclose(scores, np.tile(expected_column, (7, 1)), rtol=1e-6)
    ranked = top_candidates(scores, 0.1, 5)
    assert set(ranked[:7] % 7) == {3}  # the seven patches straddling the edge come first


def test_flat_image_scores_zero():
    scores = patch_scores(np.full((200, 300), 77, np.uint8), 64, 32)
    assert scores.shape == (5, 8) and not scores.any()


def test_scores_equal_brute_force_and_strips():
    gray = luminance(textured(300, 410))
    magnitude = sobel_magnitude(gray)
    scores = patch_scores(gray, 64, 32)
    brute = np.array([[magnitude[y : y + 64, x : x + 64].mean() for x in range(0, 410 - 63, 32)] for y in range(0, 300 - 63, 32)])
    np.testing.assert_allclose(scores, brute, rtol=1e-5)
    # Strip-wise evaluation (bounded memory for huge scans) must give the same numbers.
    np.testing.assert_allclose(patch_scores(gray, 64, 32, max_strip_pixels=410 * 70), scores, rtol=1e-6)


# ----------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    "n_positions, expected", [(100, 10), (101, 11), (36, 5), (3, 3), (750, 75)]
)
def test_top_fraction_count(n_positions, expected):
    assert n_candidates(n_positions, 0.10, 5) == expected


def test_top_candidates_are_the_best():
    rng = np.random.default_rng(1)
    scores = rng.permutation(200).astype(np.float32).reshape(10, 20)
    chosen = top_candidates(scores, 0.10, 5)
    assert len(chosen) == 20
    assert set(scores.ravel()[chosen]) == set(range(180, 200))
    assert list(scores.ravel()[chosen]) == sorted(scores.ravel()[chosen], reverse=True)


def test_first_draw_frequencies_proportional_to_score():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    rng = np.random.default_rng(12345)
    draws = 20_000
    first = np.array([sample_without_replacement(weights, 3, rng)[0] for _ in range(draws)])
    observed = np.bincount(first, minlength=len(weights))
    expected = draws * weights / weights.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # The same test rejects uniform sampling, so it has the power to fail.
    assert stats.chisquare(observed, np.full(len(weights), draws / len(weights))).pvalue < 1e-10


def test_inclusion_frequencies_match_successive_sampling():
    weights = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 13.0])
    n, draws = 3, 20_000
    # Exact inclusion probabilities of successive sampling ∝ weight, by enumeration.
    exact = np.zeros(len(weights))
    for order in itertools.permutations(range(len(weights)), n):
        p, left = 1.0, weights.sum()
        for i in order:
            p *= weights[i] / left
            left -= weights[i]
        exact[list(order)] += p
    rng = np.random.default_rng(7)
    counts = np.zeros(len(weights))
    for _ in range(draws):
        counts[sample_without_replacement(weights, n, rng)] += 1
    z = (counts / draws - exact) / np.sqrt(exact * (1 - exact) / draws)
    assert np.all(np.abs(z) < 4), z
    assert np.all(np.diff(counts) > 0)  # more score, more often


def test_draws_are_without_replacement():
    rng = np.random.default_rng(0)
    for _ in range(500):
        drawn = sample_without_replacement(np.array([5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]), 5, rng)
        assert len(set(drawn.tolist())) == 5
    # Fewer positive weights than draws: positives first, zeros fill up, still distinct.
    for _ in range(200):
        drawn = sample_without_replacement(np.array([0.0, 3.0, 0.0, 0.0, 1.0, 0.0]), 5, rng)
        assert set(drawn[:2].tolist()) == {1, 4} and len(set(drawn.tolist())) == 5
    with pytest.raises(ValueError):
        sample_without_replacement(np.ones(3), 5, rng)


def test_patches_distinct_from_candidates_and_deterministic():
    image = Image.fromarray(textured(500, 700))
    config = LocalConfig()
    a, b = extract_patches(image, config, seed=3), extract_patches(image, config, seed=3)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.dog, b.dog)
    assert len({tuple(box) for box in a.boxes}) == config.n_patches
    candidates = {tuple(box) for box in candidate_patches(image, config).boxes}
    assert len(candidates) == n_candidates(14 * 20, 0.10, 5)  # 500 x 700 px: 14 x 20 positions
    assert {tuple(box) for box in a.boxes} <= candidates
    other_seeds = {tuple(map(tuple, extract_patches(image, config, seed=s).boxes)) for s in range(10)}
    assert len(other_seeds) > 1  # the seed matters


# ----------------------------------------------------------------------------- DoG


def test_dog_on_a_stroke():
    patch = np.zeros((64, 64), np.float32)
    patch[:, 31:34] = 255.0  # a 3-px vertical stroke
    dog = difference_of_gaussians(patch[None], 3.0, 5.0)[0]
    row = dog[32]
    assert row[32] > 0 and row[32] == row.max()  # centre-surround: peak on the stroke
    assert row[32 + 7] < 0 and row[32 - 7] < 0  # negative surround
    assert abs(row[2]) < 0.05 * row[32]  # little response far away
    # Same filter as OpenCV's Gaussian blur (same kernel radius) away from the borders.
    reference = cv2.GaussianBlur(patch, (0, 0), 3.0) - cv2.GaussianBlur(patch, (0, 0), 5.0)
    np.testing.assert_allclose(dog[20:44, 20:44], reference[20:44, 20:44], atol=1e-2)
    final = normalise_dog(dog[None])[0]
    assert 31 <= int(np.argmax(final[32])) <= 33


def test_normalisation_range_and_constant_patch():
    rng = np.random.default_rng(0)
    dog = difference_of_gaussians(rng.uniform(0, 255, (4, 64, 64)), 3.0, 5.0)
    final = normalise_dog(dog)
    assert final.dtype == np.float32
    assert np.allclose(final.min(axis=(1, 2)), 0) and np.allclose(final.max(axis=(1, 2)), 255)
    assert final.min() >= 0 and final.max() <= 255
    constant = normalise_dog(difference_of_gaussians(np.full((2, 64, 64), 200.0), 3.0, 5.0))
    assert np.all(constant == 0) and np.isfinite(constant).all()


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("size", [(1, 1), (50, 70), (90, 150), (64, 64), (3, 2000)])
def test_small_images_give_n_valid_patches(size):
    image = Image.fromarray(textured(size[1], size[0]) if min(size) >= 8 else np.zeros((size[1], size[0], 3), np.uint8))
    patches = extract_patches(image, LocalConfig(), seed=0)
    assert patches.dog.shape == (5, 64, 64) and np.isfinite(patches.dog).all()
    x, y, w, h = patches.boxes.T
    assert (x >= 0).all() and (y >= 0).all() and (w >= 1).all() and (h >= 1).all()
    assert (x + w <= size[0]).all() and (y + h <= size[1]).all()


def test_too_few_positions_upsamples_to_enough():
    gray = np.zeros((90, 150), np.uint8)  # 1 x 3 = 3 grid positions < 5
    work, sx, sy = working_image(gray, LocalConfig())
    assert min(work.shape) == 64 + 32 * 2 and sx == pytest.approx(sy, rel=0.02)
    assert patch_scores(work, 64, 32).size >= 5


def test_all_black_image():
    patches = extract_patches(Image.new("RGB", (400, 300)), LocalConfig(), seed=1)
    assert patches.dog.shape == (5, 64, 64) and not patches.dog.any()
    assert len({tuple(b) for b in patches.boxes}) == 5


def test_relative_scale_tracks_the_shorter_side():
    config = LocalConfig(patch_scale="relative", relative_size=0.25)
    for width, height in [(1000, 800), (2000, 1600), (224, 224)]:
        work, _, _ = working_image(np.zeros((height, width), np.uint8), config)
        assert min(work.shape) == 256
        patches = extract_patches(Image.fromarray(textured(height, width)), config, seed=0)
        assert patches.dog.shape == (5, 64, 64)
        assert np.all(np.abs(patches.boxes[:, 2:] - 0.25 * min(width, height)) <= 2)
    with pytest.raises(ValueError):
        working_image(np.zeros((100, 100), np.uint8), LocalConfig(patch_scale="inches"))


def test_huge_image_in_strips():
    gray = np.zeros((6000, 4000), np.uint8)
    gray[3000:3100, 1000:1100] = 255  # one bright square far from the top
    patches = extract_patches(gray, LocalConfig(), seed=0)
    x, y, w, h = patches.boxes[0]
    assert 936 <= x <= 1100 and 2936 <= y <= 3100  # best-scoring region found


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (its pixel data is a 1x1 image's)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then chunk length + type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))


def test_patches_cli_api_writes_pngs(tmp_path):
    source = tmp_path / "painting.png"
    Image.fromarray(textured(300, 400)).save(source)
    written = extract_patches_to_dir(source, tmp_path / "out", LocalConfig(), seed=2)
    assert len(written) == 10
    for path in written:
        with Image.open(path) as png:
            assert png.size == (64, 64) and png.mode == "L"
    record = json.loads((tmp_path / "out" / "painting_patches.json").read_text())
    assert len(record["boxes_xywh"]) == 5 and record["params"]["n_patches"] == 5
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 20_000, 20_000)
    with pytest.raises(BadImage):
        extract_patches_to_dir(bomb, tmp_path / "out", LocalConfig())


def test_patches_command(tmp_path, capsys):
    from stylecluster.cli import main

    source = tmp_path / "painting.png"
    Image.fromarray(textured(260, 330)).save(source)
    assert main(["patches", str(source), "--out", str(tmp_path / "out"), "--patch-scale", "relative", "-q"]) == 0
    record = json.loads((tmp_path / "out" / "painting_patches.json").read_text())
    assert record["params"]["patch_scale"] == "relative" and len(list((tmp_path / "out").glob("*_dog.png"))) == 5
    assert main(["patches", str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")]) == 2


# ----------------------------------------------------------------------------- big JPEGs


def test_window_means_are_the_mean_sobel_magnitude_of_each_window_also_in_strips():
    gray = np.random.default_rng(0).integers(0, 256, (90, 70), dtype=np.uint8)
    y0, y1 = np.array([0, 5, 5, 40]), np.array([3, 20, 31, 90])
    x0, x1 = np.array([0, 33, 69]), np.array([70, 34, 70])
    magnitude = sobel_magnitude(gray).astype(np.float64)
    expected = [[magnitude[a:b, c:d].mean() for c, d in zip(x0, x1)] for a, b in zip(y0, y1)]
    whole = window_means(gray, y0, y1, x0, x1)
    np.testing.assert_allclose(whole, expected, rtol=1e-5)
    # strips of at most 10 rows' worth of pixels (one window each here) give the same floats
    assert np.array_equal(window_means(gray, y0, y1, x0, x1, max_strip_pixels=700), whole)


def test_patch_scores_are_window_means_on_the_grid():
    gray = (textured(200, 170, seed=3)[..., 1]).copy()
    ys, xs = np.arange(0, 200 - 64 + 1, 32), np.arange(0, 170 - 64 + 1, 32)
    assert np.array_equal(patch_scores(gray, 64, 32), window_means(gray, ys, ys + 64, xs, xs + 64))


def checkered_painting(path, size=(2400, 1800), block=(1280, 896, 256), cell=4, quality=95):
    """A big JPEG: a smooth colour ramp with one ``block`` (x, y, side) of a ``cell``-px
    checkerboard, the only texture in it; returns (path, the native luma as written). 4-px cells
    are 2-px ones on the 2x-reduced luma the patches are scored on (a 1-px checkerboard would be
    invisible to a 3x3 Sobel: its neighbours two pixels apart are equal)."""
    width, height = size
    ramp = np.linspace(60, 180, width, dtype=np.float32)[None, :].repeat(height, 0)
    rgb = np.stack([ramp, ramp * 0.8, 200 - ramp * 0.5], axis=2).astype(np.uint8)
    x, y, side = block
    yy, xx = np.mgrid[0:side, 0:side]
    rgb[y : y + side, x : x + side] = np.where(((yy // cell + xx // cell) % 2 == 0)[..., None], 240, 15).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=quality)
    return path, luminance(rgb)


def test_a_big_jpegs_patches_are_scored_reduced_and_cut_from_native_pixels(tmp_path):
    from stylecluster.data.decode import load_image

    path, written = checkered_painting(tmp_path / "big.jpg")
    reduced = load_image(path, draft_side=224)  # what the embedder decodes for both branches
    assert reduced.size == (600, 450) and reduced.info["full_size"] == (2400, 1800)
    native = reduced.info["native"]
    assert native.size == (2400, 1800)
    gray = native.luminance()
    assert gray.shape == (1800, 2400) and gray.dtype == np.uint8  # 1 byte a pixel
    assert np.abs(gray.astype(int) - written).mean() < 3  # the JPEG's own luma

    config = LocalConfig()
    patches = extract_patches_native(native, config, seed=0)
    assert len(patches) == config.n_patches
    for (x, y, w, h), raw, dog in zip(patches.boxes, patches.raw, patches.dog):
        assert (w, h) == (64, 64)
        # plausible places: every drawn patch overlaps the only textured block
        assert x + 64 > 1280 and x < 1280 + 256 and y + 64 > 896 and y < 896 + 256
        # native pixels: the patch is the file's luma there, and the pattern written at full size
        assert np.array_equal(raw, gray[y : y + 64, x : x + 64])
        assert np.abs(raw.astype(int) - written[y : y + 64, x : x + 64]).mean() < 4

    # scoring at full resolution (today's path on the whole decode) draws in the same block
    full = extract_patches(load_image(path), config, seed=0)
    assert all(x + 64 > 1280 and x < 1536 and y + 64 > 896 and y < 1152 for x, y, _, _ in full.boxes)


def test_the_reduced_path_draws_what_full_scoring_draws_when_scores_agree():
    # a native luma whose 2x-reduced Sobel ranks the patches as the full one does: one
    # high-contrast block (8-px cells survive a 2x box filter), everything else flat
    gray = np.full((640, 800), 128, np.uint8)
    yy, xx = np.mgrid[0:192, 0:192]
    gray[192:384, 320:512] = np.where((yy // 8 + xx // 8) % 2 == 0, 230, 20)

    class Native:
        def luminance(self):
            return gray

    config = LocalConfig()
    for seed in range(3):
        ours, today = extract_patches_native(Native(), config, seed), extract_patches(gray, config, seed)
        assert {tuple(b) for b in ours.boxes} <= {tuple(b) for b in candidate_patches(gray, config).boxes}
        assert all(320 - 64 < x < 512 and 192 - 64 < y < 384 for x, y, _, _ in ours.boxes)
        assert len(ours) == len(today) == config.n_patches


def test_reading_native_pixels_costs_about_a_byte_a_pixel(tmp_path):
    import tracemalloc

    from stylecluster.data.decode import load_image

    path, _ = checkered_painting(tmp_path / "big.jpg", size=(3000, 2250), block=(1600, 1024, 256))
    native = load_image(path, draft_side=224).info["native"]
    pixels = 3000 * 2250
    tracemalloc.start()
    try:
        extract_patches_native(native, LocalConfig(), seed=0)
        _, peak_native = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        extract_patches(load_image(path), LocalConfig(), seed=0)  # today's: the RGB decode, its luma, full-size Sobel
        _, peak_full = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the luma (1 byte a pixel) and the 2x-reduced scoring (~20 bytes a reduced pixel = 5 a pixel)
    assert peak_native < 7 * pixels
    assert peak_native < peak_full / 2


def test_a_native_source_that_is_gone_or_broken_is_one_line(tmp_path):
    from stylecluster.data.decode import NativeJpeg, load_image

    path, _ = checkered_painting(tmp_path / "big.jpg")
    native = load_image(path, draft_side=224).info["native"]
    path.unlink()
    with pytest.raises(BadImage, match=r"^unreadable: no such file$"):
        native.luminance()
    truncated = NativeJpeg(checkered_painting(tmp_path / "b.jpg")[0].read_bytes()[:20_000])
    with pytest.raises(BadImage) as raised:
        truncated.luminance()
    assert raised.value.kind in ("truncated", "corrupt") and "\n" not in str(raised.value)


def test_native_luma_follows_the_exif_orientation(tmp_path):
    from stylecluster.data.decode import load_image

    path, _ = checkered_painting(tmp_path / "flat.jpg", size=(2000, 1000), block=(1280, 512, 256))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    rotated = tmp_path / "rotated.jpg"
    with Image.open(path) as image:
        image.save(rotated, quality=95, exif=exif)
    reduced = load_image(rotated, draft_side=224)
    assert reduced.info["full_size"] == (1000, 2000) and reduced.size == (500, 1000)
    gray = reduced.info["native"].luminance()
    assert gray.shape == (2000, 1000) and reduced.info["native"].size == (1000, 2000)
    displayed = luminance(load_image(rotated))  # today's full decode, oriented
    assert np.abs(gray.astype(int) - displayed).max() <= 2
