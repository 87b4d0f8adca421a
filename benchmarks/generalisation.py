"""Does the style space generalise? Artist-disjoint and movement-disjoint protocols.

Every shared set with artist labels (wikiart-styles, wikiart-more, aic-cc0) is embedded once per
backbone with the raw global vector (pooled + Gram, no head: ``configs/raw_global.yaml``'s
settings), then, for each split, a style head is fitted on the *training artists only* (artist
names are the only supervision) and the images it never saw are clustered:

* **artist-disjoint** — 30 % of the artists (all sets pooled, seeded) are held out; their
  wikiart images are clustered against their movement;
* **movement-disjoint** — the 13 wikiart movements are dealt into 4 folds (3, 3, 3, 4 movements,
  seeded); for each fold every artist with an image in its movements leaves the training side
  (from every set), and the fold's images are clustered against their movement. This is the
  test of a head that learned *style*, not its training movements.

Each held-out set is clustered the way the product does it: the branch vector through the
``Fuser`` (raw: per-part whitened PCA 64; head: its ``style`` part, a learned metric, kept
unwhitened), then BGMM with k inferred (the default) and k-means with k = number of movements.
Retrieval on the same vectors (cosine, the image itself excluded): P@10 of the same artist
(CSD's measure of a style space on unseen artists) and of the same movement.

    python benchmarks/generalisation.py --work /path/stores            # embeds what is missing
    python benchmarks/generalisation.py --backbones efficientnet_lite0 --variants raw,lda64 --protocols movement

Prints mean ± sd over seeds (and folds); writes ``benchmarks/out/generalisation.json``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from common import OUT, SHARED, print_table, write_json
from stylecluster.cluster import make_clusterer
from stylecluster.cluster.fuse import Fuser, part_blocks
from stylecluster.config import Config
from stylecluster.data.discovery import discover_images
from stylecluster.data.splits import artist_key
from stylecluster.evaluate import evaluate_labels
from stylecluster.features.embedder import embed_images
from stylecluster.features.global_ import GlobalBranch
from stylecluster.features.style_head import ArtistDiscriminantHead, within_artist_covariance
from stylecluster.store import load_store

DATASETS = ("wikiart-styles", "wikiart-more", "aic-cc0")
MOVEMENT_COLUMN = "style"  # wikiart sets; aic-cc0 has periods, which never enter these protocols


# ----------------------------------------------------------------------------- data


def raw_config(backbone: str, workers: int) -> Config:
    config = Config()
    config.global_ = replace(config.global_, backbone=backbone, style_head=None)
    config.local = replace(config.local, enabled=False)
    config.embed.workers = workers
    return config


def load_pool(work: Path, backbone: str, build: bool, workers: int) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """All labelled images of the three sets: a table (dataset, path, artist, movement) and their raw vectors.

    ``A+B`` joins two backbones' raw vectors side by side (their parts prefixed by the backbone)."""
    if "+" in backbone:
        pools = [load_pool(work, name, build, workers) for name in backbone.split("+")]
        for pool, _, _ in pools[1:]:
            assert pool["path"].equals(pools[0][0]["path"]), "the backbones' stores hold different images"
        parts, offset = {}, 0
        for name, (_, X, own) in zip(backbone.split("+"), pools):
            parts.update({f"{name}:{part}": (a + offset, b + offset) for part, (a, b) in own.items()})
            offset += X.shape[1]
        return pools[0][0], np.hstack([X for _, X, _ in pools]), parts
    tables, matrices, parts = [], [], None
    for name in DATASETS:
        root = SHARED / name
        store_path = work / backbone / f"{name}.store"
        if build:
            base, branch = EXTRA_BRANCHES.get(backbone, (backbone, None))
            config = raw_config(base, workers)
            embed_images(discover_images(root), root, store_path, config, quiet=True, branches=[branch(config.global_)] if branch else None)
        store = load_store(store_path)
        labels = pd.read_csv(root / "labels.csv").dropna(subset=["artist"])
        frame = pd.DataFrame({"path": store.paths, "row": np.arange(len(store))}).merge(labels, on="path")
        vectors = store.vectors("global")[frame["row"].to_numpy()]
        movement = frame[MOVEMENT_COLUMN] if MOVEMENT_COLUMN in frame else pd.Series([None] * len(frame))
        tables.append(pd.DataFrame({"dataset": name, "path": frame["path"], "artist": frame["artist"].map(artist_key), "movement": movement.to_numpy()}))
        matrices.append(vectors)
        parts = parts or store.parts("global")
    return pd.concat(tables, ignore_index=True), np.vstack(matrices), parts


