"""`stylecluster import`: outside embeddings into a store — formats, bad rows, refusals — and every
downstream command on the imported store (cluster, evaluate, plot, report, similar)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_image
from stylecluster.cli import main
from stylecluster.errors import InputError
from stylecluster.importer import IMPORTED_PART, import_vectors, imported_from, path_key
from stylecluster.store import StoreWriter, load_store
from stylecluster.viz.synthetic import make_collection


def write_parquet(path, paths, vectors, vector_type=None):
    pq.write_table(pa.table({"path": pa.array(paths, pa.string()), "vector": pa.array(vectors, vector_type)}), path)
    return path


def test_parquet_rows_and_provenance(tmp_path):
    source = write_parquet(tmp_path / "v.parquet", ["a.jpg", "b/c.jpg"], [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    report = import_vectors(source, tmp_path / "s.store")
    store = load_store(tmp_path / "s.store")
    assert store.paths == ["a.jpg", "b/c.jpg"]
    assert np.array_equal(store.global_, np.array([[1, 2, 3], [0.5, -1, 0]], np.float32))
    assert store.parts("global") == {IMPORTED_PART: (0, 3)} and store.local is None
    assert store.sha256 == [path_key("a.jpg"), path_key("b/c.jpg")]
    record = imported_from(store)
    assert record["source"] == "v.parquet" and record["format"] == "parquet" and record["dim"] == 3
    assert record["source_sha256"] == __import__("hashlib").sha256(source.read_bytes()).hexdigest()
    assert store.metadata["branches"] == {}
    assert (report.rows_read, report.rows_stored, report.dim, report.skipped) == (2, 2, 3, [])


def test_bad_rows_are_named_one_line_each_and_the_rest_imported(tmp_path, caplog):
    paths = ["ok0", "nan", "short", "novector", "", "ok0", "inf", "ok1", None, "big"]
    vectors = [[1, 0, 0], [1, np.nan, 0], [1, 0], None, [0, 1, 0], [0, 0, 1], [np.inf, 0, 0], [0, 1, 1], [1, 1, 1], [1e39, 0, 0]]
    source = write_parquet(tmp_path / "v.parquet", paths, vectors, pa.list_(pa.float64()))
    with caplog.at_level(logging.WARNING, logger="stylecluster"):
        # batches of 3 rows: a duplicate and the dimension are judged across batches
        report = import_vectors(source, tmp_path / "s.store", batch_rows=3, chunk_rows=2)
    store = load_store(tmp_path / "s.store")
    assert store.paths == ["ok0", "ok1"]
    assert np.array_equal(store.global_, np.array([[1, 0, 0], [0, 1, 1]], np.float32))
    expected = {
        1: "NaN, infinite or missing", 2: "2 values, expected 3", 3: "no vector", 4: "empty path",
        5: "already imported from row 0", 6: "NaN, infinite", 8: "empty path", 9: "NaN, infinite",  # 1e39 overflows float32
    }
    assert {row for row, _, _ in report.skipped} == set(expected)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(expected)
    for line, (row, problem) in zip(lines, sorted(expected.items())):
        assert line.startswith(f"v.parquet row {row} ") and problem in line and "\n" not in line
    skipped = pd.read_csv(tmp_path / "s.store" / "_skipped.csv", keep_default_na=False)
    assert len(skipped) == 8 and skipped["reason"].iloc[0] == "row 1: vector has NaN, infinite or missing values (as float32)"


def test_duplicates_are_found_across_many_batches_by_their_path_hashes(tmp_path):
    """The paths seen are kept as sorted runs of 128-bit keys that merge (importer._SeenPaths):
    with batches of 7 rows the 100 paths make many runs and merges, and every repeat names the
    row of its first import, within a batch or across batches."""
    from stylecluster.importer import _SeenPaths

    paths = [f"p{i % 60}.jpg" for i in range(100)]  # rows 60..99 repeat rows 0..39
    source = write_parquet(tmp_path / "v.parquet", paths, [[float(i), 1.0] for i in range(100)])
    report = import_vectors(source, tmp_path / "s.store", batch_rows=7, chunk_rows=16)
    assert load_store(tmp_path / "s.store").paths == paths[:60]
    assert [(row, problem) for row, _, problem in report.skipped] == [(row, f"path already imported from row {row - 60}") for row in range(60, 100)]
    def keys(names):
        return seen.keys([bytes.fromhex(path_key(name)) for name in names])

    seen = _SeenPaths()
    for start in range(0, 60, 7):
        high, low = keys(paths[start : min(start + 7, 60)])
        seen.add(high, low, np.arange(start, min(start + 7, 60)))
    assert [len(run[0]) for run in seen._runs] == [56, 4]  # 8 runs of 7 merged into one; the last batch alone
    high, low = keys(["p3.jpg", "new.jpg", "p59.jpg"])
    assert seen.first_rows(high, low).tolist() == [3, -1, 59]
    # a key whose first 64 bits match but the next 64 do not is not a repeat
    assert seen.first_rows(high[:1], low[:1] + np.uint64(1)).tolist() == [-1]


def test_npy_with_paths_streams_in_batches_into_chunks(tmp_path):
    matrix = np.arange(40, dtype=np.float64).reshape(10, 4) + 1
    np.save(tmp_path / "v.npy", matrix)
    (tmp_path / "paths.txt").write_text("".join(f"img{i}.png\n" for i in range(10)))
    report = import_vectors(tmp_path / "v.npy", tmp_path / "s.store", paths=tmp_path / "paths.txt", batch_rows=3, chunk_rows=4)
    store = load_store(tmp_path / "s.store")
    assert store.paths == [f"img{i}.png" for i in range(10)] and np.array_equal(store.global_, matrix.astype(np.float32))
    # 10 rows in chunks of 4: 4 + 4 + 2, whatever the batches were
    assert [pq.read_metadata(f).num_rows for f in sorted((tmp_path / "s.store").glob("part-*.parquet"))] == [4, 4, 2]
    assert imported_from(store)["paths_file"] == "paths.txt" and report.rows_stored == 10
    np.save(tmp_path / "f.npy", np.asfortranarray(matrix))  # column-major on disk: rows are not contiguous
    import_vectors(tmp_path / "f.npy", tmp_path / "f.store", paths=tmp_path / "paths.txt", batch_rows=3)
    assert np.array_equal(load_store(tmp_path / "f.store").global_, matrix.astype(np.float32))


def test_inputs_that_cannot_be_used(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((3, 2), np.float32))
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match="2 lines, but .* 3 rows"):
        import_vectors(tmp_path / "v.npy", tmp_path / "s.store", paths=tmp_path / "two.txt")
    with pytest.raises(InputError, match="--paths"):
        import_vectors(tmp_path / "v.npy", tmp_path / "s.store")
    pq.write_table(pa.table({"file": ["a"], "vector": [[1.0]]}), tmp_path / "nopath.parquet")
    with pytest.raises(InputError, match="no 'path' column"):
        import_vectors(tmp_path / "nopath.parquet", tmp_path / "s.store")
    write_parquet(tmp_path / "allbad.parquet", ["a", "b"], [[np.nan], [np.inf]])
    with pytest.raises(InputError, match="no usable row"):
        import_vectors(tmp_path / "allbad.parquet", tmp_path / "s.store")
    assert not (tmp_path / "s.store").exists() and not list(tmp_path.glob(".s.store*"))  # nothing left behind


def test_an_existing_store_is_replaced_only_when_asked(tmp_path, capsys):
    first = write_parquet(tmp_path / "one.parquet", ["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    second = write_parquet(tmp_path / "two.parquet", ["c"], [[1.0, 1.0]])
    out = tmp_path / "s.store"
    assert main(["import", str(first), "--out", str(out), "-q"]) == 0
    assert "imported 2 of 2 rows" in capsys.readouterr().out
    assert main(["import", str(second), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert load_store(out).paths == ["a", "b"]
    assert main(["import", str(second), "--out", str(out), "--overwrite", "-q"]) == 0
    assert load_store(out).paths == ["c"] and imported_from(load_store(out))["source"] == "two.parquet"
    writer = StoreWriter(out, branches={}, dims={"global": 2}, parts={"global": {IMPORTED_PART: (0, 2)}})  # an `embed` still writing
    try:
        assert main(["import", str(first), "--out", str(out), "--overwrite", "-q"]) == 2
        assert "another process is writing this store" in capsys.readouterr().err
    finally:
        writer.close()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["import", str(first), "--out", str(foreign), "--overwrite", "-q"]) == 2
    assert "not a stylecluster store" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "keep"


# ----------------------------------------------------------------------------- downstream


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A synthetic collection (3 groups of 30 images, labels) whose vectors are imported from Parquet."""
    tmp = tmp_path_factory.mktemp("imported")
    collection = make_collection(tmp / "collection", n=90, n_clusters=3, dim=16)
    embedded = load_store(collection.store)
    source = write_parquet(tmp / "vectors.parquet", embedded.paths, embedded.global_.tolist())
    out = tmp / "imported.store"
    assert main(["import", str(source), "--out", str(out), "--images-root", str(collection.images), "-q"]) == 0
    return tmp, collection, out


