"""A large store, small: fusion fitted on a subsample and applied in batches, methods fitted on a
subsample that label every other row in batches (the thresholds and the batch size are lowered so
that 20k rows exercise what a million rows do; the real sizes: benchmarks/scale.py)."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from stylecluster.cluster import StyleClustering, available_methods, make_clusterer
from stylecluster.cluster import base, fuse
from stylecluster.cluster.base import method_class
from stylecluster.cluster.reduce import subsample
from stylecluster.config import ClusterConfig, FuseConfig
from stylecluster.cluster.persist import ModelFileError
from stylecluster.store import StoreWriter, load_store

ROWS, CLUSTERS = 20_000, 5
FIT = 2_000  # every method's max_fit_samples here
PARAMS = {
    "bgmm": {"max_fit_samples": FIT},
    "hdbscan": {"max_fit_samples": FIT, "reduction": "pca"},  # UMAP's placement is covered by test_cluster_methods
    "agglomerative": {"max_fit_samples": FIT},
    "dec": {"max_fit_samples": FIT, "hidden": (32, 32), "pretrain_steps": 200, "max_steps": 200, "update_interval": 50},
}


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch):
    """Batches of 3,000 rows, so 20k rows take several (and the last one is short)."""
    monkeypatch.setattr(base, "BATCH_ROWS", 3_000)
    monkeypatch.setattr(fuse, "BATCH_ROWS", 3_000)
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, CLUSTERS, ROWS)
    centers = rng.normal(size=(CLUSTERS, 24)).astype(np.float32) * 3
    X = centers[truth] + rng.normal(size=(ROWS, 24)).astype(np.float32)
    path = tmp_path_factory.mktemp("scale") / "big.store"
    writer = StoreWriter(path, branches={"global": {"backbone": "synthetic"}, "local": {"model": "synthetic"}}, dims={"global": 16, "local": 8},
                         parts={"global": {"style": (0, 16)}, "local": {"local": (0, 8)}}, chunk_size=4_096, checkpoint_rows=4_096)
    for i, row in enumerate(X):
        writer.add(f"img/{i:05d}.png", sha256=str(i), width=64, height=64, vectors={"global": row[:16], "local": row[16:]})
    writer.close()
    return load_store(path), X, truth


def test_store_batches_and_rows_are_the_stored_vectors(big_store):
    store, X, _ = big_store
    batches = list(store.iter_vectors(["global", "local"], batch_rows=3_000))
    assert [len(b) for b in batches] == [3_000] * 6 + [2_000]
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.vstack(batches), X)
    rows = np.array([5, 19_999, 0, 7_321])
    np.testing.assert_array_equal(store.take_vectors(["global", "local"], rows), X[rows])


def test_fusion_fitted_on_a_subsample_fuses_every_row_in_batches(big_store):
    store, X, truth = big_store
    clustering = StyleClustering(ClusterConfig(method="kmeans", k=CLUSTERS), FuseConfig(max_fit_samples=5_000))
    Z = clustering._fit_fuser(store)
    assert Z.shape == (ROWS, clustering.fuser_.n_features_out_) and Z.dtype == np.float32
    # batched = all rows at once, and the PCA saw only the 5,000 subsampled rows
    np.testing.assert_allclose(Z, clustering.fuser_.transform(X), rtol=1e-5, atol=1e-5)
    assert clustering.fuser_.pcas_[0].n_samples_ == 5_000


@pytest.mark.parametrize("method", [m for m in available_methods() if method_class(m).fits_subsample])
def test_subsampled_fit_labels_every_row_as_assign_does(big_store, method):
    store, _, truth = big_store
    clustering = StyleClustering(ClusterConfig(method=method, k=None if method == "hdbscan" else CLUSTERS, params=PARAMS[method]),
                                 FuseConfig(max_fit_samples=5_000)).fit(store)
    fitted = clustering.method_
    assert fitted.fits_subsample
    labels, proba = clustering.labels_, clustering.probabilities_
    assert labels.shape == proba.shape == (ROWS,)
    assert np.all(np.isfinite(proba)) and proba.min() >= 0 and proba.max() <= 1 + 1e-9
    assert labels.min() >= -1 and labels.max() == clustering.n_clusters_ - 1
    assert adjusted_rand_score(truth, labels) > 0.9
    # the rows the model was not fitted on are labelled exactly as new images would be
    rest = np.setdiff1d(np.arange(ROWS), subsample(ROWS, FIT, 0))
    Z = clustering.embed(store)
    assigned, assigned_proba = fitted.assign(Z[rest])
    np.testing.assert_array_equal(labels[rest], assigned)
    np.testing.assert_allclose(proba[rest], assigned_proba, rtol=1e-5)  # DEC: float32 encoder, other batch boundaries
    # and assigning the whole store (``stylecluster assign``) gives the fitted labels back for them
    frame = clustering.predict_store(store)
    np.testing.assert_array_equal(frame["cluster"].to_numpy()[rest], labels[rest])


@pytest.mark.parametrize("method", ["bgmm", "dec"])
def test_posterior_methods_label_fitted_rows_by_predict(big_store, method):
    """BGMM and DEC label fitted and assigned rows by the same posterior: labels_ = predict."""
    store, _, _ = big_store
    clustering = StyleClustering(ClusterConfig(method=method, k=CLUSTERS, params=PARAMS[method]), FuseConfig(max_fit_samples=5_000)).fit(store)
    np.testing.assert_array_equal(clustering.labels_, clustering.method_.predict(clustering.embed(store)))


def test_kmeans_engines_find_the_same_clusters():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, 3_000)
    X = (rng.normal(size=(4, 8)) * 6)[truth] + rng.normal(size=(3_000, 8))
    small = make_clusterer("kmeans", k=4).fit(X)
    faiss = make_clusterer("kmeans", k=4, engine="faiss").fit(X)
    assert small.engine_ == "sklearn" and faiss.engine_ == "faiss"  # auto: scikit-learn below 100k points
    assert adjusted_rand_score(truth, faiss.labels_) == pytest.approx(1.0)
    assert adjusted_rand_score(small.labels_, faiss.labels_) == pytest.approx(1.0)
    np.testing.assert_array_equal(faiss.labels_, faiss.predict(X))


def test_vectorised_approximate_predict_is_hdbscans():
    import hdbscan

    from stylecluster.cluster.hdbscan_ import approximate_predict

    rng = np.random.default_rng(3)
    centers = np.array([[0, 0, 0], [12, 0, 0], [0, 12, 0], [0, 0, 12]], dtype=float)
    X = centers[rng.integers(0, 4, 1_500)] + rng.normal(size=(1_500, 3))
    clusterer = hdbscan.HDBSCAN(min_cluster_size=30, min_samples=5, prediction_data=True).fit(X)
    new = np.vstack([centers[rng.integers(0, 4, 500)] + 1.5 * rng.normal(size=(500, 3)), rng.uniform(-40, 40, size=(50, 3))])
    expected_labels, expected_strengths = hdbscan.approximate_predict(clusterer, new)
    labels, strengths = approximate_predict(clusterer, new)
    assert clusterer.labels_.max() >= 3 and (expected_labels == -1).sum() > 0  # clusters and outliers both tested
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(strengths, expected_strengths, rtol=1e-12)


@pytest.mark.parametrize("method", [m for m in available_methods() if method_class(m).fits_subsample])
def test_the_store_is_never_held_whole_and_the_labels_are_the_one_matrix_fits(big_store, method):
    """``fit`` gives the method only its subsample's fused rows and assigns the others batch by
    batch; the labels are those of the method fitted on the whole fused matrix at once."""
    store, _, _ = big_store
    config = ClusterConfig(method=method, k=None if method == "hdbscan" else CLUSTERS, params=PARAMS[method])
    streamed = StyleClustering(config, FuseConfig(max_fit_samples=5_000)).fit(store)
    assert len(streamed.method_.labels_) == FIT  # the method saw its subsample only
    np.testing.assert_array_equal(streamed.fit_rows_, subsample(ROWS, FIT, 0))
    whole = make_clusterer(method, k=config.k, seed=0, **PARAMS[method]).fit(streamed.embed(store))
    if method == "bgmm":  # clusters are the components some image belongs to: counted on the subsample when streamed
        assert set(np.unique(streamed.labels_)) == set(np.unique(whole.labels_))
    np.testing.assert_array_equal(streamed.labels_, whole.labels_)
    np.testing.assert_allclose(streamed.probabilities_, whole.probabilities_, rtol=1e-5, atol=1e-7)
    frame = streamed.to_frame()
    for name, values in whole.point_details().items():  # e.g. HDBSCAN's outlier scores: NaN where not fitted
        np.testing.assert_allclose(frame[name].to_numpy(), np.round(values, 6), equal_nan=True)


def test_a_float16_store_reads_as_float32_within_half_precision(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 12)).astype(np.float32)
    writer = StoreWriter(tmp_path / "half.store", branches={"global": {"backbone": "synthetic"}}, dims={"global": 12},
                         parts={"global": {"style": (0, 12)}}, chunk_size=128, checkpoint_rows=128, vector_dtype="float16")
    for i, row in enumerate(X):
        writer.add(f"img/{i:03d}.png", sha256=str(i), width=8, height=8, vectors={"global": row})
    writer.close()
    store = load_store(tmp_path / "half.store")
    assert store.vector_dtype == "float16" and len(store) == 300
    read = store.vectors("global")
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, X.astype(np.float16).astype(np.float32))  # exactly the rounded values
    assert np.abs(read - X).max() <= np.abs(X).max() * 2**-11  # float16: 11 significant bits
    np.testing.assert_array_equal(np.vstack(list(store.iter_vectors(["global"], batch_rows=100))), read)
    np.testing.assert_array_equal(store.take_vectors(["global"], np.array([299, 0, 128])), read[[299, 0, 128]])


def test_a_path_embedded_twice_is_one_row_the_later_one(tmp_path):
    """Superseded rows are found by Arrow's hash aggregation, across chunks, without reading vectors."""
    writer = StoreWriter(tmp_path / "s", branches={"global": {"backbone": "synthetic"}}, dims={"global": 2},
                         parts={"global": {"style": (0, 2)}}, chunk_size=2, checkpoint_rows=2)
    for path, value in [("a", 1), ("b", 2), ("c", 3), ("a", 4), ("d", 5), ("b", 6), ("e", 7)]:
        writer.add(path, sha256=path + str(value), width=1, height=1, vectors={"global": np.full(2, value, np.float32)})
    writer.close()
    store = load_store(tmp_path / "s")
    assert store.paths == ["c", "a", "d", "b", "e"]
    np.testing.assert_array_equal(store.vectors("global")[:, 0], [3, 4, 5, 6, 7])
    assert store.sha256 == ["c3", "a4", "d5", "b6", "e7"]
    np.testing.assert_array_equal(store.take_vectors(["global"], np.array([3, 0]))[:, 0], [6, 3])
    # chunks [a1 b2] [c3 a4] [d5 b6] [e7]: the first holds no row of the store any more
    assert [(start, table.column("path").to_pylist()) for start, table in store.iter_chunks(["path"])] == [(0, ["c", "a"]), (2, ["d", "b"]), (4, ["e"])]


