"""A cluster's typical strokes: the drawn patches nearest the cluster's centroid in the local
branch's code space.

For each cluster the patches the local branch drew from its most probable members (re-drawn
exactly as at embedding: same patch settings, same per-image seed) are encoded by the store's
InfoVAE encoder; their mean code is the cluster's local centroid — with the default ``mean``
aggregation it equals the mean of the members' local vectors — and the patches whose codes lie
nearest it are the strokes the cluster is made of, as the branch sees them. The report shows them
above the members' own patches.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..data.dataset import image_seed
from ..data.decode import BadImage
from ..data.image_paths import load_stored_image
from ..io import save_atomic
from .patch_strip import strip_image

MEMBERS = 40  # members whose patches are pooled per cluster: enough for a stable centroid
STROKES = 8  # patches shown


def nearest_to_centroid(codes: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` codes nearest (Euclidean) to the codes' mean, nearest first."""
    distances = np.linalg.norm(codes - codes.mean(axis=0), axis=1)
    return np.argsort(distances, kind="stable")[:k]


def write_typical_strokes(
    images_root: Path | None, points: pd.DataFrame, folder: Path, config: Config, members: int = MEMBERS, strokes: int = STROKES
) -> dict[int, Path]:
    """A ``cluster-<c>.png`` strip of each cluster's typical strokes in ``folder`` ({} without the
    images). ``points``: path, sha256, cluster, probability. A store embedded without the local
    branch gets the strokes its default settings and encoder would see, as its patch strips do."""
    from ..features.local_ import LocalBranch

    if images_root is None:
        return {}
    branch = LocalBranch(replace(config.local, style_head=None))
    written = {}
    for cluster, group in points[points["cluster"] >= 0].groupby("cluster"):
        chosen = group.sort_values("probability", ascending=False, kind="stable").head(members)
        patches = []
        for path, sha in zip(chosen["path"], chosen["sha256"]):
            try:
                image = load_stored_image(images_root, path, max_pixels=config.ingest.max_pixels)
            except BadImage:
                continue  # the report's patch strips already name unreadable images
            patches.append(branch.preprocess(image, image_seed(sha, config.embed.seed)))
        if not patches:
            continue
        dog = np.concatenate(patches)  # (n, 1, s, s) in [0, 1]
        with torch.inference_mode():
            codes, _ = branch.encoder(torch.from_numpy(dog))
        nearest = nearest_to_centroid(codes.numpy(), strokes)
        file = folder / f"cluster-{int(cluster)}.png"
        save_atomic(file, lambda tmp, d=dog[nearest, 0]: strip_image(d * 255.0).save(tmp, optimize=True))
        written[int(cluster)] = file
    return written
