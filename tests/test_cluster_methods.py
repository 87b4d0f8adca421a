"""Clustering methods: recovery of planted structure, outliers, DEC's equations, k selection,
stability, the fitted pipeline's save/load/assign, and the registry's errors."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import BayesianGaussianMixture
from threadpoolctl import threadpool_limits

from stylecluster.cluster import StyleClustering, available_methods, make_clusterer, select_k, stability
from stylecluster.cluster.agglomerative import cut_tree
from stylecluster.cluster.base import student_t_assignments
from stylecluster.cluster.dec import clustering_loss, soft_assignment, target_distribution
from stylecluster.config import ClusterConfig, FuseConfig
from stylecluster.store import StoreWriter, load_store

METHODS = ["agglomerative", "bgmm", "dec", "hdbscan", "kmeans"]
# Small DEC so that the suite stays fast; the defaults are exercised by benchmarks/cluster_speed.py.
FAST = {"dec": {"hidden": (64, 64, 128), "pretrain_steps": 300, "max_steps": 400, "update_interval": 50}}


@pytest.fixture(autouse=True)
def _one_thread():
    """BLAS/OpenMP on two shared, busy cores spin-wait: one thread made these tests ~20x faster."""
    with threadpool_limits(1):
        yield


def _blobs(n=400, n_features=24, centers=4, seed=0):
    X, y = make_blobs(n_samples=n, n_features=n_features, centers=centers, cluster_std=1.0, center_box=(-10, 10), random_state=seed)
    return X.astype(np.float32), y


def _make(method, k=None, seed=0):
    return make_clusterer(method, k=k if method != "hdbscan" else None, seed=seed, **FAST.get(method, {}))


def test_every_method_is_registered():
    assert available_methods() == METHODS


@pytest.mark.parametrize("method", METHODS)
def test_method_recovers_separable_blobs(method):
    X, y = _blobs()
    est = _make(method, k=4).fit(X)
    assert normalized_mutual_info_score(y, est.labels_) > 0.95
    assert est.n_clusters_ == 4
    assert est.labels_.shape == (len(X),) and est.probabilities_.shape == (len(X),)
    assert np.all((est.probabilities_ >= 0) & (est.probabilities_ <= 1))
    # assigning the fitted points again reproduces their labels
    labels, probabilities = est.assign(X)
    assert np.mean(labels == est.labels_) > 0.99
    # a new point at a blob's centre goes to the cluster the blob's own points were given
    for blob in range(4):
        fitted = est.labels_[(y == blob) & (est.labels_ >= 0)]
        assert est.predict(X[y == blob].mean(axis=0, keepdims=True))[0] == np.bincount(fitted).argmax()
    proba = est.predict_proba(X[:20])
    assert proba.shape == (20, est.n_clusters_)
    assert np.all(proba.sum(axis=1) <= 1 + 1e-6)
    if method != "hdbscan":  # HDBSCAN's memberships sum to the probability of being in any cluster
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("method", ["kmeans", "bgmm", "dec"])
def test_same_seed_same_clusters(method):
    X, _ = _blobs(n=200, centers=3, seed=5)
    a, b = _make(method, k=3, seed=7).fit(X), _make(method, k=3, seed=7).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.probabilities_, b.probabilities_)


def _l2_blobs(n=1500, centers=8, dim=64, spread=0.5, seed=0):
    """Unit-norm 64-d vectors around 8 directions: where a naive diagonal BGMM collapses."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, dim)) * spread
    y = rng.integers(0, centers, n)
    X = means[y] + rng.normal(size=(n, dim))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


def test_bgmm_infers_k_without_collapsing():
    X, y = _l2_blobs()
    naive = BayesianGaussianMixture(n_components=30, covariance_type="diag", weight_concentration_prior_type="dirichlet_process", random_state=0).fit(X)
    assert (naive.weights_ > 0.01).sum() <= 2, "the fixture should be a case where the naive mixture collapses"
    est = make_clusterer("bgmm").fit(X)  # default upper bound 30
    assert 7 <= est.n_clusters_ <= 9
    assert normalized_mutual_info_score(y, est.labels_) > 0.9
    # relabelled 0..n-1 by decreasing weight
    assert set(np.unique(est.labels_)) <= set(range(est.n_clusters_))
    assert np.all(np.diff(est.weights_) <= 0) and est.weights_.sum() == pytest.approx(1)