def test_repeated_paths_are_found_by_hash_and_told_apart_by_text():
    """store.later_rows: FNV-1a hashes (published values: "" is the offset basis, "a" is
    0xaf63dc4c8601ec8c) pick the candidates; only their text decides, so colliding hashes of
    different paths keep every row."""
    from stylecluster import store as store_module

    assert store_module.path_hashes(pa.array(["", "a", "xa"]).slice(1, 1)).tolist() == [0xAF63DC4C8601EC8C]
    assert store_module.path_hashes(pa.array(["", "a"])).tolist() == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C]
    assert store_module.path_hashes(pa.array(["é/ab", "é/ba"], pa.large_string())).tolist()[0] != store_module.path_hashes(pa.array(["é/ba"]))[0]
    def later(values, hashes=None, batch_rows=2):  # batches of 2 candidates: several batches
        paths = pa.array(values)
        return store_module.later_rows(paths, store_module.path_hashes(paths) if hashes is None else np.asarray(hashes, np.uint64), batch_rows)

    assert later(["a", "b", "c", "a", "d", "b"]).tolist() == [2, 3, 4, 5]
    assert later(["a", "b", "a", "a"]).tolist() == [1, 3]
    assert later(["a", "b", "c"]) is None
    # every hash collides: the text decides, also where a colliding path sits between two repeats
    assert later(["a", "b", "c"], hashes=[7, 7, 7]) is None
    assert later(["a", "b", "c", "a", "d", "b"], hashes=[7] * 6).tolist() == [2, 3, 4, 5]
    assert later(["a", "b", "a", "c", "c"], hashes=[1, 1, 1, 2, 2]).tolist() == [1, 2, 4]