class ChannelMeans(GlobalBranch):
    """Only the per-channel means of each Gram level's feature map (all channels, no projection):
    the first-order half of AdaIN's style statistics (Huang & Belongie 2017, eq. 8), which the
    uncentred Gram matrix holds only multiplied by itself (E[f fᵀ] = Σ + μμᵀ), out of reach of a
    linear head (benchmark only; joined to the raw vector as ``efficientnet_lite0+means``)."""

    def _probe_dimensions(self) -> None:
        size = self.data_config["input_size"][1:]
        with torch.inference_mode():
            _, maps = self._forward(torch.zeros(1, 3, *size))
        self._parts, start = {}, 0
        for level, fmap in zip(self._levels, maps):
            self._parts[f"mean{level}"] = (start, start + fmap.shape[1])
            start += fmap.shape[1]
        self._dim = start

    def _resolve_style_head(self):
        return None

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            _, maps = self._forward(self.model_input(batch))
            return torch.cat([fmap.float().mean(dim=(2, 3)) for fmap in maps], dim=1).cpu().numpy()

    def provenance(self) -> dict:
        return {**super().provenance(), "statistics": "channel means per Gram level"}


#: pseudo-backbones: another branch over a registered backbone's stores (``A+B`` joins them)
EXTRA_BRANCHES: dict[str, tuple[str, type]] = {"means": ("efficientnet_lite0", ChannelMeans)}


class CropView(GlobalBranch):
    """The raw global branch on one random crop of each image (area 35–70 %, aspect 3:4–4:3,
    mirrored half the time; seeded by the image): another view of the same hand and surface with
    other content in frame — extra within-artist samples for the head (benchmark only)."""

    def preprocess(self, image, seed: int):
        generator = torch.Generator().manual_seed(seed % (2**63))
        torch.manual_seed(seed % (2**63))  # RandomResizedCrop draws from the global generator
        crop = RandomResizedCrop(self.data_config["input_size"][1:], scale=(0.35, 0.7), ratio=(0.75, 4 / 3))(image)
        if torch.rand(1, generator=generator).item() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.transform(crop)

    def provenance(self) -> dict:
        return {**super().provenance(), "view": "random crop 0.35-0.7, flip"}


def load_views(work: Path, backbone: str, pool: pd.DataFrame, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop-view vectors of the pool's images (embedded once, resumable) and their pool rows."""
    config = raw_config(backbone, workers)
    rows, matrices = [], []
    for name in DATASETS:
        root = SHARED / name
        out = work / backbone / f"views-{name}.store"
        embed_images(discover_images(root), root, out, config, quiet=True, branches=[CropView(config.global_)])
        store = load_store(out)
        index = {p: i for i, p in enumerate(store.paths)}
        mine = np.flatnonzero(pool["dataset"].to_numpy() == name)
        have = [r for r in mine if pool["path"].iat[r] in index]
        rows.append(np.asarray(have, dtype=int))
        matrices.append(store.vectors("global")[[index[pool["path"].iat[r]] for r in have]])
    return np.vstack(matrices), np.concatenate(rows)


def averaged_with_views(X: np.ndarray, rows: np.ndarray, views: np.ndarray, view_rows: np.ndarray, parts: dict) -> np.ndarray:
    """Test-time averaging: each part of each image's vector (pool ``rows``) L2-normalised and
    averaged with the same part of its crop view, where it has one."""
    position = {row: i for i, row in enumerate(view_rows)}
    have = np.array([r in position for r in rows])
    crops = views[[position[r] for r in rows[have]]]
    out = X.copy()
    unit = lambda V: V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)  # noqa: E731
    for a, b in parts.values():
        out[have, a:b] = (unit(out[have, a:b]) + unit(crops[:, a:b])) / 2
    return out


# ----------------------------------------------------------------------------- protocols


@dataclass
class Split:
    protocol: str
    seed: int
    fold: str
    train: np.ndarray  # row indices of the pool the head may see
    test: np.ndarray  # rows clustered and scored (unseen artists, movement labelled)
    truth: np.ndarray | None = None  # the test rows' labels when not their movement