def test_hdbscan_marks_planted_outliers():
    X, y = _blobs(n=400)
    rng = np.random.default_rng(1)
    outliers = rng.uniform(-60, 60, size=(12, X.shape[1])).astype(np.float32)
    X_all = np.vstack([X, outliers])
    est = make_clusterer("hdbscan").fit(X_all)
    planted = np.arange(len(X), len(X_all))
    assert np.all(est.labels_[planted] == -1)
    assert np.mean(est.labels_[: len(X)] >= 0) > 0.95
    assert np.all(est.probabilities_[planted] == 0)
    assert est.outlier_scores_[planted].min() > np.median(est.outlier_scores_[: len(X)])
    assert est.membership_vectors_.shape == (len(X_all), est.n_clusters_)
    assert "outlier_score" in est.point_details()
    # a far-away new point is predicted as an outlier, a blob centre is not
    labels, strengths = est.assign(np.vstack([outliers[:1] * 3, X[:1]]))
    assert labels[0] == -1 and labels[1] == est.labels_[0]


def test_hdbscan_refuses_k():
    with pytest.raises(ValueError, match="infers the number of clusters"):
        make_clusterer("hdbscan", k=5)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown cluster method 'spectral'.*kmeans"):
        make_clusterer("spectral")
    with pytest.raises(ValueError, match="does not take n_clusters"):
        make_clusterer("kmeans", n_clusters=3)
    with pytest.raises(ValueError, match="at least 1"):
        make_clusterer("kmeans", k=0)


# --- DEC's equations against hand-computed values -------------------------------------------

def test_dec_soft_assignment_by_hand():
    z = torch.tensor([[0.0, 0.0]])
    centers = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # (1 + 1)^-1 = 0.5 and (1 + 4)^-1 = 0.2, normalised
    expected = [0.5 / 0.7, 0.2 / 0.7]
    np.testing.assert_allclose(soft_assignment(z, centers).numpy()[0], expected, rtol=1e-6)
    np.testing.assert_allclose(student_t_assignments(z.numpy(), centers.numpy())[0], expected, rtol=1e-6)
    # α = 2: (1 + d²/2)^(-3/2)
    a, b = (1 + 1 / 2) ** -1.5, (1 + 4 / 2) ** -1.5
    np.testing.assert_allclose(soft_assignment(z, centers, alpha=2.0).numpy()[0], [a / (a + b), b / (a + b)], rtol=1e-6)


def test_dec_target_distribution_by_hand():
    q = torch.tensor([[0.5, 0.5], [0.8, 0.2]], dtype=torch.float64)
    # f = column sums = (1.3, 0.7); p_ij ∝ q_ij² / f_j
    # row 0: (0.25/1.3, 0.25/0.7) → 0.7/(0.7+1.3) = 0.35; row 1: 0.64·0.7 / (0.64·0.7 + 0.04·1.3) = 0.896
    expected = [[0.35, 0.65], [0.896, 0.104]]
    np.testing.assert_allclose(target_distribution(q).numpy(), expected, rtol=1e-9)


def test_dec_loss_by_hand():
    q = torch.tensor([[0.5, 0.5], [0.8, 0.2]], dtype=torch.float64)
    p = torch.tensor([[0.35, 0.65], [0.896, 0.104]], dtype=torch.float64)
    kl = (0.35 * math.log(0.35 / 0.5) + 0.65 * math.log(0.65 / 0.5) + 0.896 * math.log(0.896 / 0.8) + 0.104 * math.log(0.104 / 0.2)) / 2
    assert float(clustering_loss(q, p)) == pytest.approx(kl, rel=1e-12)
    assert float(clustering_loss(q, q)) == pytest.approx(0.0, abs=1e-15)
    # a zero target probability contributes nothing (0 log 0 = 0), not NaN
    assert float(clustering_loss(q, torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64))) == pytest.approx(
        (math.log(1 / 0.5) + math.log(1 / 0.8)) / 2
    )


