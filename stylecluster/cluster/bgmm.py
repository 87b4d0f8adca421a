"""Bayesian Gaussian mixture with a Dirichlet-process prior: the number of styles is inferred.

Why the naive version collapses and what this one does instead
-------------------------------------------------------------
Fitted directly on L2-normalised 64-d features with a diagonal covariance, a Dirichlet-process
mixture ends with one or two components even on blobs that k-means separates perfectly: the
features are strongly correlated and of tiny, unequal variance, so no axis-aligned component
explains the clusters better, in the variational bound, than one broad component. Here the
estimator

1. scales isotropically and reduces by PCA with whitening (``pca_components``): the clusters'
   directions become the leading axes and the data covariance the identity, so that
2. the Wishart prior has a meaning: its prior covariance is ``covariance_prior_scale`` · I, i.e. a
   multiple of the collection's own covariance. With the prior's minimal ``d`` degrees of freedom
   it mainly keeps *small* components from shrinking onto a handful of points; larger values
   merge more (on wikiart-styles embeddings: 1 → ~18 components, 4 → 8; see benchmarks), and
3. fits ``full`` covariances (styles are elongated, correlated clouds; diagonal ones needed
   twice as many components for a lower NMI on wikiart-styles).

The DP concentration (``weight_concentration_prior``) hardly matters once there are thousands of
images; it is exposed for small collections. Components whose weight exceeds ``weight_threshold``
are the clusters; they are relabelled 0..n-1 by decreasing weight and their posterior
probabilities renormalised. Above ``max_fit_samples`` images the mixture is fitted on a seeded
random subsample (a 16-d mixture of at most k components is well determined by 20k points) and
every image is then assigned by its posterior, a batch at a time: a million images at 128 fused
dimensions took 52 s and 2.7 GB peak RSS, store included (``benchmarks/scale.py``, a busy machine),
and found the 20 planted components exactly (ARI 1.0).

EM here multiplies many small matrices (n × d by d × d per component and iteration); BLAS threads
only add synchronisation to those, and on a machine whose cores are busy with other work they
wait for each other at every call. The fit therefore runs with one BLAS thread: 2.8 s instead of
59 s for 3k wikiart-styles images on the shared 2-core machine, and never slower when it is idle.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from sklearn.mixture import BayesianGaussianMixture
from threadpoolctl import threadpool_limits

from .base import ClusterMethod, capped_k, register_method, row_batches
from .reduce import make_reducer, subsample


def _full_covariances(mixture: BayesianGaussianMixture, keep: np.ndarray) -> np.ndarray:
    cov, d = mixture.covariances_, mixture.means_.shape[1]
    kind = mixture.covariance_type
    if kind == "full":
        return cov[keep]
    if kind == "tied":
        return np.repeat(cov[None], keep.sum(), axis=0)
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov[keep]])
    return cov[keep][:, None, None] * np.eye(d)[None]


def _n_parameters(n_components: int, d: int, covariance_type: str) -> int:
    cov = {"full": n_components * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": n_components * d, "spherical": n_components}
    return (n_components - 1) + n_components * d + cov[covariance_type]


@register_method("bgmm")
class BayesianGMMClustering(ClusterMethod):
    """Dirichlet-process Gaussian mixture behind isotropic scaling and whitened PCA.

    Parameters
    ----------
    k : int or None
        Upper bound on the number of components (None: ``default_k`` = 30).
    weight_concentration_prior : float
        DP concentration γ; larger lets more components keep weight.
    covariance_type : {"full", "tied", "diag", "spherical"}
    covariance_prior_scale : float
        Wishart scale as a multiple of the identity in the whitened space.
    pca_components : int
        Whitened dimensions the mixture sees (0 keeps all).
    weight_threshold : float
        Minimum mixture weight for a component to count as a cluster.
    max_fit_samples : int
        Fit the mixture on a random subsample of at most this many points (0: all).
    n_init, max_iter, tol : EM restarts, iterations and convergence tolerance.
    random_state : int

    Attributes
    ----------
    labels_, probabilities_ (posterior of the assigned cluster), n_clusters_,
    weights_ : (n_clusters_,) renormalised weights of the kept components,
    reducer_ : fitted scaling + PCA, mixture_ : the fitted ``BayesianGaussianMixture``,
    components_ : indices of the kept components in ``mixture_``.
    """

    k_meaning = "upper_bound"
    has_proba = True
    fits_subsample = True
    default_k = 30

    def __init__(
        self,
        k: int | None = None,
        weight_concentration_prior: float = 1.0,
        covariance_type: str = "full",
        covariance_prior_scale: float = 1.0,
        pca_components: int = 16,
        weight_threshold: float = 0.01,
        max_fit_samples: int = 20_000,
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-3,
        random_state: int = 0,
    ):
        self.k = k
        self.weight_concentration_prior = weight_concentration_prior
        self.covariance_type = covariance_type
        self.covariance_prior_scale = covariance_prior_scale
        self.pca_components = pca_components
        self.weight_threshold = weight_threshold
        self.max_fit_samples = max_fit_samples
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _covariance_prior(self, d: int):
        s = self.covariance_prior_scale * d  # sklearn's prior covariance is scale / dof, dof = d
        return {"full": s * np.eye(d), "tied": s * np.eye(d), "diag": np.full(d, s), "spherical": s}[self.covariance_type]

    def fit(self, X: np.ndarray, y=None) -> "BayesianGMMClustering":
        X = np.asarray(X, dtype=np.float32)
        fit_rows = subsample(len(X), self.max_fit_samples, self.random_state)
        k = capped_k(self.default_k if self.k is None else int(self.k), X[fit_rows], "bgmm", exact=False)
        n_components = self._informative_components(X[fit_rows])
        self.reducer_ = make_reducer(n_components, len(fit_rows), X.shape[1], whiten=True, random_state=self.random_state)
        self.reducer_.fit(X[fit_rows])
        Z = self.reducer_.transform(X[fit_rows])
        mixture = BayesianGaussianMixture(
            n_components=min(k, len(fit_rows)),
            covariance_type=self.covariance_type,
            weight_concentration_prior_type="dirichlet_process",
            weight_concentration_prior=self.weight_concentration_prior,
            covariance_prior=self._covariance_prior(Z.shape[1]),
            init_params="kmeans",
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        )
        with threadpool_limits(1, user_api="blas"):
            self.mixture_ = mixture.fit(Z)
        del Z
        weights = self.mixture_.weights_
        order = np.argsort(-weights, kind="stable")
        keep = order[weights[order] > self.weight_threshold]
        self.components_ = keep if len(keep) else order[:1]
        # A cluster is a component that some image belongs to: on identical or near-identical
        # images several components keep weight while one of them takes every image.
        members = np.unique(np.concatenate([np.unique(self.predict(X[rows])) for rows in row_batches(len(X))]))
        self.components_ = self.components_[members]
        self.weights_ = weights[self.components_] / weights[self.components_].sum()
        self.n_clusters_ = len(self.components_)
        self.labels_, self.probabilities_ = self.assign(X)
        return self

    def _informative_components(self, X: np.ndarray) -> int:
        """``pca_components``, or 0 (keep all) when the spectrum is nearly flat.

        Truncating PCA keeps the directions of largest variance; after the fuser has whitened a
        single-part vector every direction has the same variance, so the kept ones are arbitrary
        and the clusters' directions are mostly thrown away (whitened 40-d blobs, 5 clusters:
        1 component found with 16 kept, 5 with all). Flat means the leading ``pca_components``
        hold less than 1.5x their share of an isotropic spectrum.
        """
        if self.pca_components <= 0 or self.pca_components >= X.shape[1]:
            return self.pca_components
        ratios = PCA().fit(np.asarray(X, dtype=np.float64)).explained_variance_ratio_
        isotropic_share = self.pca_components / len(ratios)
        return 0 if ratios[: self.pca_components].sum() < 1.5 * isotropic_share else self.pca_components

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        proba = self.mixture_.predict_proba(Z)[:, self.components_]
        return proba / np.maximum(proba.sum(axis=1, keepdims=True), 1e-300)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._proba(self.reducer_.transform(np.asarray(X, dtype=np.float32)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def bic(self, X: np.ndarray) -> float:
        """Bayesian information criterion of the kept components on X, in the whitened space
        (lower is better; comparable between fits that share ``pca_components``)."""
        Z = self.reducer_.transform(np.asarray(X, dtype=np.float32))
        means = self.mixture_.means_[self.components_]
        covariances = _full_covariances(self.mixture_, self.components_)
        log_p = np.column_stack(
            [np.log(w) + multivariate_normal(m, c, allow_singular=True).logpdf(Z) for w, m, c in zip(self.weights_, means, covariances)]
        )
        log_likelihood = logsumexp(log_p, axis=1).sum()
        return float(-2.0 * log_likelihood + _n_parameters(self.n_clusters_, Z.shape[1], self.covariance_type) * np.log(len(Z)))
