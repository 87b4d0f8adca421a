"""Style search: the paintings nearest to one image, by cosine similarity in the fused space.

The index is scikit-learn's ``NearestNeighbors`` (cosine, brute force): a query costs one pass
over the n fused vectors (n x 64 floats — about a millisecond for 10k images, ~10 ms for 100k)
and no n x n matrix is ever formed. Trees do not help at 64+ dimensions and faiss would add a
compiled dependency for no measurable gain at collection sizes that fit a store in memory.

A query image inside the store (given by its stored path, by its file, or by a file with the
same content) uses its stored vector, so it is its own first neighbour (similarity 1). An image
outside the store is embedded with the store's own branches (rebuilt from its provenance; see
:mod:`stylecluster.viz.provenance`) and mapped through the same fusion.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from ..config import Config
from ..data.decode import hash_file, load_image
from ..io import save_atomic
from .html import esc, page
from .provenance import check_branches, config_for_store
from .thumbs import data_uri, ensure_thumbnails, jpeg_uri, thumbnail_bytes
from ..errors import InputError, MissingInputError


class StyleIndex:
    """Nearest neighbours of the explorer's images in the fused space."""

    def __init__(self, explorer):
        self.explorer = explorer
        self.nn = NearestNeighbors(metric="cosine", algorithm="brute").fit(explorer.fused)

    def query(self, vector: np.ndarray, k: int = 12) -> pd.DataFrame:
        """The ``k`` nearest images: their ``points`` rows plus ``rank`` and ``similarity`` (cosine)."""
        k = max(1, min(int(k), len(self.explorer.points)))
        distance, index = self.nn.kneighbors(np.asarray(vector, dtype=np.float32).reshape(1, -1), n_neighbors=k)
        found = self.explorer.points.iloc[index[0]].reset_index(drop=True)
        return found.assign(rank=np.arange(1, k + 1), similarity=np.round(1.0 - distance[0], 6))


class _OneImage:
    """Store-shaped view of one image's branch vectors, for the fusion's ``embed``."""

    def __init__(self, store, vectors: dict[str, np.ndarray]):
        self.store = store
        self._vectors = vectors

    def vectors(self, column: str) -> np.ndarray | None:
        return self._vectors.get(column)

    def parts(self, column: str):
        return self.store.parts(column)


def embed_outside_image(explorer, image: Path, config: Config | None = None) -> np.ndarray:
    """Fused coordinates (1, d) of an image file that is not in the store."""
    from ..data.dataset import ImageDataset, WorkItem, collate_items
    from ..device import resolve_device
    from ..features.embedder import build_branches

    store = explorer.store
    config = config_for_store(store, config)
    branches = build_branches(config, resolve_device(config.embed.device))
    check_branches(store, branches)
    item = WorkItem(0, image, hash_file(image).sha256)
    sample = ImageDataset([item], branches, config.ingest.max_pixels, config.ingest.min_side, seed=config.embed.seed)[0]
    if "error" in sample:
        raise InputError(f"{image}: {sample['error']}")
    batch, _ = collate_items([sample])
    vectors = {b.name: b.encode(batch["inputs"][b.name]) for b in branches}
    return explorer.fusion.embed(_OneImage(store, vectors))


@dataclass
class SimilarResult:
    query: str  # the stored path, or the outside file as given
    inside: bool  # True when the query is an image of the store
    query_file: Path | None  # the file, when the query was given as one
    neighbours: pd.DataFrame  # points rows + rank + similarity, nearest first


def _find_in_store(explorer, image: str) -> int | None:
    """Position in ``points`` of the query, if it is a store image; None otherwise."""
    points = explorer.points
    by_path = np.flatnonzero((points["path"] == image).to_numpy())
    if len(by_path):
        return int(by_path[0])
    file = Path(image)
    if not file.is_file():
        raise MissingInputError(f"{image}: neither an image of the store nor a file")
    root = explorer.images_root
    if root is not None:
        try:
            rel = file.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = None
        hit = np.flatnonzero((points["path"] == rel).to_numpy()) if rel else []
        if len(hit):
            return int(hit[0])
    same = np.flatnonzero((points["sha256"] == hash_file(file).sha256).to_numpy())
    return int(same[0]) if len(same) else None


def find_similar(explorer, image: str | Path, k: int = 12, config: Config | None = None, index: StyleIndex | None = None) -> SimilarResult:
    """The ``k`` images of the store nearest in style to ``image`` (inside or outside the store)."""
    index = index or StyleIndex(explorer)
    image = str(image)
    position = _find_in_store(explorer, image)
    file = Path(image) if Path(image).is_file() else None
    if position is not None:
        found = index.query(explorer.fused[position], k)
        return SimilarResult(explorer.points["path"].iloc[position], True, file, found)
    found = index.query(embed_outside_image(explorer, Path(image), config), k)
    return SimilarResult(image, False, file, found)


def _query_thumb(result: SimilarResult, explorer, thumbs: dict[str, Path]) -> str | None:
    if result.inside:
        sha = explorer.points.loc[explorer.points["path"] == result.query, "sha256"].iloc[0]
        return data_uri(thumbs[sha]) if sha in thumbs else None
    return jpeg_uri(thumbnail_bytes(load_image(result.query_file, min_side=1)))


def similar_page(result: SimilarResult, explorer, cache: Path | None = None) -> str:
    """A self-contained HTML page: the query and its neighbours with thumbnails."""
    from .cache import cache_dir

    cache = cache if cache is not None else cache_dir(explorer.store)
    found = result.neighbours
    thumbs = ensure_thumbnails(explorer.images_root, zip(found["path"], found["sha256"]), cache, workers=2)
    if result.inside:
        row = explorer.points[explorer.points["path"] == result.query]
        thumbs.update(ensure_thumbnails(explorer.images_root, zip(row["path"], row["sha256"]), cache, workers=1))
    query_src = _query_thumb(result, explorer, thumbs)
    query_img = f'<img class="thumb" src="{query_src}" alt="">' if query_src else '<div class="missing">image not available</div>'
    where = "an image of the store" if result.inside else "outside the store, embedded with the store's branches"
    cards = []
    for row in found.itertuples(index=False):
        src = data_uri(thumbs[row.sha256]) if row.sha256 in thumbs else None
        img = f'<img class="thumb" src="{src}" alt="{esc(row.path)}">' if src else '<div class="missing">image not available</div>'
        facts = [f"#{row.rank} · similarity {row.similarity:.3f}"]
        if explorer.has_clusters:
            facts.append("outlier" if row.cluster < 0 else f"cluster {row.cluster}")
        label = f"<div>{esc(explorer.label_column)}: {esc(row.label)}</div>" if explorer.has_labels else ""
        cards.append(f'<div class="card">{img}<div class="name">{esc(row.path)}</div><div>{label}<div class="muted">{" · ".join(facts)}</div></div></div>')
    body = (
        f"<h1>Nearest in style to {esc(result.query)}</h1><p class=\"muted\">{esc(where)}; cosine similarity in the fused style space.</p>"
        f'<div class="grid"><div class="card">{query_img}<div class="name">{esc(result.query)}</div><div class="muted">query</div></div></div>'
        f"<h2>{len(found)} nearest</h2><div class=\"grid\">{''.join(cards)}</div>"
    )
    return page(f"Nearest in style to {result.query}", body)


def write_similar(result: SimilarResult, explorer, out: str | Path, cache: Path | None = None) -> Path:
    return save_atomic(out, similar_page(result, explorer, cache))
