"""The artist-discriminant style head: a linear projection of the global vector learned from artists.

ImageNet features mix style with content. CSD (Somepalli et al. 2024, §3) separates them by
training a style projection so that paintings by the same artist lie close together and those
of different artists far apart; styles then emerge as groups of similar artists, *including
artists never seen in training*. This head learns such a projection of the frozen global vector
(pooled + Gram parts) in closed form: Fisher's linear discriminant over artist labels, which
maximises between-artist scatter relative to within-artist scatter (Hastie, Tibshirani &
Friedman, *Elements of Statistical Learning*, §4.3.3) — the linear, exactly solvable counterpart
of CSD's supervised contrastive objective.

Pipeline (all affine after the first step, so it is folded into one matrix and bias):

1. every part L2-normalised (as the fuser does);
2. per-part PCA to ``pca_components`` with whitening and equal part weights (the fuser again):
   no part dominates by its dimensionality and the discriminant sees a well-conditioned input;
3. LDA with shrinkage of the within-artist covariance (Ledoit–Wolf style, ``shrinkage``): there
   are more dimensions than images for most artists;
4. the first ``n_components`` discriminant directions.

Measured (benchmarks/generalisation.py, 3 seeds, Lite0, heads fitted on the training artists of
wikiart-styles + wikiart-more + aic-cc0): on unseen artists of the 13 trained movements BGMM NMI
0.43 raw → 0.52 with 256 directions on a per-part PCA of 256 (0.49 with 128 on PCA 128, the
previous default); on movements none of whose artists was seen 0.34 raw → 0.37 (level with 128).
256/256 is the default because it is the best head on seen movements (purity 0.62) without
giving up unseen ones, and it keeps same-artist retrieval on unseen artists at the raw vector's
level (P@10 0.48) — the discriminant's directions carry hands, not only the training movements.
``n_components=None`` (every direction, whitened within artists: WCCN) retrieves the same artist
best of all (P@10 0.52 vs raw 0.48 on unseen artists, 0.40 vs 0.39 on unseen movements) but
clusters worse (BGMM purity 0.59) with 5x the dimensions. Lost on held-out artists: 32 or 64
directions, shrinkage 0.3, posterior weighting of the directions, an RBF random-feature head, a
nonparametric (nearest-artists) discriminant, SupCon heads trained from scratch (linear, two
layers) or started from the discriminant (an MLP residual: BGMM +0.007, k-means -0.018, P@10
artist -0.013 on seed 0). The projected space is a learned metric: the fuser must not whiten it
(``METRIC_PARTS``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from ..errors import ConfigError, InputError, MissingInputError
from ..hashing import file_sha256
from ..io import save_atomic

log = logging.getLogger(__name__)

FORMAT = "stylecluster.style_head/1"
MODELS = Path(__file__).resolve().parents[1] / "models"
PACKAGED_LOCAL_HEAD = MODELS / "local_style_head.pt"


def packaged_global_head(backbone: str) -> Path:
    """Where the head shipped for ``backbone`` lies (it may not exist: then "auto" means no head)."""
    return MODELS / f"global_style_head-{backbone}.pt"


def _normalise_parts(X: np.ndarray, parts: dict[str, tuple[int, int]]) -> np.ndarray:
    out = np.empty_like(X, dtype=np.float64)
    for start, stop in parts.values():
        block = np.asarray(X[:, start:stop], dtype=np.float64)
        out[:, start:stop] = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return out


WEIGHTINGS = ("none", "posterior")


def discriminant_ratios(projected: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per direction, between-artist variance (of the artists' means, image-weighted) over the
    mean within-artist variance, measured on the projected training images."""
    frame = pd.DataFrame(projected)
    centred = frame - frame.groupby(groups).transform("mean")
    within = np.mean(centred.to_numpy() ** 2, axis=0)
    between = np.var(projected, axis=0) - within
    return np.maximum(between, 0.0) / np.maximum(within, 1e-12)