def test_dec_training_sharpens_assignments():
    X, y = _blobs(n=300, centers=3, seed=2)
    est = _make("dec", k=3).fit(X)
    losses = [loss for _, loss in est.loss_history_]
    assert losses[-1] <= losses[0]
    np.testing.assert_allclose(est.target_.sum(axis=1), 1.0, rtol=1e-5)
    assert est.transform(X[:5]).shape == (5, est.latent_dim)


# --- Ward hierarchy --------------------------------------------------------------------------

def test_cut_tree_by_hand():
    # 4 leaves: (0,1) → 4, (2,3) → 5, (4,5) → 6
    children = np.array([[0, 1], [2, 3], [4, 5]])
    assert cut_tree(children, 1).tolist() == [0, 0, 0, 0]
    assert cut_tree(children, 2).tolist() == [0, 0, 1, 1]
    assert cut_tree(children, 3).tolist() == [0, 0, 1, 2]
    assert cut_tree(children, 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        cut_tree(children, 5)


def test_ward_cut_matches_scipy_at_every_level():
    X, _ = _blobs(n=120, centers=5, seed=3)
    est = make_clusterer("agglomerative", k=5).fit(X)
    reference = linkage(X.astype(np.float64), method="ward")
    for n_clusters in (2, 5, 9, 30):
        expected = fcluster(reference, t=n_clusters, criterion="maxclust")
        assert adjusted_rand_score(expected, est.cut(n_clusters)) == 1.0
    tree = est.tables()["merge_tree"]
    assert len(tree) == len(X) - 1 and tree["size"].iloc[-1] == len(X)


def test_ward_subsamples_above_max_fit_samples():
    X, y = _blobs(n=600, centers=4, seed=4)
    est = make_clusterer("agglomerative", k=4, max_fit_samples=150).fit(X)
    assert len(est.leaf_rows_) == 150 and len(est.children_) == 149
    assert est.labels_.shape == (600,)
    assert normalized_mutual_info_score(y, est.labels_) > 0.95


# --- model selection and stability ---------------------------------------------------------

def _square_blobs(n=600, dim=6, seed=0):
    """Four blobs on the corners of a square: k = 4 is the only stable, well-separated answer
    (any 2 or 3 clusters must merge corners that are all equally far apart)."""
    corners = np.array([[0, 0], [12, 0], [0, 12], [12, 12]], dtype=float)
    centers = np.hstack([corners, np.zeros((4, dim - 2))])
    X, y = make_blobs(n_samples=n, n_features=dim, centers=centers, cluster_std=1.0, random_state=seed)
    return X.astype(np.float32), y


@pytest.mark.parametrize("method,criterion", [("kmeans", "silhouette"), ("bgmm", "bic"), ("agglomerative", "stability"), ("kmeans", "stability")])
def test_select_k_finds_planted_k(method, criterion):
    X, _ = _square_blobs()
    selection = select_k(method, X, k_values=range(2, 8), criterion=criterion)
    assert selection.k == 4 and selection.criterion == criterion
    assert sorted(selection.scores) == list(range(2, 8))


def test_bgmm_does_not_collapse_on_whitened_vectors():
    """A whitened single-part vector has a flat spectrum: truncating PCA there kept arbitrary
    directions and BGMM found one cluster."""
    from sklearn.decomposition import PCA

    X, y = make_blobs(n_samples=1500, n_features=40, centers=5, cluster_std=3.0, center_box=(-5, 5), random_state=0)
    white = PCA(whiten=True).fit_transform(X)
    model = make_clusterer("bgmm", seed=0).fit(white)
    assert model.n_clusters_ == 5
    assert normalized_mutual_info_score(y, model.labels_) > 0.95


def test_dec_selects_k_on_its_kmeans_proxy_without_fitting_dec(monkeypatch):
    from stylecluster.cluster.dec import DECClustering

    def no_dec(*args, **kwargs):
        raise AssertionError("DEC was fitted while selecting k")

    monkeypatch.setattr(DECClustering, "fit", no_dec)
    X, _ = _square_blobs()
    assert select_k("dec", X, k_values=range(2, 8)).k == 4


def test_select_k_auto_criterion_depends_on_the_method():
    X, _ = _blobs(n=200, centers=3, seed=7)
    assert select_k("bgmm", X, k_values=[2, 3, 4]).criterion == "bic"
    assert select_k("kmeans", X, k_values=[2, 3, 4]).criterion == "silhouette"
    with pytest.raises(ValueError, match="infers"):
        select_k("hdbscan", X)


# --- the fitted pipeline on real stores ----------------------------------------------------

def _write_store(path: Path, X: np.ndarray, prefix: str) -> None:
    half = X.shape[1] // 2
    writer = StoreWriter(path, branches={"global": {"backbone": "synthetic"}}, dims={"global": X.shape[1]}, parts={"global": {"a": (0, half), "b": (half, X.shape[1])}})
    for i, row in enumerate(X):
        writer.add(f"{prefix}{i:04d}.png", sha256=f"{prefix}{i}", width=64, height=64, vectors={"global": row})
    writer.close()


@pytest.fixture(scope="module")
def blob_stores(tmp_path_factory):
    X, y = _blobs(n=360, n_features=16, centers=4, seed=8)
    X = X + 30.0  # positive, away from the origin: L2-normalisation in the fuser keeps the blobs apart
    root = tmp_path_factory.mktemp("stores")
    _write_store(root / "fit.store", X[:300], "fit/")
    _write_store(root / "new.store", X[300:], "new/")
    return load_store(root / "fit.store"), load_store(root / "new.store"), y[:300], y[300:]


@pytest.mark.parametrize("method", METHODS)
def test_pipeline_save_load_and_assign(method, blob_stores, tmp_path):
    fit_store, new_store, y_fit, y_new = blob_stores
    k = {"hdbscan": None, "bgmm": None}.get(method, 4)  # BGMM infers k below its default bound
    config = ClusterConfig(method=method, k=k, params=FAST.get(method, {}))
    clustering = StyleClustering(config, FuseConfig(pca_components=8)).fit(fit_store)
    assert normalized_mutual_info_score(y_fit, clustering.labels_) > 0.95

    clustering.save(tmp_path / "model.npz")
    loaded = StyleClustering.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.labels_, clustering.labels_)
    assert loaded.to_frame().equals(clustering.to_frame())

    again = loaded.predict_store(fit_store)
    assert list(again.columns) == ["path", "cluster", "probability"] and list(again["path"]) == clustering.paths_
    assert np.mean(again["cluster"].to_numpy() == clustering.labels_) > 0.99
    new = loaded.predict_store(new_store)
    assert normalized_mutual_info_score(y_new, new["cluster"]) > 0.95
    assert new["probability"].between(0, 1).all()