def test_a_saved_clustering_keeps_its_paths_packed(tmp_path, big_store):
    store, _, _ = big_store
    clustering = StyleClustering(ClusterConfig(method="kmeans", k=CLUSTERS)).fit(store)
    clustering._paths = pa.array(["ünïcode/é.jpg", "", *store.paths[2:]])
    path = clustering.save(tmp_path / "m.model.npz")
    assert b"img/00005.png" not in zipfile.ZipFile(path).read("state.json")  # not a JSON list of strings
    loaded = StyleClustering.load(path)
    assert loaded.paths_ == clustering.paths_ and loaded.paths_[:3] == ["ünïcode/é.jpg", "", "img/00002.png"]
    # the ends are checked: a path past the bytes, or bytes that are not UTF-8, is one line
    for name, damage in (("_paths.ends", lambda a: a + 5), ("_paths.utf8", lambda a: np.where(np.arange(len(a)) == 0, 0xFF, a))):
        damaged = tmp_path / f"bad-{name}.model.npz"
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
            for info in source.infolist():
                data = source.read(info)
                if info.filename == f"{name}.npy":
                    buffer = io.BytesIO()
                    np.save(buffer, damage(np.load(io.BytesIO(data))))
                    data = buffer.getvalue()
                target.writestr(info, data)
        with pytest.raises(ModelFileError, match=f"{damaged.name}: .*its paths are not readable"):
            StyleClustering.load(damaged)