def within_artist_covariance(X: np.ndarray, groups: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """The artists' mean vectors (in ``np.unique(groups)`` order) and the covariance of the images
    around their artist's mean, shrunk by ``shrinkage`` towards a scaled identity."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    means = np.zeros((len(counts), X.shape[1]))
    np.add.at(means, inverse, X)
    means /= counts[:, None]
    centred = X - means[inverse]
    within = centred.T @ centred / len(X)
    return means, (1 - shrinkage) * within + shrinkage * np.trace(within) / len(within) * np.eye(len(within))


def within_artist_whitening(X: np.ndarray, groups: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Within-class covariance normalisation (Hatch, Kajarekar & Stolcke 2006): the affine map
    ``X @ W + b`` (centred on the mean image) whose output has identity within-artist covariance,
    the covariance shrunk by ``shrinkage`` towards a scaled identity. Every direction is kept."""
    _, within = within_artist_covariance(X, groups, shrinkage)
    values, vectors = np.linalg.eigh(within)
    weight = vectors / np.sqrt(values)
    return weight, -X.mean(axis=0) @ weight


class ArtistDiscriminantHead(BaseEstimator, TransformerMixin):
    """Fisher discriminant of artists on the per-part whitened global vector, folded to ``X @ W + b``.

    Parameters
    ----------
    n_components : int or None
        Dimensions of the style vector: the first ``n_components`` Fisher discriminant directions
        (at most the number of artists - 1), or None for every direction of the input, only
        whitened within artists (WCCN, :func:`within_artist_whitening`).
    pca_components : int
        PCA dimensions kept per part before the discriminant.
    shrinkage : float
        Shrinkage of the within-artist covariance towards a scaled identity (0–1).
    weighting : {"none", "posterior"}
        "posterior" scales each direction by λ/(1+λ), its measured between/within-artist variance
        ratio λ; measured, it lost on held-out artists (BGMM NMI 0.51 vs 0.55, seed 0).

    Attributes
    ----------
    parts_ : dict of part name → (start, stop), the input layout the head was fitted on
    weight_ : (n_features_in_, n_components_) array
    bias_ : (n_components_,) array
    n_artists_ : number of artists (groups) it was fitted on
    eigenvalues_ : (n_components_,) between/within-artist variance ratio of each direction
    """

    def __init__(self, n_components: int | None = 256, pca_components: int = 256, shrinkage: float = 0.1, weighting: str = "none"):
        self.n_components = n_components
        self.pca_components = pca_components
        self.shrinkage = shrinkage
        self.weighting = weighting

    def _input_space(self, X: np.ndarray, parts: dict[str, tuple[int, int]]):
        """The per-part whitened PCA the discriminant is solved in (steps 1–2), fitted on X."""
        from ..cluster.fuse import Fuser, part_blocks

        return Fuser(part_blocks("global", parts, 1.0), pca_components=self.pca_components, whiten=True).fit(X)

    def fit(self, X: np.ndarray, groups, parts: dict[str, tuple[int, int]]) -> "ArtistDiscriminantHead":
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        X = np.asarray(X, dtype=np.float64)
        groups = np.asarray(groups)
        # An artist with a single image says nothing about within-artist variation.
        artists, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        keep = counts[inverse] >= 2
        X, groups, artists = X[keep], groups[keep], artists[counts >= 2]
        if len(artists) < 3:
            raise InputError(f"a style head needs at least 3 artists with 2 or more images each, got {len(artists)}")
        parts = {name: (int(a), int(b)) for name, (a, b) in parts.items()}
        fuser = self._input_space(X, parts)
        fused = fuser.transform(X).astype(np.float64)
        if self.n_components is None:
            second, second_bias = within_artist_whitening(fused, groups, self.shrinkage)
        else:
            lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=self.shrinkage).fit(fused, groups)
            n_out = min(self.n_components, len(artists) - 1, fused.shape[1])
            second_bias = lda.transform(np.zeros((1, fused.shape[1])))[0, :n_out]
            second = lda.transform(np.eye(fused.shape[1]))[:, :n_out] - second_bias
        # Each direction has (about, after shrinkage) unit within-artist variance and between-
        # artist variance λ. "posterior" scales it by λ / (1 + λ): the posterior mean of an
        # artist's centroid under a Gaussian prior, so weak directions — noise for new artists —
        # count little instead of as much as the strong ones.
        eigenvalues = discriminant_ratios(fused @ second + second_bias, groups)
        n_out = second.shape[1]
        column_scale = eigenvalues / (1.0 + eigenvalues) if self.weighting == "posterior" else np.ones(n_out)

        # Fold: fuser block p is (x_p - mean_p) @ Cᵀ_p / sqrt(var_p) · scale_p; LDA is affine too.
        first = np.zeros((X.shape[1], fuser.n_features_out_))
        first_bias = np.zeros(fuser.n_features_out_)
        column = 0
        for block, pca, scale in zip(fuser.blocks, fuser.pcas_, fuser.scales_):
            w = pca.components_.T * scale
            if pca.whiten:
                w = w / np.sqrt(pca.explained_variance_)
            first[block.start : block.stop, column : column + w.shape[1]] = w
            first_bias[column : column + w.shape[1]] = -pca.mean_ @ w
            column += w.shape[1]
        second, second_bias = second * column_scale, second_bias * column_scale
        self.weight_ = first @ second
        self.bias_ = first_bias @ second + second_bias
        self.parts_ = parts
        self.n_features_in_ = X.shape[1]
        self.n_components_ = n_out
        self.n_artists_ = len(artists)
        self.eigenvalues_ = eigenvalues
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (_normalise_parts(np.asarray(X), self.parts_) @ self.weight_ + self.bias_).astype(np.float32)

    def save(self, path: str | Path, source: dict[str, Any]) -> Path:
        """Write the head with ``source``: the provenance of the branch vectors it applies to, and how it was trained."""
        payload = {
            "format": FORMAT,
            "weight": torch.from_numpy(self.weight_.astype(np.float32)),
            "bias": torch.from_numpy(self.bias_.astype(np.float32)),
            "parts": {name: list(span) for name, span in self.parts_.items()},
            "params": self.get_params(),
            "n_artists": self.n_artists_,
            "source": source,
        }
        return save_atomic(path, lambda tmp: torch.save(payload, tmp))