def aic_periods(pool: pd.DataFrame, seeds: int) -> list[Split]:
    """Every aic-cc0 painting (one museum's photographs, up to 843 px) scored against its period,
    the head fitted on every image by an artist absent from aic-cc0; ``seeds`` clustering seeds."""
    aic = pool["dataset"].to_numpy() == "aic-cc0"
    train = np.flatnonzero(~aic & ~pool["artist"].isin(set(pool.loc[aic, "artist"])).to_numpy())
    test = np.flatnonzero(aic)
    periods = pd.read_csv(SHARED / "aic-cc0" / "labels.csv").set_index("path")["period"]
    truth = periods.reindex(pool["path"].to_numpy()[test]).astype(str).to_numpy()
    return [Split("aic", seed, "periods", train, test, truth) for seed in range(seeds)]


def artist_disjoint(pool: pd.DataFrame, seeds: int, share: float = 0.3) -> list[Split]:
    artists = np.array(sorted(pool["artist"].unique()))
    splits = []
    for seed in range(seeds):
        held = set(np.random.default_rng(seed).permutation(artists)[: round(share * len(artists))])
        out = pool["artist"].isin(held).to_numpy()
        test = np.flatnonzero(out & pool["movement"].notna().to_numpy())
        splits.append(Split("artist", seed, "30% artists", np.flatnonzero(~out), test))
    return splits


def movement_disjoint(pool: pd.DataFrame, seeds: int, folds: int = 4) -> list[Split]:
    movements = np.array(sorted(pool["movement"].dropna().unique()))
    splits = []
    for seed in range(seeds):
        for held in np.array_split(np.random.default_rng(1000 + seed).permutation(movements), folds):
            in_fold = pool["movement"].isin(set(held)).to_numpy()
            their_artists = set(pool.loc[in_fold, "artist"])
            train = np.flatnonzero(~pool["artist"].isin(their_artists).to_numpy())
            splits.append(Split("movement", seed, "+".join(sorted(m[:12] for m in held)), train, np.flatnonzero(in_fold)))
    return splits


# ----------------------------------------------------------------------------- spaces

# A variant maps (train vectors, train artists, test vectors, parts) to the test images' branch
# vector and its parts, i.e. what the store would hold with that head.
Variant = Callable[[np.ndarray, np.ndarray, np.ndarray, dict], tuple[np.ndarray, dict]]


def raw_variant(train_X, train_groups, test_X, parts):
    return test_X, parts


_INPUT_SPACES: dict = {}
_fit_input_space = ArtistDiscriminantHead._input_space


def _memoised_input_space(self, X, parts):
    """Variants that differ only after the per-part PCA share its fit on the same training images."""
    key = (X.shape, self.pca_components, hash(np.ascontiguousarray(X[::101, ::37]).tobytes()))
    if key not in _INPUT_SPACES:
        _INPUT_SPACES.clear()  # one split at a time: keep memory bounded
        _INPUT_SPACES[key] = _fit_input_space(self, X, parts)
    return _INPUT_SPACES[key]


ArtistDiscriminantHead._input_space = _memoised_input_space


def head_variant(**params) -> Variant:
    def run(train_X, train_groups, test_X, parts):
        head = ArtistDiscriminantHead(**params).fit(train_X, train_groups, parts)
        return head.transform(test_X), {"style": (0, head.n_components_)}

    return run


def kernel_variant(features: int = 2048, n_components: int = 64, shrinkage: float = 0.1, gamma: float = 1.0) -> Variant:
    """Random Fourier features (Rahimi & Recht 2007) of the per-part whitened input, then the
    artist discriminant: a nonlinear (RBF-kernel) head. Not foldable into one matrix."""

    def run(train_X, train_groups, test_X, parts):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        fuser = Fuser(part_blocks("global", parts, 1.0), pca_components=128, whiten=True).fit(train_X)
        A, B = fuser.transform(train_X), fuser.transform(test_X)
        rng = np.random.default_rng(0)
        # RBF bandwidth from the median distance between training points (median heuristic)
        sample = A[rng.choice(len(A), min(len(A), 1000), replace=False)]
        median = np.median(np.linalg.norm(sample[:, None] - sample[None], axis=-1))
        W = rng.normal(0, np.sqrt(gamma) / median, (A.shape[1], features))
        b = rng.uniform(0, 2 * np.pi, features)
        # sklearn's shrinkage LDA standardises each feature, so the two halves need no common scale
        lift = lambda Z: np.hstack([Z, np.cos(Z @ W + b)])
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage).fit(lift(A), train_groups)
        out = lda.transform(lift(B))[:, :n_components]
        return out, {"style": (0, out.shape[1])}

    return run


