"""HDBSCAN: clusters as regions of high density; points in none of them are outliers (-1).

HDBSCAN's nearest-neighbour search degrades sharply above a few tens of dimensions, so the fused
vectors are reduced first. The default is the pattern BERTopic and PixPlot use: PCA to
``pca_components`` (cheap, speeds up the neighbour search) then UMAP to ``n_components`` (5–15).
``reduction="pca"`` skips UMAP: fast and deterministic, but on style embeddings a linear
projection shows one dense blob — on wikiart-styles it gave 2 clusters and 44–90 % outliers where
UMAP gave ~24 clusters (see benchmarks/RESULTS.md).

Defaults, from wikiart-styles (9.5k images, 11 styles) and synthetic blobs:

* ``max_cluster_fraction=0.5``: no cluster may hold more than half the images. UMAP leaves the
  bulk of a collection as one or two huge connected regions, and HDBSCAN's excess-of-mass
  selection then returns 2–3 giant clusters (98 % in one); capping their size makes it look
  inside them (18 clusters, NMI 0.38 vs 0.03). The "leaf" selection avoided the giants too but
  shattered clean blobs into fragments.
* ``min_cluster_size`` = 1 % of the images the tree is built on (at least 5), so the number of
  clusters does not grow with the collection; ``min_samples=5`` keeps the outlier share down.
* ``outlier_distance=3``: UMAP joins every image to its nearest neighbours, so an isolated image
  (a scan of a blank page, a photo among paintings) is glued onto some cluster and never becomes
  an outlier. Images whose distance to their ``min_samples``-th neighbour, in the PCA space, is
  more than 3x the median are therefore outliers before UMAP sees them (GLOSH score 1). On
  wikiart-styles the largest ratio was 1.8, so this removes no painting.
* Above ``max_fit_samples`` images, UMAP and HDBSCAN are fitted on a seeded random subsample and
  every other image is assigned like a new one (placed in the UMAP space, then
  ``approximate_predict``): UMAP on 100k images takes minutes here. GLOSH outlier scores and
  membership vectors exist only for the fitted images (``nan`` for the others).

A million images (``benchmarks/scale.py``): the fit on 10,000 stays what it is, the other
990,000 are placed a batch at a time, their neighbours found by faiss and their clusters by a
vectorised ``approximate_predict`` (:func:`approximate_predict`); hdbscan's own loops over the
points in Python (0.14 ms a point) and its ``membership_vector`` (0.5 ms a point) would have
cost 140 s and 530 s at a million.
"""
from __future__ import annotations

import warnings

import hdbscan
import numpy as np
from sklearn.neighbors import NearestNeighbors

from .base import ClusterMethod, distinct_points, register_method, row_batches
from .reduce import make_reducer, subsample
from ..errors import ConfigError, InputError
from ..vectors import import_faiss

REDUCTIONS = ("umap", "pca", "none")


