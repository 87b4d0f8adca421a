"""The DataLoader side of embedding: decoding and per-branch preprocessing run in workers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from .decode import BadImage, decode_image, load_image, read_hashed


def image_seed(sha256: str, seed: int) -> int:
    """A per-image seed: the same file content and run seed always give the same draws."""
    return (int(sha256[:15], 16) ^ (seed * 0x9E3779B1)) % (2**63)


@dataclass(frozen=True)
class WorkItem:
    index: int  # position in the run's plan
    path: Path
    sha256: str | None  # None: hashed by the worker that decodes it


class ImageDataset(Dataset):
    """Decodes each work item and applies every branch's ``preprocess``.

    Returns a dict per item; a bad file yields ``{"index", "error", "kind"}`` instead of raising,
    so one broken file never takes down a worker or the batch around it. An item without a hash
    is hashed from the same read of the file that decodes it; when the hash is in ``known_sha256``
    (content the store already holds) it is not decoded: ``{"index", "sha256", "known": True}``.
    """

    def __init__(self, items: Sequence[WorkItem], branches: Sequence[Any], max_pixels: int, min_side: int, seed: int = 0,
                 known_sha256: frozenset[str] = frozenset()):
        self.items = list(items)
        self.known_sha256 = known_sha256
        self.branches = list(branches)
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.seed = seed
        # the smallest decode every branch can use: None as soon as one needs full resolution
        sides = [getattr(b, "decode_side", None) for b in self.branches]
        self.draft_side = None if not sides or None in sides else max(sides)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        sha256 = item.sha256
        try:
            if sha256 is None:
                info, data = read_hashed(item.path)
                sha256 = info.sha256
                if sha256 in self.known_sha256:
                    return {"index": item.index, "sha256": sha256, "known": True}
                if data is None:
                    image = load_image(item.path, max_pixels=self.max_pixels, min_side=self.min_side, draft_side=self.draft_side)
                else:
                    image = decode_image(data, max_pixels=self.max_pixels, min_side=self.min_side, draft_side=self.draft_side)
            else:
                image = load_image(item.path, max_pixels=self.max_pixels, min_side=self.min_side, draft_side=self.draft_side)
            seed = image_seed(sha256, self.seed)
            inputs = {b.name: b.preprocess(image, seed) for b in self.branches}
        except BadImage as exc:
            return {"index": item.index, "error": str(exc), "kind": exc.kind}
        except Exception as exc:  # a decoder bug on an odd file must not stop the run
            return {"index": item.index, "error": f"cannot decode: {type(exc).__name__}: {exc}", "kind": "corrupt"}
        width, height = image.info.get("full_size", image.size)  # the image's own size, also when decoded reduced
        return {"index": item.index, "sha256": sha256, "width": width, "height": height, "inputs": inputs}


def collate_items(samples: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Split a batch into (collated decoded items or None, the others: failures and known contents)."""
    good = [s for s in samples if "inputs" in s]
    bad = [s for s in samples if "inputs" not in s]
    if not good:
        return None, bad
    batch = {
        "index": torch.tensor([s["index"] for s in good]),
        "sha256": [s["sha256"] for s in good],
        "width": np.array([s["width"] for s in good]),
        "height": np.array([s["height"] for s in good]),
        "inputs": default_collate([s["inputs"] for s in good]),
    }
    return batch, bad