def test_pipeline_k_auto_and_tables(blob_stores):
    fit_store, _, y_fit, _ = blob_stores
    clustering = StyleClustering(ClusterConfig(method="agglomerative", k="auto"), FuseConfig(pca_components=8)).fit(fit_store)
    assert clustering.k_selection_.k == 4 and clustering.n_clusters_ == 4
    assert clustering.summary()["k_selection"]["criterion"] == "silhouette"
    leaves = clustering.tables()["tree_leaves"]
    assert set(leaves["path"]) == set(fit_store.paths)
    # k="auto" is what HDBSCAN does anyway
    assert StyleClustering(ClusterConfig(method="hdbscan", k="auto"), FuseConfig(pca_components=8)).fit(fit_store).k_selection_ is None


def test_stability_separates_structure_from_noise(blob_stores):
    fit_store, *_ = blob_stores
    stable = stability(fit_store, ClusterConfig(method="kmeans", k=4), FuseConfig(pca_components=8), runs=3, mode="subsample")
    assert stable.ari.shape == (3, 3) and stable.mean_ari > 0.95 and stable.n_clusters == [4, 4, 4]

    rng = np.random.default_rng(0)
    noise = _NoiseStore(rng.uniform(size=(300, 16)).astype(np.float32))
    unstable = stability(noise, ClusterConfig(method="kmeans", k=6), FuseConfig(pca_components=8), runs=3, mode="subsample")
    assert unstable.mean_ari < 0.9
    assert unstable.to_dict()["runs"] == 3


class _NoiseStore:
    """Duck-typed store of uniform noise (no clusters to find)."""

    def __init__(self, X):
        self._X = X
        self.paths = [f"noise/{i}.png" for i in range(len(X))]

    def vectors(self, column):
        return self._X if column == "global" else None

    def parts(self, column):
        return {"all": (0, self._X.shape[1])}