def approximate_predict(clusterer: hdbscan.HDBSCAN, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``hdbscan.approximate_predict`` for many points at once: the same labels and strengths
    (tests/test_cluster_scale.py compares them), with array operations where hdbscan loops over
    the points in Python — 12.5 s of the fit of 100k images here, at 0.14 ms a point.

    Each point joins the fitted point that is its nearest by mutual reachability distance, at
    lambda = 1 / that distance; it belongs to that point's cluster in the condensed tree, walked up
    while the parent cluster still existed at that lambda; its strength is lambda over the
    cluster's largest lambda.
    """
    data = clusterer.prediction_data_
    tree, clusters = clusterer.condensed_tree_._raw_tree, data.cluster_tree
    min_samples = clusterer.min_samples or clusterer.min_cluster_size
    distances, neighbours = data.tree.query(np.asarray(points, dtype=np.float64), k=2 * min_samples)
    reach = np.maximum(np.maximum(data.core_distances[neighbours], distances[:, min_samples : min_samples + 1]), distances)
    nearest_column = reach.argmin(axis=1)
    rows = np.arange(len(points))
    nearest, reach = neighbours[rows, nearest_column], reach[rows, nearest_column]
    lambdas = np.full(len(points), np.finfo(np.double).max)
    np.divide(1.0, reach, out=lambdas, where=reach > 0.0)

    size = int(max(tree["parent"].max(), tree["child"].max())) + 1
    row_of_child = np.zeros(size, dtype=np.int64)
    row_of_child[tree["child"]] = np.arange(len(tree))
    joined = tree[row_of_child[nearest]]
    cluster = joined["parent"].astype(np.int64)
    parent, parent_lambda = np.full(size, -1, dtype=np.int64), np.full(size, -np.inf)
    parent[clusters["child"]], parent_lambda[clusters["child"]] = clusters["parent"], clusters["lambda_val"]
    root = clusters["parent"].min()
    climbing = np.flatnonzero(joined["lambda_val"] > lambdas)
    while len(climbing):
        here = cluster[climbing]
        up = (here > root) & (parent[here] >= 0) & (parent_lambda[here] >= lambdas[climbing])
        cluster[climbing[up]] = parent[here[up]]
        climbing = climbing[up]

    label_of, max_lambda = np.full(size, -1, dtype=np.int64), np.zeros(size)
    label_of[list(data.cluster_map)] = list(data.cluster_map.values())
    max_lambda[list(data.max_lambdas)] = list(data.max_lambdas.values())
    labels, top = label_of[cluster], max_lambda[cluster]
    strengths = np.where(top > 0.0, np.minimum(top, lambdas) / np.where(top > 0.0, top, 1.0), 1.0)
    return labels, np.where(labels >= 0, strengths, 0.0)


def default_min_cluster_size(n: int) -> int:
    """Smallest group worth calling a style: 1 % of the images, at least 5."""
    return max(5, int(round(0.01 * n)))


@register_method("hdbscan")
class HDBSCANClustering(ClusterMethod):
    """HDBSCAN on a low-dimensional reduction of the fused vectors.

    Parameters
    ----------
    min_cluster_size : int or None
        None: :func:`default_min_cluster_size` of the fitted images.
    min_samples : int
        Neighbourhood size of the core distance; smaller means fewer outliers.
    reduction : {"umap", "pca", "none"}
    n_components : int
        Dimensions HDBSCAN sees (5–15 suits it).
    pca_components : int
        PCA dimensions before UMAP.
    umap_neighbors : int
        ``n_neighbors`` of UMAP.
    umap_epochs : int
        UMAP optimisation epochs. UMAP's own default is 500 below 10k points and 200 above;
        200 throughout made fitting 10k points 6x faster here, with the same clusters.
    cluster_selection_method : {"eom", "leaf"}
    cluster_selection_epsilon : float
    max_cluster_fraction : float
        Largest cluster allowed, as a share of the fitted images (0: no limit).
    outlier_distance : float
        Isolation screen before clustering, as a multiple of the median neighbour distance (0: off).
    max_fit_samples : int
        Fit on a random subsample of at most this many points (0: all).
    soft_clustering : bool
        Compute ``membership_vectors_`` (soft membership of every point in every cluster).
    random_state : int
        Seeds PCA, UMAP and the subsample (HDBSCAN itself is deterministic).

    Attributes
    ----------
    labels_, probabilities_ (membership strength; 0 for outliers), n_clusters_,
    outlier_scores_ : GLOSH outlier score (higher = more outlying; 1 for isolated images, nan for
    images assigned after a subsampled fit), membership_vectors_ : (n, n_clusters_) soft
    memberships when ``soft_clustering`` (nan for images assigned after a subsampled fit), fit_rows_ : rows HDBSCAN was fitted on,
    isolated_rows_ : rows the isolation screen removed, min_cluster_size_, reduction_ : the
    reduction used ("pca" instead of "umap" for fewer than ``n_components + 2`` distinct images), pca_ : the
    fitted PCA stage (None when unused), fit_points_ : the fitted rows in the PCA space (new points are
    located by their neighbours among them), embedding_ : the coordinates HDBSCAN clustered (the
    UMAP embedding of ``fit_points_``, or ``fit_points_`` without UMAP), umap_neighbors_ (0
    without UMAP), clusterer_ : the fitted ``hdbscan.HDBSCAN``.

    A saved model keeps ``embedding_`` instead of the fitted tree; the tree is refitted from it
    (HDBSCAN is deterministic) when an assignment first needs it.
    """

    k_meaning = None
    has_proba = True
    fits_subsample = True

    def __init__(
        self,
        min_cluster_size: int | None = None,
        min_samples: int = 5,
        reduction: str = "umap",
        n_components: int = 10,
        pca_components: int = 50,
        umap_neighbors: int = 15,
        umap_epochs: int = 200,
        cluster_selection_method: str = "eom",
        cluster_selection_epsilon: float = 0.0,
        max_cluster_fraction: float = 0.5,
        outlier_distance: float = 3.0,
        max_fit_samples: int = 10_000,
        soft_clustering: bool = True,
        random_state: int = 0,
    ):
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.reduction = reduction
        self.n_components = n_components
        self.pca_components = pca_components
        self.umap_neighbors = umap_neighbors
        self.umap_epochs = umap_epochs
        self.cluster_selection_method = cluster_selection_method
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.max_cluster_fraction = max_cluster_fraction
        self.outlier_distance = outlier_distance
        self.max_fit_samples = max_fit_samples
        self.soft_clustering = soft_clustering
        self.random_state = random_state

    def _fit_reductions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fit the PCA stage, the isolation screen and UMAP: (isolated mask, coordinates HDBSCAN clusters)."""
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        # UMAP's spectral start needs more distinct points than dimensions + 1 (with fewer it
        # failed, or put two groups of identical images all among the outliers); so few need no UMAP.
        few = distinct_points(X, at_least=self.n_components + 2) <= self.n_components + 1
        self.reduction_ = "pca" if self.reduction == "umap" and few else self.reduction
        self.pca_, self.umap_neighbors_ = None, 0
        if self.reduction_ != "none":
            dims = self.pca_components if self.reduction_ == "umap" else self.n_components
            # not whitened: densities live in the fused space's own distances
            self.pca_ = make_reducer(dims, len(X), X.shape[1], whiten=False, random_state=self.random_state).fit(X)
        P = self._project(X)

        isolated = np.zeros(len(P), dtype=bool)
        self.isolation_threshold_ = np.inf
        if self.outlier_distance > 0 and len(P) > self.min_samples + 1:
            core = NearestNeighbors(n_neighbors=self.min_samples + 1).fit(P).kneighbors(P)[0][:, -1]  # first: the point itself
            self.isolation_threshold_ = self.outlier_distance * float(np.median(core))
            isolated = core > self.isolation_threshold_
        inliers = self.fit_points_ = P[~isolated]
        # Exact neighbours of the fitted points: the isolation screen and UMAP placement of new points.
        self.neighbours_ = NearestNeighbors().fit(inliers)
        if self.reduction_ != "umap":
            return isolated, inliers

        import umap  # imported here: numba compilation makes the import slow

        k = min(self.umap_neighbors, len(inliers) - 1)
        # UMAP's own neighbour search (pynndescent) compiled for ~30 s in every new process here;
        # exact neighbours of at most max_fit_samples points take a fraction of a second.
        dists, indices = self.neighbours_.kneighbors(inliers, n_neighbors=k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # no search index: we place new points ourselves
            reducer = umap.UMAP(
                n_components=self.n_components,
                n_neighbors=k,
                min_dist=0.0,  # packed clusters suit density-based clustering
                n_epochs=self.umap_epochs,
                precomputed_knn=(indices, dists, None),
                random_state=self.random_state,
                n_jobs=1,  # a seeded UMAP is only reproducible single-threaded
            ).fit(inliers)
        self.umap_neighbors_ = k
        return isolated, reducer.embedding_

    def _project(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        return np.asarray(X if self.pca_ is None else self.pca_.transform(X), dtype=np.float64)

    def _locate(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New points: (mask of those that pass the isolation screen, their coordinates for HDBSCAN).

        UMAP places a new point where its own ``transform`` starts it — the mean of its fitted
        neighbours' embeddings weighted by their fuzzy membership strengths — without the
        refinement epochs, which move points by a fraction of a cluster's width at a high cost.
        """
        P = self._project(X)
        k_umap = self.umap_neighbors_
        k = min(max(self.min_samples, k_umap), self.neighbours_.n_samples_fit_)
        dists, indices = self._new_point_neighbours(P, k)
        keep = dists[:, min(self.min_samples, k) - 1] <= self.isolation_threshold_
        if not k_umap:
            return keep, P[keep]
        from umap.umap_ import smooth_knn_dist

        dists, indices = dists[keep, :k_umap].astype(np.float32), indices[keep, :k_umap]
        sigmas, rhos = smooth_knn_dist(dists, float(k_umap), local_connectivity=0.0)
        weights = np.exp(-np.maximum(dists - rhos[:, None], 0.0) / sigmas[:, None])
        weights /= weights.sum(axis=1, keepdims=True)
        return keep, np.einsum("nk,nkd->nd", weights, self.embedding_[indices])

    def _new_point_neighbours(self, P: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and rows of the ``k`` nearest fitted points of each new point, exact, by faiss:
        65,536 new points among 10,000 fitted ones in 50 dimensions took 2.7 s against
        scikit-learn's 4.7 s here (same neighbours for 99.997 % of them, distances within 3e-6)."""
        faiss = import_faiss()

        if getattr(self, "faiss_index_", None) is None:
            self.faiss_index_ = faiss.IndexFlatL2(self.fit_points_.shape[1])
            self.faiss_index_.add(np.ascontiguousarray(self.fit_points_, dtype=np.float32))
        squared, indices = self.faiss_index_.search(np.ascontiguousarray(P, dtype=np.float32), k)
        return np.sqrt(np.maximum(squared, 0.0)).astype(np.float64), indices.astype(np.int64)

    def fit(self, X: np.ndarray, y=None) -> "HDBSCANClustering":
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        rows = subsample(n, self.max_fit_samples, self.random_state)
        self.min_cluster_size_ = default_min_cluster_size(len(rows)) if self.min_cluster_size is None else int(self.min_cluster_size)
        if len(rows) < max(self.min_cluster_size_, 2):
            raise InputError(f"hdbscan: a cluster needs at least min_cluster_size={self.min_cluster_size_} images and there are {len(rows)}; "
                             "pass --param min_cluster_size=N with a smaller N, or use another --method")
        isolated, E = self._fit_reductions(X[rows])
        self.embedding_ = np.asarray(E, dtype=np.float64)
        self.fit_rows_, self.isolated_rows_ = rows[~isolated], rows[isolated]
        self.clusterer_ = self._fit_clusterer()
        self.n_clusters_ = int(self.clusterer_.labels_.max() + 1)

        self.labels_ = np.full(n, -1, dtype=np.int64)
        self.probabilities_ = np.zeros(n)
        self.outlier_scores_ = np.full(n, np.nan)
        self.labels_[self.fit_rows_] = self.clusterer_.labels_
        self.probabilities_[self.fit_rows_] = self.clusterer_.probabilities_
        self.outlier_scores_[self.fit_rows_] = self.clusterer_.outlier_scores_
        self.outlier_scores_[self.isolated_rows_] = 1.0
        self.membership_vectors_ = None
        if self.soft_clustering and self.n_clusters_ > 0:
            # nan for the images assigned after a subsampled fit: hdbscan's membership_vector
            # loops over them in Python (48 s of the 128 s the fit of 100k images took here);
            # predict_proba gives theirs when they are wanted
            self.membership_vectors_ = np.full((n, self.n_clusters_), np.nan)
            fitted = hdbscan.all_points_membership_vectors(self.clusterer_)
            self.membership_vectors_[self.fit_rows_] = np.reshape(fitted, (len(self.fit_rows_), self.n_clusters_))
            self.membership_vectors_[self.isolated_rows_] = 0.0
        rest = np.setdiff1d(np.arange(n), rows)
        if len(rest) and self.n_clusters_ > 0:
            for batch in row_batches(len(rest)):
                batch_rows = rest[batch]
                self.labels_[batch_rows], self.probabilities_[batch_rows] = self._assign_located(*self._locate(X[batch_rows]))
        return self

    def _fit_clusterer(self) -> hdbscan.HDBSCAN:
        return hdbscan.HDBSCAN(
            min_cluster_size=self.min_cluster_size_,
            min_samples=min(self.min_samples, self.min_cluster_size_),
            cluster_selection_method=self.cluster_selection_method,
            cluster_selection_epsilon=self.cluster_selection_epsilon,
            max_cluster_size=int(self.max_cluster_fraction * (len(self.fit_rows_) + len(self.isolated_rows_))),
            prediction_data=True,
            core_dist_n_jobs=1,
        ).fit(self.embedding_)

    def _fitted(self) -> hdbscan.HDBSCAN:
        if self.clusterer_ is None:  # loaded from a model file
            self.clusterer_ = self._fit_clusterer()
        return self.clusterer_

    def _saved_state(self) -> dict:
        """Arrays only (:mod:`~stylecluster.cluster.persist`): the tree and the neighbour index
        are rebuilt from ``embedding_`` and ``fit_points_``."""
        return {k: v for k, v in vars(self).items() if k not in ("clusterer_", "neighbours_", "faiss_index_")}

    def _restore_state(self, state: dict) -> None:
        self.__dict__.update(state)
        self.neighbours_ = NearestNeighbors().fit(self.fit_points_)
        self.clusterer_ = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.assign(X)[0]

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (-1: outlier) and membership strengths of new points (``approximate_predict``)."""
        if self.n_clusters_ == 0 or len(X) == 0:
            return np.full(len(X), -1, dtype=np.int64), np.zeros(len(X))
        return super().assign(X)

    def _assign_batch(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._assign_located(*self._locate(X))

    def _assign_located(self, keep: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels, strengths = np.full(len(keep), -1, dtype=np.int64), np.zeros(len(keep))
        if keep.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # hdbscan warns about the data type of X
                labels[keep], strengths[keep] = approximate_predict(self._fitted(), E)
        return labels, strengths

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Soft membership of new points in each cluster (rows sum to the probability of being
        in any cluster, at most 1; 0 for isolated points)."""
        if self.n_clusters_ == 0 or len(X) == 0:
            return np.zeros((len(X), self.n_clusters_))
        return np.concatenate([self._proba_located(*self._locate(X[rows])) for rows in row_batches(len(X))])

    def _proba_located(self, keep: np.ndarray, E: np.ndarray) -> np.ndarray:
        proba = np.zeros((len(keep), self.n_clusters_))
        if keep.any():
            proba[keep] = np.reshape(hdbscan.membership_vector(self._fitted(), E), (int(keep.sum()), self.n_clusters_))
        return proba

    def point_details(self) -> dict[str, np.ndarray]:
        return {"outlier_score": self.outlier_scores_}