def test_csv_text_made_elsewhere_writes_the_bytes_of_the_frames(tmp_path):
    """What Ray's actors send (io.CsvText) and DataFrames make the same file; an empty piece
    adds nothing, and with no row at all the file is the header."""
    import pandas as pd

    from stylecluster.cluster.pipeline import assignment_frame
    from stylecluster.io import CsvText, csv_text, save_csv_batches

    frames = [assignment_frame(["a,b.jpg", "c.jpg"], [0, 1], [0.1234567, 1.0]), assignment_frame([], [], []), assignment_frame(["d.jpg"], [-1], [0.5])]
    header = "path,cluster,probability"
    assert save_csv_batches(tmp_path / "frames.csv", iter(frames), header) == 3
    assert save_csv_batches(tmp_path / "text.csv", map(csv_text, frames), header) == 3
    expected = 'path,cluster,probability\n"a,b.jpg",0,0.123457\nc.jpg,1,1.0\nd.jpg,-1,0.5\n'
    assert (tmp_path / "frames.csv").read_text() == (tmp_path / "text.csv").read_text() == expected
    assert save_csv_batches(tmp_path / "none.csv", iter([CsvText("", 0)]), header) == 0
    assert (tmp_path / "none.csv").read_text() == header + "\n"
    assert list(pd.read_csv(tmp_path / "text.csv")["path"]) == ["a,b.jpg", "c.jpg", "d.jpg"]


def test_a_model_loaded_without_its_images_results_places_images_the_same(tmp_path, big_store, monkeypatch):
    """assign and the map load a clustering with per_image=False: the fitted store's paths,
    labels and probabilities are not read from the file, and the images are placed alike."""
    from stylecluster.cluster import persist
    from stylecluster.errors import InputError

    store, _, _ = big_store
    clustering = StyleClustering(ClusterConfig(method="bgmm", k=CLUSTERS, params={"max_fit_samples": FIT})).fit(store)
    path = clustering.save(tmp_path / "m.model.npz")
    read, original = [], persist._read_array
    monkeypatch.setattr(persist, "_read_array", lambda archive, info, where: read.append(info.filename) or original(archive, info, where))
    slim = StyleClustering.load(path, per_image=False)
    assert not {"labels_.npy", "probabilities_.npy", "_paths.utf8.npy", "_paths.ends.npy", "fit_rows_.npy"} & set(read)
    assert "method_.mixture_.means_.npy" in read and not hasattr(slim, "labels_") and not hasattr(slim, "_paths")
    pd_testing = __import__("pandas").testing
    pd_testing.assert_frame_equal(slim.predict_store(store), clustering.predict_store(store))
    with pytest.raises(InputError, match="m.model.npz: loaded without the fitted images' results.*per_image=True"):
        slim.to_frame()
    read.clear()
    assert StyleClustering.load(path).paths_ == store.paths and "labels_.npy" in read


def test_the_explorer_maps_a_big_fused_matrix_from_the_cache(big_store):
    """From ``mapped_from_rows`` images the fused matrix is written once, a batch at a time, to
    the store's visualisation cache and memory-mapped; the next explorer reuses the file."""
    from stylecluster.viz.data import FusionOnly, fused_matrix

    store, _, _ = big_store
    fusion = FusionOnly(FuseConfig(max_fit_samples=5_000)).fit(store)
    mapped = fused_matrix(fusion, store, mapped_from_rows=10_000)
    assert isinstance(mapped, np.memmap) and mapped.shape == (ROWS, fusion.fuser_.n_features_out_)
    np.testing.assert_array_equal(np.asarray(mapped), fusion.embed(store))
    files = list((store.path / "_viz").glob("fused-*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = fused_matrix(fusion, store, mapped_from_rows=10_000)
    assert files[0].stat().st_mtime_ns == stamp and np.array_equal(np.asarray(again), np.asarray(mapped))  # reused, not rewritten
    expected = np.array(mapped)
    del mapped, again  # a mapped file cut short under its map is a bus error; the cache itself is only ever replaced by rename
    files[0].write_bytes(b"not a matrix")  # damaged: written again
    np.testing.assert_array_equal(np.asarray(fused_matrix(fusion, store, mapped_from_rows=10_000)), expected)
    assert isinstance(fused_matrix(fusion, store), np.ndarray) and not isinstance(fused_matrix(fusion, store), np.memmap)  # small: in memory