def neighbour_variant(n_neighbours: int = 10, n_components: int = 64, shrinkage: float = 0.1) -> Variant:
    """Nonparametric discriminant (Fukunaga & Mantock 1983; local Fisher DA, Sugiyama 2007):
    between-artist scatter only from each artist to its ``n_neighbours`` nearest artists, so the
    directions tell similar hands apart instead of separating the training movements wholesale."""

    def run(train_X, train_groups, test_X, parts):
        from scipy.linalg import eigh
        from sklearn.neighbors import NearestNeighbors

        fuser = ArtistDiscriminantHead(pca_components=128)._input_space(train_X, parts)
        A = fuser.transform(train_X).astype(np.float64)
        means, within = within_artist_covariance(A, train_groups, shrinkage)
        counts = np.unique(train_groups, return_counts=True)[1]
        _, neighbours = NearestNeighbors(n_neighbors=n_neighbours + 1).fit(means).kneighbors(means)
        diffs = (means[:, None, :] - means[neighbours[:, 1:]]).reshape(-1, A.shape[1])
        weights = np.repeat(counts, n_neighbours).astype(np.float64)
        between = (diffs * weights[:, None]).T @ diffs / weights.sum()
        values, vectors = eigh(between, within)
        W = vectors[:, ::-1][:, :n_components]
        out = (fuser.transform(test_X) - A.mean(axis=0)) @ W
        return out, {"style": (0, out.shape[1])}

    return run


