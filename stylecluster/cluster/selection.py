"""Model selection: choosing k from the data (``--k auto``) and measuring whether a clustering is
reproducible (``stylecluster stability``).

Criteria for k
--------------
* ``bic`` — for estimators with a likelihood (those defining ``bic(X)``, e.g. BGMM): lowest BIC.
* ``silhouette`` — for the others: highest mean silhouette of the fitted labels.
* ``stability`` — highest mean pairwise ARI between fits on random subsamples.

Every candidate is fitted on one seeded subsample of at most ``max_samples`` points (silhouette
is quadratic in n, and a few thousand points determine k as well as a hundred thousand); the
chosen k is then fitted on everything by the caller. BIC and silhouette ties go to the smallest
k; stability ties (within ``STABILITY_TIE``) to the largest, since a coarse split into two is
often just as reproducible as the real structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score, silhouette_score

from .base import make_clusterer, method_class
from .reduce import subsample
from ..errors import ConfigError, InputError

CRITERIA = ("auto", "bic", "silhouette", "stability")
DEFAULT_K_VALUES = tuple(range(2, 21))
STABILITY_MODES = ("seed", "subsample")
STABILITY_TIE = 0.01  # ARI differences below this are noise between a handful of runs


@dataclass
class KSelection:
    k: int
    criterion: str
    scores: dict[int, float]  # per candidate k (BIC: lower is better; others: higher)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "criterion": self.criterion, "scores": {str(k): v for k, v in self.scores.items()}}


@dataclass
class StabilityResult:
    method: str
    mode: str
    ari: np.ndarray  # (runs, runs) pairwise adjusted Rand index, 1 on the diagonal
    n_clusters: list[int]
    k: int | None = None
    k_selection: KSelection | None = field(default=None, repr=False)

    @property
    def pair_aris(self) -> np.ndarray:
        return self.ari[np.triu_indices(len(self.ari), 1)]

    @property
    def mean_ari(self) -> float:
        return float(self.pair_aris.mean()) if self.pair_aris.size else float("nan")

    @property
    def std_ari(self) -> float:
        return float(self.pair_aris.std()) if self.pair_aris.size else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mode": self.mode,
            "runs": len(self.ari),
            "k": self.k,
            "mean_ari": self.mean_ari,
            "std_ari": self.std_ari,
            "pairwise_ari": np.round(self.ari, 6).tolist(),
            "n_clusters": self.n_clusters,
            "k_selection": self.k_selection.to_dict() if self.k_selection else None,
        }


def stability_labelings(
    method: str, X: np.ndarray, k: int | None = None, runs: int = 5, mode: str = "seed", seed: int = 0, fraction: float = 0.8, **params: Any
) -> list[np.ndarray]:
    """Labels of every point of X from ``runs`` fits that differ by seed (``mode="seed"``) or also
    by the data they see (``"subsample"``: each run fits a random ``fraction`` of the points,
    without replacement so density-based methods see no duplicates, and predicts the rest)."""
    if mode not in STABILITY_MODES:
        raise ConfigError(f"mode must be one of {', '.join(STABILITY_MODES)}, got {mode!r}")
    if runs < 2:
        raise ConfigError(f"stability needs at least 2 runs, got {runs}")
    labelings = []
    for run in range(runs):
        estimator = make_clusterer(method, k=k, seed=seed + run, **params)
        if mode == "seed":
            labelings.append(estimator.fit(X).labels_)
        else:
            rows = subsample(len(X), int(round(fraction * len(X))), seed + run)
            estimator.fit(X[rows])
            labels = estimator.predict(X)
            labels[rows] = estimator.labels_  # fitted points keep their fitted labels
            labelings.append(labels)
    return labelings


def pairwise_ari(labelings: Sequence[np.ndarray]) -> np.ndarray:
    """(runs, runs) matrix of adjusted Rand indices between labelings (outliers, -1, count as one group)."""
    ari = np.eye(len(labelings))
    for i, j in combinations(range(len(labelings)), 2):
        ari[i, j] = ari[j, i] = adjusted_rand_score(labelings[i], labelings[j])
    return ari


def _silhouette(X: np.ndarray, labels: np.ndarray, seed: int) -> float:
    inliers = labels >= 0
    if len(np.unique(labels[inliers])) < 2:
        return -1.0
    return float(silhouette_score(X[inliers], labels[inliers], random_state=seed))


def select_k(
    method: str,
    X: np.ndarray,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    criterion: str = "auto",
    seed: int = 0,
    max_samples: int = 5000,
    **params: Any,
) -> KSelection:
    """Choose k for ``method`` on X by ``criterion`` ("auto": BIC where the estimator defines it,
    otherwise silhouette)."""
    cls = method_class(method)
    if cls.k_meaning is None:
        raise ConfigError(f"{method} infers the number of clusters itself; there is no k to select")
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if criterion == "auto":
        criterion = "bic" if hasattr(cls, "bic") else "silhouette"
    if criterion == "bic" and not hasattr(cls, "bic"):
        raise ConfigError(f"{method} defines no likelihood; use silhouette or stability")
    if cls.k_selection_proxy is not None:
        method, params = cls.k_selection_proxy, {}
    X = np.asarray(X, dtype=np.float32)
    Xs = X[subsample(len(X), max_samples, seed)]
    candidates = sorted({int(k) for k in k_values if 2 <= k < len(Xs)})
    if not candidates:
        raise InputError(f"no candidate k in {list(k_values)} fits {len(Xs)} points")

    scores: dict[int, float] = {}
    for k in candidates:
        if criterion == "stability":
            ari = pairwise_ari(stability_labelings(method, Xs, k=k, runs=3, mode="subsample", seed=seed, **params))
            scores[k] = float(ari[np.triu_indices(len(ari), 1)].mean())
            continue
        estimator = make_clusterer(method, k=k, seed=seed, **params).fit(Xs)
        scores[k] = estimator.bic(Xs) if criterion == "bic" else _silhouette(Xs, estimator.labels_, seed)
    if criterion == "bic":
        best = min(scores, key=lambda k: (scores[k], k))
    elif criterion == "silhouette":
        best = min(scores, key=lambda k: (-scores[k], k))
    else:
        # Splitting into 2 is often perfectly reproducible too (the same coarse split every time),
        # so among the near-maximally stable k the finest is the most informative.
        best = max(k for k, v in scores.items() if v >= max(scores.values()) - STABILITY_TIE)
    return KSelection(k=best, criterion=criterion, scores=scores)


def resolve_k(method: str, k: int | str | None, X: np.ndarray, seed: int = 0, **params: Any) -> tuple[int | None, KSelection | None]:
    """The k to build ``method`` with: ``k`` itself, or the selected one when ``k == "auto"``
    (None for methods that infer the number of clusters, for which "auto" is what they do)."""
    if k != "auto":
        return k, None
    if method_class(method).k_meaning is None:
        return None, None
    selection = select_k(method, X, seed=seed, **params)
    return selection.k, selection
