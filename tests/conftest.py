"""Shared fixtures: small generated images and a cheap deterministic branch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylecluster.features.branch import Branch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WIKIART = SHARED / "wikiart-styles"


def needs_wikiart():
    return pytest.mark.skipif(not (WIKIART / "labels.csv").is_file(), reason=f"shared data not found at {WIKIART}")


def make_image(path: Path, size=(64, 48), color=(200, 30, 30), mode="RGB", fmt=None, noise_seed: int | None = None, **save_kwargs) -> Path:
    """Write an image; with ``noise_seed`` the pixels are random so each file is distinct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB")
    else:
        img = Image.new("RGB", size, color)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt, **save_kwargs)
    return path


class MeanColourBranch(Branch):
    """A cheap real branch: per-channel mean and std of a 32×32 thumbnail (6 numbers).

    ``fail_after`` makes ``encode`` raise KeyboardInterrupt on that call, to simulate Ctrl-C.
    """

    name = "global"

    def __init__(self, fail_after: int | None = None, tag: str = "v1"):
        self.fail_after = fail_after
        self.calls = 0
        self.tag = tag

    @property
    def dim(self) -> int:
        return 6

    @property
    def parts(self):
        return {"mean": (0, 3), "std": (3, 6)}

    def preprocess(self, image, seed):
        return torch.from_numpy(np.asarray(image.resize((32, 32)), dtype=np.float32) / 255.0)

    def encode(self, batch):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        flat = batch.reshape(batch.shape[0], -1, 3)
        return torch.cat([flat.mean(1), flat.std(1)], dim=1).numpy()

    def provenance(self):
        return {"backbone": "mean-colour", "tag": self.tag}


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for small models: on a shared 2-core machine, spinning OpenMP workers cost 3x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """12 distinct good images in nested folders."""
    root = tmp_path / "images"
    for i in range(12):
        make_image(root / f"group{i % 3}" / f"img{i:02d}.png", size=(40 + i, 36), noise_seed=i)
    return root
