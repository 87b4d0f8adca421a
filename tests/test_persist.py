"""The model file: arrays + JSON, loaded without running anything, for every cluster method."""
from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from threadpoolctl import threadpool_limits

from stylecluster.cluster import ModelFileError, StyleClustering, model_path_for
from stylecluster.cluster.persist import STATE_FILE, load_model
from stylecluster.config import ClusterConfig, FuseConfig
from stylecluster.store import StoreWriter, load_store

METHODS = ["agglomerative", "bgmm", "dec", "hdbscan", "kmeans"]
FAST = {"dec": {"hidden": (32, 64), "pretrain_steps": 100, "max_steps": 100, "update_interval": 50},
        "hdbscan": {"max_fit_samples": 150}}  # some images placed after a subsampled fit


class Payload:
    """Unpickling this creates ``marker``: the proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_payload(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Payload(marker)))
    return path


def write_store(path, X, prefix="", backbone="synthetic"):
    writer = StoreWriter(path, branches={"global": {"backbone": backbone}}, dims={"global": X.shape[1]}, parts={"global": {"a": (0, X.shape[1])}})
    for i, row in enumerate(X):
        writer.add(f"{prefix}{i:04d}.png", sha256=f"{prefix}{i}", width=64, height=64, vectors={"global": row})
    writer.close()
    return load_store(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    X, _ = make_blobs(n_samples=260, n_features=12, centers=3, random_state=3)
    X = (X + 30.0).astype(np.float32)
    root = tmp_path_factory.mktemp("persist")
    return write_store(root / "fit.store", X[:200]), write_store(root / "new.store", X[200:], "new/")


@pytest.mark.parametrize("method", METHODS)
def test_a_saved_clustering_assigns_exactly_like_the_fitted_one(method, stores, tmp_path):
    fit_store, new_store = stores
    with threadpool_limits(1):
        fitted = StyleClustering(ClusterConfig(method=method, params=FAST.get(method, {})), FuseConfig(pca_components=6)).fit(fit_store)
        path = fitted.save(model_path_for(tmp_path / "clusters.csv"))
        assert path.name == "clusters.model.npz"
        loaded = StyleClustering.load(path)
        assert loaded.to_frame().equals(fitted.to_frame())
        for store in (fit_store, new_store):
            a, b = fitted.predict_store(store), loaded.predict_store(store)
            np.testing.assert_array_equal(a["cluster"], b["cluster"])
            np.testing.assert_allclose(a["probability"], b["probability"], atol=1e-6)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        state = json.loads(archive.read(STATE_FILE))
    assert names[0] == STATE_FILE and all(n.endswith(".npy") for n in names[1:])
    assert state["root"]["__object__"] == "StyleClustering" and state["versions"]["stylecluster"]


def test_an_old_pickled_model_is_refused_with_one_line(tmp_path):
    marker = tmp_path / "ran"
    old = pickle_payload(tmp_path / "clusters.model.joblib", marker)
    with pytest.raises(ModelFileError, match=r"never loaded.*re-run `stylecluster cluster`") as info:
        StyleClustering.load(old)
    assert "\n" not in str(info.value) and not marker.exists()


@pytest.mark.parametrize("content", ["pickle", "zip of a pickle", "text", "empty"])
def test_a_foreign_file_under_the_model_name_runs_nothing(content, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "clusters.model.npz"
    if content == "pickle":
        pickle_payload(path, marker)
    elif content == "zip of a pickle":  # numpy's own .npz of an object array
        np.savez(path, x=np.array([Payload(marker)], dtype=object))
    else:
        path.write_text("" if content == "empty" else "hello")
    with pytest.raises(ModelFileError, match="re-run `stylecluster cluster`") as info:
        load_model(path)
    assert "\n" not in str(info.value) and not marker.exists()


def test_unknown_types_in_the_state_are_refused(stores, tmp_path):
    fitted = StyleClustering(ClusterConfig(method="kmeans", k=3), FuseConfig(pca_components=6)).fit(stores[0])
    path = fitted.save(tmp_path / "m.model.npz")
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    state = json.loads(members[STATE_FILE])
    state["root"]["state"]["fuser_"]["__object__"] = "os.system"
    members[STATE_FILE] = json.dumps(state).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFileError, match="unknown type 'os.system'"):
        load_model(path)


def test_assign_refuses_a_store_embedded_otherwise(stores, tmp_path):
    fit_store, new_store = stores
    fitted = StyleClustering(ClusterConfig(method="kmeans", k=3), FuseConfig(pca_components=6)).fit(fit_store)
    loaded = StyleClustering.load(fitted.save(tmp_path / "m.model.npz"))
    assert len(loaded.predict_store(new_store)) == 60
    other = write_store(tmp_path / "other.store", new_store.global_, backbone="another")
    with pytest.raises(ValueError, match="branches.global.backbone: the clustering's store has 'synthetic', this store has 'another'"):
        loaded.predict_store(other)
