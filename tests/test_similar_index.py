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


# ---------------------------------------------------------------- IVF-PQ above pq_limit, built in batches

def planted_groups(groups=2_000, size=10, dim=64, noise=0.01, seed=0):
    """``groups`` random directions with ``size`` near-copies each (row i is in group i // size).
    Within a group cosines are >= ~0.99 (noise 0.01 per dimension on unit centres: |e| ~ 0.08);
    between groups they are ~N(0, 1/64), at most ~0.6 over 2,000 x 2,000 pairs. So the exact top
    10 of every row is its own group, and a shortlist of 10 x 10 rows ranked exactly misses a group
    member only if the codes misplace it by more than that gap of ~0.4 in cosine."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return (np.repeat(centres, size, axis=0) + noise * rng.normal(size=(groups * size, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    fused = planted_groups()
    file = tmp_path_factory.mktemp("planted") / "fused.npy"
    np.save(file, fused)
    return fused, file


def test_planted_groups_are_the_exact_neighbours(planted):
    fused, _ = planted
    rows = np.arange(0, len(fused), 997)
    _, ids = similar.exact_search(fused, similar.unit_rows(fused[rows]), 10, batch_rows=3_000)
    assert (np.sort(ids, axis=1) == (rows // 10 * 10)[:, None] + np.arange(10)).all()


def test_ivfpq_above_the_pq_limit_finds_the_planted_groups(planted, tmp_path):
    fused, file = planted
    explorer = fake_explorer(fused, tmp_path)
    explorer.fused = np.load(file, mmap_mode="r")  # as the explorer holds a million rows and more
    assert isinstance(explorer.fused, np.memmap)
    index = StyleIndex(explorer, cache=tmp_path, flat_limit=1_000, pq_limit=10_000, batch_rows=4_096)
    sidecar = json.loads(index.sidecar.read_text())
    # 20,000 rows: sqrt -> 141 lists, 141 // 16 = 8 probed; 64 dimensions / 2 = 32 one-byte codes a row
    assert sidecar["kind"] == "ivfpq" and sidecar["rows"] == 20_000
    assert sidecar["vectors_sha256"] == similar.hashlib.sha256(similar.unit_rows(fused).data).hexdigest()
    assert sidecar["parameters"] == {"nlist": 141, "nprobe": 8, "pq_subquantizers": 32, "pq_bits": 8, "rerank": 20}
    assert sidecar["recall_at_10"]["queries"] == 100 and sidecar["recall_at_10"]["recall"] >= 0.99
    assert index.index.code_size == 32 and index.index.ntotal == 20_000
    rows = np.arange(5, len(fused), 1_003)
    recall = []
    for row in rows:
        found = index.query(fused[row], k=10)
        recall.append(len(set(found["row"]) & set(range(row // 10 * 10, row // 10 * 10 + 10))) / 10)
        # re-ranked exactly: the similarities are the true cosines, the row itself first
        assert found["row"].iloc[0] == row and found["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
        order, cosine = brute_force(fused, fused[row], 10)
        assert found["similarity"].to_numpy() == pytest.approx(cosine, abs=1e-5)
    assert np.mean(recall) >= 0.99
    in_memory = fake_explorer(fused, tmp_path)  # the same vectors in memory: the same sidecar, so the saved index
    reopened = StyleIndex(in_memory, cache=tmp_path, flat_limit=1_000, pq_limit=10_000)
    assert reopened.reused and reopened.index.nprobe == 8 and reopened.query(fused[77], 10).equals(index.query(fused[77], 10))


def test_batches_give_the_one_shot_index_and_hash(planted):
    faiss = similar.import_faiss()
    fused, file = planted
    unit = similar.unit_rows(fused)
    assert similar.vectors_sha256(np.load(file, mmap_mode="r"), batch_rows=3_001) == similar.hashlib.sha256(unit.data).hexdigest()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # k-means over threads need not add up in the same order
    try:
        one_shot = similar.build_index(fused[:12_000], flat_limit=1_000, pq_limit=10_000, batch_rows=12_000)
        batched = similar.build_index(np.load(file, mmap_mode="r")[:12_000], flat_limit=1_000, pq_limit=10_000, batch_rows=1_000)
    finally:
        faiss.omp_set_num_threads(threads)
    assert isinstance(batched, faiss.IndexIVFPQ)
    assert np.array_equal(faiss.serialize_index(one_shot), faiss.serialize_index(batched))
    flat = [similar.build_index(fused[:5_000], batch_rows=b) for b in (5_000, 999)]
    assert np.array_equal(faiss.serialize_index(flat[0]), faiss.serialize_index(flat[1]))


def test_an_index_saved_before_ivfpq_still_loads(explorer, tmp_path, monkeypatch):
    """An IVF index and sidecar as the code before IVF-PQ wrote them (no parameters, no recall)."""
    faiss = similar.import_faiss()
    unit = similar.unit_rows(explorer.fused)
    old = faiss.IndexIVFFlat(faiss.IndexFlatIP(unit.shape[1]), unit.shape[1], 17, faiss.METRIC_INNER_PRODUCT)
    old.train(unit)
    old.nprobe = 2
    old.add(unit)
    fusion = similar.fusion_sha256(explorer.fusion)
    file = tmp_path / f"similar-{fusion[:16]}.faiss"
    data = faiss.serialize_index(old).tobytes()
    file.write_bytes(data)
    file.with_suffix(".json").write_text(json.dumps({
        "format": similar.INDEX_FORMAT, "format_version": 1, "kind": "ivf", "rows": 300, "dim": unit.shape[1],
        "vectors_sha256": similar.hashlib.sha256(unit.data).hexdigest(), "fusion_sha256": fusion, "store": "",
        "seconds": 0.01, "faiss": faiss.__version__, "built": "2026-11-30T00:00:00+00:00", "index_sha256": similar.hashlib.sha256(data).hexdigest()}))
    monkeypatch.setattr(similar, "build_index", lambda *a, **k: pytest.fail("the saved index was rebuilt"))
    index = StyleIndex(explorer, cache=tmp_path, flat_limit=100)
    assert index.reused and isinstance(index.index, faiss.IndexIVFFlat) and index.index.nprobe == 2
    assert index.query(explorer.fused[42], 3)["row"].iloc[0] == explorer.points["row"].iloc[42]
