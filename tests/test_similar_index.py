"""The saved faiss index behind `similar`: exact cosine neighbours, reused when current, rebuilt
when stale or damaged."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from stylecluster.store import load_store
from stylecluster.viz import similar
from stylecluster.viz.data import load_explorer
from stylecluster.viz.similar import StyleIndex
from stylecluster.viz.synthetic import make_collection


def fake_explorer(fused, folder):
    """What StyleIndex reads of an explorer: fused vectors, their points, the store and a fusion."""
    fusion = SimpleNamespace(fuser_=SimpleNamespace(blocks=[], pcas_=[], scales_=[1.0]))
    points = pd.DataFrame({"row": np.arange(len(fused)), "path": [f"p{i}" for i in range(len(fused))]})
    return SimpleNamespace(fused=np.asarray(fused, np.float32), points=points, store=SimpleNamespace(path=folder), fusion=fusion)


def brute_force(fused, query, k):
    unit = fused / np.linalg.norm(fused, axis=1, keepdims=True)
    cosine = unit @ (query / np.linalg.norm(query))
    order = np.argsort(-cosine, kind="stable")[:k]
    return order, cosine[order]


def test_cosine_neighbours_by_hand(tmp_path):
    explorer = fake_explorer([[1, 0], [0, 1], [1, 1], [-1, 0]], tmp_path)
    found = StyleIndex(explorer, cache=tmp_path).query(np.array([2.0, 0.2]), k=3)
    # cos to (1,0) = 2/sqrt(4.04) = 0.995037; to (1,1) = 2.2/(sqrt(4.04)*sqrt(2)) = 0.773957; to (0,1) = 0.2/sqrt(4.04) = 0.099504
    assert found["path"].tolist() == ["p0", "p2", "p1"]
    assert found["rank"].tolist() == [1, 2, 3]
    assert found["similarity"].tolist() == pytest.approx([0.995037, 0.773957, 0.099504], abs=1e-6)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    collection = make_collection(tmp_path_factory.mktemp("index") / "c", n=300, n_clusters=6, dim=24, image_size=(8, 8))
    return load_explorer(load_store(collection.store), collection.clusters)


def test_equals_brute_force_cosine_top_k(explorer, tmp_path):
    index = StyleIndex(explorer, cache=tmp_path)
    rng = np.random.default_rng(0)
    for query in [*explorer.fused[rng.integers(0, 300, 5)], *rng.normal(size=(5, explorer.fused.shape[1]))]:
        found = index.query(query, k=10)
        order, cosine = brute_force(explorer.fused, query, 10)
        assert found["row"].tolist() == explorer.points["row"].to_numpy()[order].tolist()
        assert found["similarity"].to_numpy() == pytest.approx(cosine, abs=1e-5)


def test_saved_index_is_reused_not_rebuilt(explorer, tmp_path, monkeypatch):
    first = StyleIndex(explorer, cache=tmp_path)
    assert not first.reused and first.file.is_file()
    sidecar = json.loads(first.sidecar.read_text())
    assert sidecar["rows"] == 300 and sidecar["kind"] == "flat" and sidecar["fusion_sha256"].startswith(first.file.stem.split("-")[1])
    monkeypatch.setattr(similar, "build_index", lambda *a, **k: pytest.fail("the saved index was rebuilt"))
    second = StyleIndex(explorer, cache=tmp_path)
    assert second.reused and second.index.ntotal == 300
    assert second.query(explorer.fused[7], 5).equals(first.query(explorer.fused[7], 5))


def test_stale_or_damaged_index_is_rebuilt(explorer, tmp_path):
    StyleIndex(explorer, cache=tmp_path)
    # as many rows, in another order: same size, other vectors
    reordered = dataclasses.replace(explorer, fused=explorer.fused[::-1].copy(), points=explorer.points.iloc[::-1])
    index = StyleIndex(reordered, cache=tmp_path)
    assert not index.reused and index.query(explorer.fused[0], 1)["row"].iloc[0] == explorer.points["row"].iloc[0]
    # the same fusion over other rows (e.g. another CLUSTERS.csv): the sidecar no longer matches
    fewer = dataclasses.replace(explorer, fused=explorer.fused[:250], points=explorer.points.iloc[:250])
    rebuilt = StyleIndex(fewer, cache=tmp_path)
    assert not rebuilt.reused and rebuilt.index.ntotal == 250
    assert json.loads(rebuilt.sidecar.read_text())["rows"] == 250
    assert StyleIndex(fewer, cache=tmp_path).reused
    rebuilt.file.write_bytes(b"not a faiss index")
    again = StyleIndex(fewer, cache=tmp_path)
    assert not again.reused and again.query(fewer.fused[3], 1)["row"].iloc[0] == fewer.points["row"].iloc[3]
    again.sidecar.unlink()  # an interrupted save: an index without its sidecar is never trusted
    assert not StyleIndex(fewer, cache=tmp_path).reused


def test_large_collections_get_an_ivf_index(explorer, tmp_path):
    index = StyleIndex(explorer, cache=tmp_path, flat_limit=100)
    assert json.loads(index.sidecar.read_text())["kind"] == "ivf"
    assert index.index.nlist == 17 and index.index.nprobe == 2  # sqrt(300) lists, an eighth of them probed
    reopened = StyleIndex(explorer, cache=tmp_path, flat_limit=100)
    assert reopened.reused and reopened.index.nprobe == 2  # nprobe is saved with the index
    for row in (0, 123, 299):
        found = index.query(explorer.fused[row], 5)
        assert found["row"].iloc[0] == explorer.points["row"].iloc[row] and found["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
