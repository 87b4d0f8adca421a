"""A synthetic collection with known structure: small generated images, a store of clustered
vectors, CLUSTERS.csv and a labels table — for tests and benchmarks of the explorer at any size
without a real collection or a backbone."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..data.decode import hash_file
from ..store import StoreWriter


@dataclass
class SyntheticCollection:
    images: Path
    store: Path
    clusters: Path
    labels: Path  # columns: path, style (one per true cluster), artist, year (a span per style), title


def _image(rng: np.random.Generator, hue: float, size: tuple[int, int]) -> Image.Image:
    """Stripes at a cluster-specific hue plus noise: distinct files, visibly grouped."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, np.pi)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(2, 8))
    hsv = np.stack(
        [np.full((height, width), hue * 255), 120 + 100 * stripes, 90 + 130 * rng.random((height, width))], axis=-1
    ).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def make_collection(
    folder: str | Path,
    n: int = 200,
    n_clusters: int = 5,
    dim: int = 32,
    seed: int = 0,
    image_size: tuple[int, int] = (96, 72),
    names: list[str] | None = None,
) -> SyntheticCollection:
    """Write ``n`` images in ``n_clusters`` groups and everything the explorer reads.

    ``names`` overrides the first file names (e.g. a hostile one for escaping tests). The vectors
    are Gaussian blobs, one per group, in a ``global`` column of two parts; CLUSTERS.csv is the
    true grouping with one misplaced image per group at low probability.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth = np.arange(n) % n_clusters
    centres = rng.normal(0, 4, size=(n_clusters, dim))
    vectors = (centres[truth] + rng.normal(0, 1, size=(n, dim))).astype(np.float32)
    paths = [f"g{c}/img{i:05d}.jpg" for i, c in enumerate(truth)]
    for i, name in enumerate(names or []):
        paths[i] = name
    writer = StoreWriter(
        folder / "store",
        branches={"global": {"backbone": "synthetic", "seed": seed}},
        dims={"global": dim},
        parts={"global": {"a": (0, dim // 2), "b": (dim // 2, dim)}},
        images_root=str(images.resolve()),
        chunk_size=4096,
        overwrite=True,
    )
    for i, (path, group) in enumerate(zip(paths, truth)):
        file = images / path
        file.parent.mkdir(parents=True, exist_ok=True)
        _image(rng, group / n_clusters, image_size).save(file, quality=85)
        writer.add(path, hash_file(file).sha256, image_size[0], image_size[1], {"global": vectors[i]})
    writer.close()

    probability = np.clip(rng.beta(8, 1, size=n), 0.05, 1.0)
    assigned = truth.copy()
    for c in range(n_clusters):
        stray = np.flatnonzero(truth == c)[-1:]  # one misplaced image per group, unsure
        assigned[stray] = (c + 1) % n_clusters
        probability[stray] = 0.3
    clusters = folder / "clusters.csv"
    pd.DataFrame({"path": paths, "cluster": assigned, "probability": probability.round(6)}).to_csv(clusters, index=False)
    labels = folder / "labels.csv"
    # Each style a 60-year span, one after another, so timelines and cluster spans have structure.
    years = 1500 + 50 * truth + rng.integers(0, 60, size=n)
    pd.DataFrame({
        "path": paths,
        "style": [f"style_{c}" for c in truth],
        "artist": [f"artist_{i % 7}" for i in range(n)],
        "year": years,
        "title": [f"work {i}" for i in range(n)],
    }).to_csv(labels, index=False)
    return SyntheticCollection(images, folder / "store", clusters, labels)
