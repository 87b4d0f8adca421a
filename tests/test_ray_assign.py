"""Assigning on Ray: the fit stays in this process, Ray actors assign every chunk of the store,
and CLUSTERS.csv is the local engine's — on one local Ray, and on a two-node cluster started on
this machine with Ray's own cluster utilities."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from stylecluster.cli import main
from stylecluster.cluster import StyleClustering
from stylecluster.config import ClusterConfig
from stylecluster.store import StoreWriter, load_store

ray = pytest.importorskip("ray")
from stylecluster.cluster.ray_assign import RayAssigner  # noqa: E402

ROWS, FIT = 3_000, 600


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """5 planted clusters in chunks of 500 rows; 50 paths embedded twice (the later row counts),
    so chunks hold rows that are no longer the store's."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, ROWS)
    X = (rng.normal(size=(5, 20)) * 3)[truth] + rng.normal(size=(ROWS, 20))
    path = tmp_path_factory.mktemp("ray-assign") / "s.store"
    writer = StoreWriter(path, branches={"global": {"backbone": "synthetic"}, "local": {"model": "synthetic"}}, dims={"global": 14, "local": 6},
                         parts={"global": {"style": (0, 14)}, "local": {"local": (0, 6)}}, chunk_size=500, checkpoint_rows=500)
    for i, row in enumerate(X.astype(np.float32)):
        writer.add(f"img/{i:05d}.png", sha256=str(i), width=8, height=8, vectors={"global": row[:14], "local": row[14:]})
    for i in range(0, 500, 10):  # re-embedded: same path, other vectors, in a later chunk
        writer.add(f"img/{i:05d}.png", sha256=f"{i}b", width=8, height=8, vectors={"global": X[i + 1, :14].astype(np.float32), "local": X[i + 1, 14:].astype(np.float32)})
    writer.close()
    assert len(load_store(path)) == ROWS
    return path


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("method,params", [("bgmm", {"max_fit_samples": FIT}), ("hdbscan", {"max_fit_samples": FIT, "reduction": "pca"})])
def test_ray_fit_and_assign_equal_the_local_engines(local_ray, store_path, method, params):
    store = load_store(store_path)
    config = ClusterConfig(method=method, k=None if method == "hdbscan" else 8, params=params)
    local = StyleClustering(config).fit(store)
    with RayAssigner(actors=2) as engine:
        distributed = StyleClustering(config).fit(store, engine=engine)
        text = list(local.predict_csv(store, engine=engine))
    assert local.n_clusters_ == distributed.n_clusters_ >= 2
    np.testing.assert_array_equal(distributed.labels_, local.labels_)
    np.testing.assert_allclose(distributed.probabilities_, local.probabilities_, atol=1e-6)
    assert len(text) == len(store.chunks)  # one piece per chunk, formatted on the actors
    assert "".join(piece.text for piece in text) == "".join(piece.text for piece in local.predict_csv(store))
    assigned = pd.read_csv(io.StringIO("".join(piece.text for piece in text)), names=["path", "cluster", "probability"])
    expected = local.predict_store(store)  # for the fitted rows, hdbscan's fit and predict may differ a little
    assert list(assigned["path"]) == list(expected["path"]) == store.paths
    np.testing.assert_array_equal(assigned["cluster"], expected["cluster"])
    np.testing.assert_allclose(assigned["probability"], expected["probability"], atol=1e-6)


def test_cli_assign_on_ray_writes_the_same_csv(local_ray, store_path, tmp_path):
    assert main(["cluster", str(store_path), "--out", str(tmp_path / "c.csv"), "--param", f"max_fit_samples={FIT}", "-q"]) == 0
    assert main(["cluster", str(store_path), "--out", str(tmp_path / "cr.csv"), "--param", f"max_fit_samples={FIT}", "--engine", "ray", "--actors", "2", "-q"]) == 0
    assert (tmp_path / "cr.csv").read_bytes() == (tmp_path / "c.csv").read_bytes()
    model = str(tmp_path / "c.model.npz")
    assert main(["assign", model, str(store_path), "--out", str(tmp_path / "a.csv"), "-q"]) == 0
    assert main(["assign", model, str(store_path), "--out", str(tmp_path / "ar.csv"), "--engine", "ray", "-q"]) == 0
    assert (tmp_path / "ar.csv").read_bytes() == (tmp_path / "a.csv").read_bytes()
    assert len(pd.read_csv(tmp_path / "ar.csv")) == ROWS


def test_actors_and_address_need_the_ray_engine(store_path, tmp_path, capsys):
    assert main(["cluster", str(store_path), "--out", str(tmp_path / "c.csv"), "--actors", "2"]) == 2
    assert "--address and --actors go with --engine ray" in capsys.readouterr().err
    assert main(["cluster", str(store_path), "--out", str(tmp_path / "c.csv"), "--engine", "ray", "--actors", "0"]) == 2
    assert not (tmp_path / "c.csv").exists()


def test_two_nodes_assign_what_one_process_does(store_path, tmp_path):
    """A head and a worker node (one CPU each) started here by ray.cluster_utils: the actors
    spread over both nodes and the result is the local engine's."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        store = load_store(store_path)
        local = StyleClustering(ClusterConfig(method="bgmm", k=8, params={"max_fit_samples": FIT})).fit(store)
        with RayAssigner(actors=2) as engine:
            frames = pd.read_csv(io.StringIO("".join(piece.text for piece in local.predict_csv(store, engine=engine))), names=["path", "cluster", "probability"])
        np.testing.assert_array_equal(frames["cluster"], local.labels_)
        np.testing.assert_allclose(frames["probability"], np.round(local.probabilities_, 6), atol=1e-6)
    finally:
        ray.shutdown()
        cluster.shutdown()