class StyleHead(torch.nn.Module):
    """A saved style head applied to a batch of global vectors (per-part L2 norm, then affine)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, parts: dict[str, tuple[int, int]], source: dict[str, Any], file_id: str):
        super().__init__()
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float())
        self.parts = {name: (int(a), int(b)) for name, (a, b) in parts.items()}
        self.source = source
        self.file_id = file_id

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = [torch.nn.functional.normalize(x[:, a:b].float(), dim=1, eps=1e-12) for a, b in self.parts.values()]
        return torch.cat(blocks, dim=1) @ self.weight + self.bias

    def check_fits(self, parts: dict[str, tuple[int, int]], provenance: dict[str, Any], where: str) -> None:
        """Refuse a head trained on other vectors (another backbone, weights, Gram layout; another
        patch encoder or patch settings for a local head): its numbers would be noise."""
        if {k: tuple(v) for k, v in parts.items()} != self.parts:
            raise InputError(f"{where}: the style head expects parts {self.parts}, the branch gives {parts}")
        for key, trained in self.source.get("branch", {}).items():
            now = provenance.get(key)
            if trained is not None and trained != now:
                raise InputError(f"{where}: the style head was trained on {key} {trained!r}, this branch uses {now!r}")

    def fits(self, parts: dict[str, tuple[int, int]], provenance: dict[str, Any]) -> bool:
        try:
            self.check_fits(parts, provenance, "")
        except ValueError:
            return False
        return True


def load_style_head(path: str | Path) -> StyleHead:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such style head file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise InputError(f"{path}: not a readable style head ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a stylecluster style head (expected format {FORMAT!r})")
    return StyleHead(payload["weight"], payload["bias"], payload["parts"], payload.get("source", {}), file_sha256(path)[:16])


def resolve_style_head(choice: str | None, packaged: Path, parts: dict[str, tuple[int, int]], raw_provenance: dict[str, Any]) -> StyleHead | None:
    """The head a branch applies: None for ``None``/"none"; for "auto" the packaged head when it
    was fitted on exactly these vectors (else None: the raw vector is written); a file must fit."""
    if choice is None or str(choice).lower() == "none":
        return None
    if choice == "auto":
        if not packaged.is_file():
            return None
        head = load_style_head(packaged)
        return head if head.fits(parts, raw_provenance) else None
    head = load_style_head(choice)
    head.check_fits(parts, raw_provenance, str(choice))
    return head
