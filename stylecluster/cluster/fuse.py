"""Fusion: the stored branch vectors → one space in which distances mean "style".

The store holds one vector per branch (``global``, ``local``), each made of named parts (for the
default global branch: the pooled CNN vector and Gram statistics of two intermediate levels).
Parts differ wildly in dimension and scale, so each part is a *block* that is

1. L2-normalised per image (cosine geometry; removes exposure/contrast magnitude effects),
2. reduced by PCA to at most ``pca_components`` dimensions (fitted on the collection), and to
   at most one dimension per 10 images: whitened directions estimated from fewer samples are
   noise, and scaling them to unit variance makes every image equidistant (measured on 44
   WikiArt images, 11 styles: k-means ARI −0.00 with 43 whitened components, 0.15 with 4) —
   whitened unless it is a learned metric part (``METRIC_PARTS``: its variances are the metric), and
3. scaled so that its total variance equals ``weight²``,

then the blocks are concatenated. Step 3 is what keeps a 6,000-dimensional Gram block from
drowning a 64-dimensional local block through its dimension alone; the weights then say how much
each block counts. All blocks of a branch share that branch's weight, divided evenly among them.

A million images: the pipeline fits the fuser on a seeded subsample of ``fuse.max_fit_samples``
images (100,000) and fuses the store ``BATCH_ROWS`` rows at a time (:func:`store_batches`), so no
float64 copy of the whole matrix is made. Distances in the fused space hardly depend on whether
the PCA saw 100k or all of a million images (``benchmarks/scale.py``'s 1M store, 2,000 random
pairs: correlation 0.997, median ratio 0.999 — coordinates themselves differ by a rotation
within the near-equal noise directions, which whitening leaves arbitrary), and fusing took 38 s
instead of 86 s, the full fit needing float64 copies of a million rows per block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA

from ..errors import InputError
from ..store import METRIC_PARTS
from .reduce import subsample

#: Rows fused at a time: at a million rows of the default 192 stored dimensions (fused to 128)
#: fusion then holds one 65,536-row batch in float64 (~100 MB) besides the float32 result.
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Block:
    column: str  # store column ("global" or "local")
    part: str
    start: int
    stop: int
    weight: float
    whiten: bool = True  # False for learned metric parts (store.METRIC_PARTS)


def _l2_normalise(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


class Fuser(BaseEstimator, TransformerMixin):
    """Balance and concatenate blocks of columns; ``fit`` learns each block's PCA and scale.

    Parameters
    ----------
    blocks : list of Block
        Column ranges of the input matrix and their weights.
    pca_components : int
        Upper bound on the dimensions kept per block (0 keeps all).
    whiten : bool
        Whiten each block's PCA (every kept direction gets equal variance before scaling).
    random_state : int
    """

    def __init__(self, blocks: list[Block], pca_components: int = 64, whiten: bool = True, random_state: int = 0):
        self.blocks = blocks
        self.pca_components = pca_components
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X: np.ndarray, y=None) -> "Fuser":
        self.pcas_ = []
        self.scales_ = []
        for block in self.blocks:
            part = _l2_normalise(np.asarray(X[:, block.start : block.stop], dtype=np.float64))
            cap = self.pca_components if self.pca_components > 0 else part.shape[1]
            n_keep = min(cap, part.shape[1], max(2, len(part) // 10))
            if float(part.var(axis=0).sum()) < 1e-12:
                # The same vector for every image (identical images, or a part that is constant on
                # this collection): it tells nothing apart, and scaled to unit variance its rounding
                # noise became coordinates of 1e6 in float32. It is kept, at weight 0.
                with np.errstate(divide="ignore", invalid="ignore"):  # sklearn's variance ratios are 0/0 here
                    self.pcas_.append(self._pca(1, False).fit(part))
                self.scales_.append(0.0)
                continue
            pca = self._pca(n_keep, block.whiten).fit(part)
            informative = int((pca.explained_variance_ > 1e-10 * max(pca.explained_variance_.max(), 1e-30)).sum())
            if informative < pca.n_components_:  # constant directions (e.g. flat images): whitening them divides by 0
                pca = self._pca(max(1, informative), block.whiten and informative > 0).fit(part)
            total_var = float(pca.transform(part).var(axis=0).sum())
            self.pcas_.append(pca)
            self.scales_.append(block.weight / np.sqrt(max(total_var, 1e-12)))
        self.n_features_out_ = sum(p.n_components_ for p in self.pcas_)
        return self

    def _pca(self, n_components: int, whiten_block: bool) -> PCA:
        return PCA(n_components=n_components, whiten=self.whiten and whiten_block, svd_solver="auto", random_state=self.random_state)

    def transform(self, X: np.ndarray) -> np.ndarray:
        out = []
        for block, pca, scale in zip(self.blocks, self.pcas_, self.scales_):
            part = _l2_normalise(np.asarray(X[:, block.start : block.stop], dtype=np.float64))
            out.append(pca.transform(part) * scale)
        return np.hstack(out).astype(np.float32)


def part_blocks(column: str, parts: dict[str, tuple[int, int]], weight: float, offset: int = 0) -> list[Block]:
    """One block per part of a branch's vector starting at column ``offset``; the branch weight is
    split evenly over its parts."""
    return [
        Block(column, name, offset + start, offset + stop, weight / np.sqrt(len(parts)), whiten=name not in METRIC_PARTS)
        for name, (start, stop) in parts.items()
    ]


def store_layout(store, local_weight: float = 1.0, global_weight: float = 1.0) -> tuple[list[str], list[Block]]:
    """The store columns that fusion reads, in order, and the blocks that describe them (block
    columns count from the first listed column's first value).

    Branch weights are split evenly over the branch's parts, so adding a part to a branch does
    not change how much the branch counts as a whole.
    """
    columns, blocks, offset = [], [], 0
    for column, weight in (("global", global_weight), ("local", local_weight)):
        width = _width(store, column)
        if not width or weight <= 0:
            continue
        blocks.extend(part_blocks(column, store.parts(column), weight, offset))
        columns.append(column)
        offset += width
    if not columns:
        raise InputError("the store holds no vectors to cluster")
    return columns, blocks


def store_shape(store, columns: list[str]) -> tuple[int, int]:
    """(rows, features) of the store's ``columns`` side by side, without reading the vectors of an
    EmbeddingStore."""
    if hasattr(store, "iter_vectors"):
        return len(store), sum(_width(store, column) for column in columns)
    first = store.vectors(columns[0])
    return len(first), sum(_width(store, column) for column in columns)


def _width(store, column: str) -> int:
    if hasattr(store, "iter_vectors"):  # an EmbeddingStore: its metadata knows, nothing is read
        return store.dim(column)
    values = store.vectors(column)  # store-like objects (tests, single images) hold their vectors
    return 0 if values is None else values.shape[1]


def store_batches(store, columns: list[str], batch_rows: int | None = None) -> Iterator[np.ndarray]:
    """The store's vectors of ``columns`` side by side, ``batch_rows`` (default ``BATCH_ROWS``)
    rows at a time (float32)."""
    batch_rows = batch_rows or BATCH_ROWS
    if hasattr(store, "iter_vectors"):
        yield from store.iter_vectors(columns, batch_rows)
        return
    X = np.hstack([store.vectors(column) for column in columns])
    for start in range(0, len(X), batch_rows):
        yield X[start : start + batch_rows]


def store_rows(store, columns: list[str], rows: np.ndarray) -> np.ndarray:
    """The store's vectors of ``columns`` side by side for the given rows only (float32)."""
    if hasattr(store, "take_vectors"):
        return store.take_vectors(columns, rows)
    return np.hstack([store.vectors(column)[rows] for column in columns]).astype(np.float32, copy=False)


def fit_store_fuser(store, columns: list[str], blocks: list[Block], max_fit_samples: int | None, seed: int, **params) -> Fuser:
    """A ``Fuser`` fitted on a seeded subsample of at most ``max_fit_samples`` of the store's images
    (``fuse.max_fit_samples``; the whole store when it is smaller or None)."""
    rows = subsample(store_shape(store, columns)[0], max_fit_samples, seed)
    return Fuser(blocks, random_state=seed, **params).fit(store_rows(store, columns, rows))


def fuse_store(fuser: Fuser, store, columns: list[str], out: np.ndarray | None = None) -> np.ndarray:
    """Every image of the store through a fitted ``fuser``, read and fused a batch at a time
    (float32), into ``out`` when given (e.g. a memory-mapped file of shape (images, fused dims))."""
    shape = (store_shape(store, columns)[0], fuser.n_features_out_)
    if out is not None and tuple(out.shape) != shape:
        raise ValueError(f"fused rows go into an array of shape {shape}, not {tuple(out.shape)}")
    Z = np.empty(shape, dtype=np.float32) if out is None else out
    start = 0
    for batch in store_batches(store, columns):
        Z[start : start + len(batch)] = fuser.transform(batch)
        start += len(batch)
    return Z


def blocks_for_store(store, local_weight: float = 1.0, global_weight: float = 1.0) -> tuple[np.ndarray, list[Block]]:
    """The store's vectors side by side (all rows in memory), and the blocks that describe them."""
    columns, blocks = store_layout(store, local_weight, global_weight)
    return np.hstack([store.vectors(column) for column in columns]), blocks
