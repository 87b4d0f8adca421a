"""Discovery and safe decoding: every bad-input class becomes a one-line reason, never a crash."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from stylecluster.data.decode import BadImage, hash_file, load_image
from stylecluster.data.discovery import discover_images, read_path_list


def reason(path, **kw):
    with pytest.raises(BadImage) as info:
        load_image(path, **kw)
    return info.value


def test_discovery_is_recursive_case_insensitive_and_skips_other_files(tmp_path):
    for name in ["a.JPG", "b.jpeg", "sub/c.PNG", "sub/deep/d.TiF", "e.webp", "f.bmp", "g.gif", "h.tiff"]:
        make_image(tmp_path / name, fmt={"JPG": "JPEG", "JPEG": "JPEG", "PNG": "PNG", "TIF": "TIFF", "WEBP": "WEBP", "BMP": "BMP", "GIF": "GIF", "TIFF": "TIFF"}[name.rsplit(".", 1)[1].upper()])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in discover_images(tmp_path)]
    assert found == sorted(["a.JPG", "b.jpeg", "sub/c.PNG", "sub/deep/d.TiF", "e.webp", "f.bmp", "g.gif", "h.tiff"])


def test_discovery_survives_symlink_loops(tmp_path):
    make_image(tmp_path / "x" / "a.png")
    os.symlink(tmp_path, tmp_path / "x" / "loop")
    found = discover_images(tmp_path)
    assert [p.name for p in found] == ["a.png"]


def test_path_list_csv_and_txt(tmp_path):
    make_image(tmp_path / "a.png")
    (tmp_path / "list.csv").write_text("path,style\na.png,x\nsub/b.png,y\n")
    (tmp_path / "list.txt").write_text("# comment\na.png\n\n/abs/c.png\n")
    assert read_path_list(tmp_path / "list.csv") == [tmp_path / "a.png", tmp_path / "sub/b.png"]
    assert read_path_list(tmp_path / "list.txt") == [tmp_path / "a.png", Path("/abs/c.png")]


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert reason(tmp_path / "empty.jpg").kind == "empty"
    with pytest.raises(BadImage, match="0 bytes"):
        hash_file(tmp_path / "empty.jpg")


def test_truncated_jpeg(tmp_path):
    full = make_image(tmp_path / "full.jpg", size=(256, 256), noise_seed=1, fmt="JPEG")
    data = full.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    exc = reason(tmp_path / "cut.jpg")
    assert exc.kind == "truncated" and "truncated" in str(exc)


def test_not_an_image(tmp_path):
    (tmp_path / "text.png").write_text("this is not a picture at all")
    exc = reason(tmp_path / "text.png")
    assert exc.kind == "not_image" and "not an image" in str(exc)


def test_unreadable_file(tmp_path, monkeypatch):
    path = make_image(tmp_path / "locked.png")
    if os.geteuid() != 0:  # a real permission error where the OS enforces one
        path.chmod(0)
        assert reason(path).kind == "unreadable"
        path.chmod(0o644)
    # root reads anything: simulate the OS refusing instead
    import builtins

    real_open = builtins.open

    def refuse(file, *args, **kwargs):
        if Path(str(file)).name == "locked.png":
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    exc = reason(path)
    assert exc.kind == "unreadable" and "permission denied" in str(exc)


def test_folder_with_image_name_is_unreadable(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    assert reason(tmp_path / "dir.jpg").kind == "unreadable"


def test_decompression_bomb_is_rejected_from_the_header(tmp_path):
    # 20,000 x 20,000 one-bit PNG: tiny on disk, 400 megapixels when decoded.
    Image.new("1", (20_000, 20_000)).save(tmp_path / "bomb.png", optimize=False)
    assert (tmp_path / "bomb.png").stat().st_size < 5_000_000
    exc = reason(tmp_path / "bomb.png")
    assert exc.kind == "too_large" and "400,000,000" in str(exc)
    # the cap is configurable
    small = make_image(tmp_path / "small.png", size=(100, 100))
    assert reason(small, max_pixels=5_000).kind == "too_large"
    assert load_image(small, max_pixels=10_000).size == (100, 100)


def test_too_small(tmp_path):
    path = make_image(tmp_path / "tiny.png", size=(31, 200))
    exc = reason(path)
    assert exc.kind == "too_small" and "31x200" in str(exc)
    assert load_image(path, min_side=16).size == (31, 200)
    assert reason(make_image(tmp_path / "one.png", size=(1, 1))).kind == "too_small"


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (80, 40), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (40, 80)


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("L", (128, 128, 128)),
        ("CMYK", None),
        ("1", None),
    ],
)
def test_modes_become_rgb(tmp_path, mode, expected):
    src = Image.new("RGB", (40, 40), (128, 128, 128))
    path = tmp_path / f"m{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    src.convert(mode).save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (40, 40)
    if expected:
        assert out.getpixel((5, 5)) == expected


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    rgba.save(tmp_path / "t.png")
    assert load_image(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (40, 40), (0, 128))  # half-transparent black
    la.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").getpixel((0, 0)) == (127, 127, 127)
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert load_image(tmp_path / "p.png").getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((40, 40), 32_768, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(arr).save(tmp_path / "g16.png")
    pixel = load_image(tmp_path / "g16.png").getpixel((0, 0))
    assert pixel[0] == pixel[1] == pixel[2] and abs(pixel[0] - 128) <= 1


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 255, 0)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r, g, b = load_image(tmp_path / "anim.gif").getpixel((0, 0))
    assert r > 200 and g < 50


# --- memory per image is bounded (issue 13.8; the RSS numbers are in benchmarks/faults.py) -------


@pytest.fixture
def small_working_size(monkeypatch):
    """A working size of 100 x 100 px, so that the reduction is exercised on small files."""
    from stylecluster.data import decode

    monkeypatch.setattr(decode, "MAX_WORKING_PIXELS", 10_000)
    monkeypatch.setattr(decode, "STRIP_PIXELS", 3_000)  # several strips per image
    return decode


def test_images_within_the_working_size_are_decoded_unchanged(tmp_path, small_working_size):
    path = make_image(tmp_path / "n.png", size=(100, 100), noise_seed=3)
    image = load_image(path)
    assert image.size == (100, 100) and image.info["full_size"] == (100, 100)
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "I;16"])
def test_larger_images_are_reduced_by_an_integer_factor_strip_by_strip(tmp_path, small_working_size, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        source = Image.fromarray(rng.integers(0, 65536, size=(250, 330), dtype=np.uint16))
    else:
        source = Image.fromarray(rng.integers(0, 256, size=(250, 330, 3), dtype=np.uint8), "RGB").convert(mode)
    source.save(tmp_path / "big.png")
    image = load_image(tmp_path / "big.png")
    assert image.mode == "RGB" and image.size == (110, 84)  # factor ceil(sqrt(82,500 / 10,000)) = 3
    assert image.info["full_size"] == (330, 250)
    # the same as reducing the whole decoded image at once
    whole = {"1": "L", "P": "RGB", "I;16": "I"}.get(mode, mode)
    expected = small_working_size._to_rgb(Image.open(tmp_path / "big.png").convert(whole).reduce(3))
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_large_jpegs_are_decoded_at_a_fraction_of_their_size(tmp_path, small_working_size, monkeypatch):
    path = make_image(tmp_path / "big.jpg", size=(800, 600), noise_seed=4, fmt="JPEG")
    from PIL import JpegImagePlugin

    decoded = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size):
        result = real_draft(self, mode, size)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    image = load_image(path)
    # factor 7 asked; the JPEG decoder's nearest scale above it is 1/4, reduced by 2 after
    assert decoded == [(200, 150)] and image.size == (100, 75)
    assert image.info["full_size"] == (800, 600)


def test_an_image_too_large_to_decode_within_the_bound_is_skipped(tmp_path, monkeypatch):
    from stylecluster.data import decode

    monkeypatch.setattr(decode, "MAX_DECODE_BYTES", 100_000)
    rgb = make_image(tmp_path / "rgb.png", size=(200, 200))  # 160,000 bytes as RGB
    exc = reason(rgb)
    assert exc.kind == "too_large" and "needs" in str(exc)
    gray = make_image(tmp_path / "gray.png", size=(200, 200), mode="L")  # 40,000 bytes: fine
    assert load_image(gray).size == (200, 200)


def test_the_store_records_the_full_size_of_a_reduced_image(tmp_path, small_working_size):
    from conftest import MeanColourBranch
    from stylecluster.config import Config
    from stylecluster.features.embedder import embed_images
    from stylecluster.store import load_store

    make_image(tmp_path / "images" / "big.png", size=(400, 300), noise_seed=1)
    config = Config()
    config.embed.workers = 0
    embed_images([tmp_path / "images" / "big.png"], tmp_path / "images", tmp_path / "s.store", config, quiet=True, branches=[MeanColourBranch()])
    row = load_store(tmp_path / "s.store").to_pandas().iloc[0]
    assert (row["width"], row["height"]) == (400, 300)


def test_a_large_jpeg_is_decoded_at_the_size_the_network_uses(tmp_path):
    big = make_image(tmp_path / "big.jpg", size=(1200, 900), noise_seed=3)
    small = make_image(tmp_path / "small.jpg", size=(300, 224), noise_seed=4)
    # shorter side 900: 1/2 keeps 450 >= 2 x 224 (DRAFT_MARGIN), 1/4 would keep 225
    assert load_image(big, draft_side=224).size == (600, 450)
    assert load_image(big, draft_side=224).info["full_size"] == (1200, 900)
    assert load_image(big).size == (1200, 900)
    # a file already near the network's size is decoded exactly as without the hint
    assert np.array_equal(np.asarray(load_image(small, draft_side=224)), np.asarray(load_image(small)))


def test_the_dataset_drafts_only_when_no_branch_needs_full_resolution():
    from stylecluster.config import Config
    from stylecluster.data.dataset import ImageDataset
    from stylecluster.features.global_ import GlobalBranch
    from stylecluster.features.local_ import LocalBranch

    config = Config()
    global_, local = GlobalBranch(config.global_), LocalBranch(config.local)
    # the brush-stroke branch cuts its patches from the file's own luma (image.info["native"]),
    # so of the decoded image it needs only a patch's side
    assert global_.decode_side == 224 and local.decode_side == config.local.patch_size
    assert ImageDataset([], [global_], 10**8, 32).draft_side == 224
    assert ImageDataset([], [global_, local], 10**8, 32).draft_side == 224

    class FullResolution:
        decode_side = None

    assert ImageDataset([], [global_, FullResolution()], 10**8, 32).draft_side is None  # one branch needing every pixel