def supcon_variant(n_components: int = 128, hidden: int = 512, temperature: float = 0.1, max_steps: int = 1500,
                   artists_per_batch: int = 64, images_per_artist: int = 4, learning_rate: float = 1e-3) -> Variant:
    """A small MLP trained with the supervised contrastive loss over artists (Khosla et al. 2020,
    eq. 2), initialised from the discriminant: output = LDA(z) + MLP(z) with the MLP's last layer
    zero, so training starts at the closed-form head. z is the head's per-part whitened input.
    Inputs get feature dropout (0.2) as augmentation. The number of steps is chosen on 10 % of the
    *training* artists held out for validation (P@10 by artist, every 100 steps), then the model
    is refitted on all training artists for that many steps."""

    def train(A, groups, steps, seed):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        torch.manual_seed(seed)
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.1).fit(A, groups)
        n_out = min(n_components, len(np.unique(groups)) - 1)
        bias = lda.transform(np.zeros((1, A.shape[1])))[0, :n_out]
        weight = lda.transform(np.eye(A.shape[1]))[:, :n_out] - bias
        linear = torch.nn.Linear(A.shape[1], n_out)
        linear.weight.data = torch.tensor(weight.T, dtype=torch.float32)
        linear.bias.data = torch.tensor(bias, dtype=torch.float32)
        residual = torch.nn.Sequential(torch.nn.Linear(A.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, n_out))
        torch.nn.init.zeros_(residual[2].weight)
        torch.nn.init.zeros_(residual[2].bias)
        model = lambda z: linear(z) + residual(z)
        params = list(linear.parameters()) + list(residual.parameters())
        optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=1e-4)
        Z = torch.tensor(A, dtype=torch.float32)
        artists, inverse = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(inverse == a) for a in range(len(artists))]
        usable = np.array([a for a in range(len(artists)) if len(members[a]) >= 2])
        rng = np.random.default_rng(seed)
        dropout = torch.nn.Dropout(0.2)
        yield 0, model
        for step in range(steps):
            chosen = rng.choice(usable, min(artists_per_batch, len(usable)), replace=False)
            rows = np.concatenate([rng.choice(members[a], images_per_artist, replace=len(members[a]) < images_per_artist) for a in chosen])
            labels = torch.tensor(np.repeat(np.arange(len(chosen)), images_per_artist))
            out = torch.nn.functional.normalize(model(dropout(Z[rows])), dim=1)
            logits = out @ out.T / temperature
            eye = torch.eye(len(rows), dtype=torch.bool)
            logits = logits.masked_fill(eye, -1e9)
            positive = (labels[:, None] == labels[None]) & ~eye
            log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            loss = -(log_prob * positive).sum(1) / positive.sum(1)
            optimiser.zero_grad()
            loss.mean().backward()
            optimiser.step()
            yield step + 1, model

    def run(train_X, train_groups, test_X, parts):
        fuser = ArtistDiscriminantHead(pca_components=128)._input_space(train_X, parts)
        A, B = fuser.transform(train_X).astype(np.float64), fuser.transform(test_X).astype(np.float64)
        artists = np.unique(train_groups)
        validation = set(np.random.default_rng(7).permutation(artists)[: len(artists) // 10])
        held = np.isin(train_groups, list(validation))
        best_steps, best_p10 = 0, -1.0
        for step, model in train(A[~held], train_groups[~held], max_steps, 0):
            if step % 100 == 0:
                with torch.no_grad():
                    out = model(torch.tensor(A[held], dtype=torch.float32)).numpy()
                p10 = precision_at(out, train_groups[held])
                if p10 > best_p10:
                    best_steps, best_p10 = step, p10
        print(f"    supcon: {best_steps} steps chosen (validation P@10 artist {best_p10:.3f})", flush=True)
        for step, model in train(A, train_groups, best_steps, 0):
            pass
        with torch.no_grad():
            out = model(torch.tensor(B, dtype=torch.float32)).numpy()
        return out, {"style": (0, out.shape[1])}

    return run


def blend_variant(raw_weight: float, **params) -> Variant:
    """The head's style space beside the raw vector's parts, the raw parts together weighing
    ``raw_weight`` relative to the head (returns fusion blocks, not parts)."""

    def run(train_X, train_groups, test_X, parts):
        head = ArtistDiscriminantHead(**params).fit(train_X, train_groups, parts)
        style = head.transform(test_X)
        blocks = part_blocks("global", {"style": (0, style.shape[1])}, 1.0) + part_blocks("raw", parts, raw_weight, offset=style.shape[1])
        return np.hstack([style, test_X]), blocks

    return run


def signed_power(X: np.ndarray, alpha: float) -> np.ndarray:
    """sign(x)·|x|^alpha, elementwise: power normalisation of pooled and second-order features
    (Perronnin, Sánchez & Mensink 2010, "Improving the Fisher kernel", §3.2; Lin & Maji 2017)."""
    return np.sign(X) * np.abs(X) ** alpha


def gram_matrix_power(X: np.ndarray, parts: dict, alpha: float) -> np.ndarray:
    """Each ``gram*`` part (an upper triangle) raised to the matrix power ``alpha`` through its
    eigendecomposition (matrix power normalisation of covariance pooling: Li et al. 2017,
    "Is second-order information helpful for large-scale visual recognition?", MPN-COV);
    the other parts get the elementwise signed power."""
    out = signed_power(X, alpha).astype(np.float32)
    for name, (start, stop) in parts.items():
        if not name.startswith("gram"):
            continue
        c = int((np.sqrt(8 * (stop - start) + 1) - 1) / 2)
        rows, cols = np.triu_indices(c)
        for begin in range(0, len(X), 2048):
            block = X[begin : begin + 2048, start:stop].astype(np.float64)
            G = np.zeros((len(block), c, c))
            G[:, rows, cols] = block
            G[:, cols, rows] = block
            values, vectors = np.linalg.eigh(G)
            powered = (vectors * np.maximum(values, 0.0)[:, None, :] ** alpha) @ vectors.transpose(0, 2, 1)
            out[begin : begin + 2048, start:stop] = powered[:, rows, cols]
    return out


def power_variant(inner: Variant, alpha: float = 0.5, matrix: bool = False) -> Variant:
    """``inner`` on power-normalised raw vectors (elementwise, or matrix power for the Gram parts)."""

    def run(train_X, train_groups, test_X, parts):
        transform = (lambda X: gram_matrix_power(X, parts, alpha)) if matrix else (lambda X: signed_power(X, alpha).astype(np.float32))
        return inner(transform(train_X), train_groups, transform(test_X), parts)

    return run


def neighbour_mean(Z: np.ndarray, k: int) -> np.ndarray:
    """Each row replaced by the mean of itself and its ``k`` nearest rows (cosine) of the same
    collection: average query expansion (Chum et al. 2007, §3) used as a transductive denoiser."""
    unit = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    nearest = np.argpartition(-similarity, k, axis=1)[:, : k + 1]  # includes the row itself
    return Z[nearest].mean(axis=1)


def smoothed_variant(inner: Variant, k: int) -> Variant:
    def run(train_X, train_groups, test_X, parts):
        vectors, vparts = inner(train_X, train_groups, test_X, parts)
        return neighbour_mean(vectors, k), vparts

    return run


VARIANTS: dict[str, Variant] = {
    "raw": raw_variant,
    "lda64": head_variant(),
    "lda32": head_variant(n_components=32),
    "lda128": head_variant(n_components=128),
    "lda256": head_variant(n_components=256, pca_components=256),
    "lda64-post": head_variant(weighting="posterior"),
    "lda128-post": head_variant(n_components=128, weighting="posterior"),
    "lda256-post": head_variant(n_components=256, pca_components=256, weighting="posterior"),
    "lda128-s0.3-post": head_variant(n_components=128, shrinkage=0.3, weighting="posterior"),
    "lda64-s0.3": head_variant(shrinkage=0.3),
    "lda64-s0.03": head_variant(shrinkage=0.03),
    "lda128-p256": head_variant(n_components=128, pca_components=256),
    "nda64-k5": neighbour_variant(5),
    "nda64-k10": neighbour_variant(10),
    "nda64-k30": neighbour_variant(30),
    "nda128-k10": neighbour_variant(10, n_components=128),
    "rff64": kernel_variant(),
    "rff128": kernel_variant(n_components=128),
    "supcon128": supcon_variant(),
    # every direction, whitened within artists (WCCN; ArtistDiscriminantHead(n_components=None))
    "wccn": head_variant(n_components=None),
    "wccn-s0.3": head_variant(n_components=None, shrinkage=0.3),
    "wccn-s0.03": head_variant(n_components=None, shrinkage=0.03),
    "wccn-p256": head_variant(n_components=None, pca_components=256),
    "wccn-p64": head_variant(n_components=None, pca_components=64),
    "lda-all-p256": head_variant(n_components=10_000, pca_components=256),  # every discriminant direction (artists - 1)
    "blend0.5": blend_variant(0.5),
    "blend0.3": blend_variant(0.3),
    "raw-sqrt": power_variant(raw_variant),
    "lda256-sqrt": power_variant(head_variant(n_components=256, pca_components=256)),
    "raw-msqrt": power_variant(raw_variant, matrix=True),
    "lda256-msqrt": power_variant(head_variant(n_components=256, pca_components=256), matrix=True),
    "lda256-knn5": smoothed_variant(head_variant(n_components=256, pca_components=256), 5),
    "lda256-knn10": smoothed_variant(head_variant(n_components=256, pca_components=256), 10),
    "raw-knn10": smoothed_variant(raw_variant, 10),
    "lda256-pow0.3": power_variant(head_variant(n_components=256, pca_components=256), alpha=0.3),
}


def fused(vectors: np.ndarray, layout: dict | list, seed: int) -> np.ndarray:
    """The product's fusion (defaults of FuseConfig) of a branch vector given its parts, or of explicit blocks."""
    blocks = layout if isinstance(layout, list) else part_blocks("global", layout, 1.0)
    return Fuser(blocks, random_state=seed).fit_transform(vectors)


def precision_at(Z: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean share of each image's k nearest neighbours (cosine, itself excluded) with its label."""
    unit = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
    return float(np.mean(labels[nearest] == labels[:, None]))


def score(Z: np.ndarray, movements: np.ndarray, artists: np.ndarray, seed: int, methods: list[str]) -> dict[str, float]:
    out = {"p10_artist": precision_at(Z, artists), "p10_movement": precision_at(Z, movements)}
    k = len(np.unique(movements))
    for method in methods:
        model = make_clusterer(method, k=k if method == "kmeans" else None, seed=seed).fit(Z)
        result = evaluate_labels(movements, model.labels_)
        for key in ("nmi", "purity", "ari"):
            out[f"{method}_{key}"] = float(result[key])
        out[f"{method}_k"] = int(model.n_clusters_)
    return out


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for backbone in args.backbones:
        pool, X, parts = load_pool(args.work, backbone, args.build, args.workers)
        views, view_rows = load_views(args.work, backbone, pool, args.workers) if args.train_views or args.test_views else (None, None)
        print(f"{backbone}: {len(pool)} images, {pool['artist'].nunique()} artists, {pool['movement'].nunique()} movements")
        splits = []
        if "artist" in args.protocols:
            splits += artist_disjoint(pool, args.seeds)
        if "movement" in args.protocols:
            splits += movement_disjoint(pool, args.seeds)
        if "aic" in args.protocols:
            splits += aic_periods(pool, args.seeds)
        for split in splits:
            movements = split.truth if split.truth is not None else pool["movement"].to_numpy()[split.test].astype(str)
            artists = pool["artist"].to_numpy()[split.test]
            train_X, train_artists = X[split.train], pool["artist"].to_numpy()[split.train]
            if views is not None and args.train_views:  # each training image's crop view joins its artist's samples
                extra = np.isin(view_rows, split.train)
                train_X = np.vstack([train_X, views[extra]])
                train_artists = np.concatenate([train_artists, pool["artist"].to_numpy()[view_rows[extra]]])
            test_X = X[split.test]
            if views is not None and args.test_views:
                test_X = averaged_with_views(test_X, split.test, views, view_rows, parts)
            for name in args.variants:
                started = time.perf_counter()
                vectors, vparts = VARIANTS[name](train_X, train_artists, test_X, parts)
                Z = fused(vectors, vparts, split.seed)
                row = {"backbone": backbone, "variant": name + ("+crops" if args.train_views and views is not None and name != "raw" else "") + ("+tta" if args.test_views and views is not None else ""), "protocol": split.protocol, "seed": split.seed, "fold": split.fold,
                       "train_images": len(split.train), "test_images": len(split.test), **score(Z, movements, artists, split.seed, args.methods),
                       "seconds": time.perf_counter() - started}
                rows.append(row)
                print(f"  {split.protocol:8s} seed {split.seed} {split.fold[:40]:40s} {name:14s} "
                      + " ".join(f"{m} {row[m + '_nmi']:.3f}" for m in args.methods)
                      + f"  P@10 artist {row['p10_artist']:.3f}  ({row['seconds']:.0f} s)", flush=True)
    return rows


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    frame = pd.DataFrame(rows)
    metrics = [f"{m}_{k}" for m in methods for k in ("nmi", "purity", "ari", "k")] + ["p10_artist", "p10_movement"]
    table = []
    for (backbone, protocol, variant), group in frame.groupby(["backbone", "protocol", "variant"], sort=False):
        # folds of one seed are averaged first, so the sd is over seeds
        per_seed = group.groupby("seed")[metrics].mean()
        entry = {"backbone": backbone, "protocol": protocol, "variant": variant, "seeds": len(per_seed)}
        for metric in metrics:
            entry[metric] = f"{per_seed[metric].mean():.3f} ± {per_seed[metric].std(ddof=0):.3f}"
        if protocol == "movement" and variant != "raw":
            raw = frame[(frame.backbone == backbone) & (frame.protocol == protocol) & (frame.variant == "raw")]
            gain = group.set_index(["seed", "fold"])[f"{methods[0]}_nmi"] - raw.set_index(["seed", "fold"])[f"{methods[0]}_nmi"]
            entry[f"min fold gain ({methods[0]} NMI)"] = f"{gain.min():+.3f}"
        table.append(entry)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=OUT / "generalisation_work", help="raw stores, one folder per backbone")
    parser.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    parser.add_argument("--variants", default="raw,lda64", help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--protocols", default="artist,movement", help="artist, movement, aic (the AIC paintings by period)")
    parser.add_argument("--methods", default="bgmm,kmeans")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--crop-views", dest="train_views", action="store_true", help="add one random crop view of every training image to the head's samples")
    parser.add_argument("--test-views", action="store_true", help="test-time averaging: each clustered image's vector is the mean of its full view and its crop view")
    parser.add_argument("--no-build", dest="build", action="store_false", help="use the stores as they are")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="generalisation.json")
    args = parser.parse_args()
    for key in ("backbones", "variants", "protocols", "methods"):
        setattr(args, key, getattr(args, key).split(","))
    rows = run(args)
    table = summarise(rows, args.methods)
    columns = ["backbone", "protocol", "variant", "seeds"] + [c for c in table[0] if c.endswith(("_nmi", "_purity", "_k")) or c.startswith(("p10", "min fold"))]
    print_table(table, columns)
    path = write_json(args.out, {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "summary": table, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