def test_cluster_evaluate_plot_report_similar_on_an_imported_store(imported, capsys):
    tmp, collection, store = imported
    clusters = tmp / "clusters.csv"
    assert main(["cluster", str(store), "--method", "kmeans", "--k", "3", "--out", str(clusters), "-q"]) == 0
    frame = pd.read_csv(clusters)
    truth = pd.read_csv(collection.labels).set_index("path").loc[frame["path"], "style"]
    # well-separated blobs: the three clusters are the three groups
    assert pd.crosstab(frame["cluster"].to_numpy(), truth.to_numpy()).max(axis=1).sum() == 90

    metrics = tmp / "metrics.json"
    assert main(["evaluate", str(clusters), "--labels", str(collection.labels), "--label-column", "style", "--json", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["ari"] == pytest.approx(1.0)

    out = tmp / "map.html"
    assert main(["plot", str(store), "--clusters", str(clusters), "--out", str(out), "-q"]) == 0
    assert "90 images" in capsys.readouterr().out and "data:image/jpeg;base64," in out.read_text()

    report = tmp / "report"
    assert main(["report", str(store), "--clusters", str(clusters), "--labels", str(collection.labels), "--out", str(report), "-q"]) == 0
    assert "3 cluster pages" in capsys.readouterr().out
    assert not (report / "patches").exists() or not any((report / "patches").iterdir())
    assert not (report / "strokes").exists() or not any((report / "strokes").iterdir())
    page = (report / "clusters" / "cluster-0.html").read_text()
    assert "vectors imported from vectors.parquet" in page and "Typical strokes" not in page

    query = frame["path"].iloc[4]
    assert main(["similar", str(store), query, "--k", "3", "--clusters", str(clusters), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["1", "1.000"] and lines[1].endswith(query)


def test_an_outside_image_is_refused_with_one_line(imported, capsys):
    tmp, _, store = imported
    outside = make_image(tmp / "elsewhere.png", noise_seed=5)
    assert main(["similar", str(store), str(outside), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "imported from vectors.parquet" in err[0] and "give a stored path" in err[0]
