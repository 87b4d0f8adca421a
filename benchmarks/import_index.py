"""Importing outside embeddings and the saved `similar` index at 100k and 1M rows.

Steps, each in a new process (so its peak RSS, ``VmHWM``, is its own):

* ``import``: synthetic Parquet (``path`` + fixed-size ``vector`` list) and ``.npy`` + paths files
  of N x 192 float32 Gaussian blobs, imported with :func:`stylecluster.importer.import_vectors`;
  then the time to read the resulting store back (``load_store``);
* ``index``: an imported N x 64 store, opened as an explorer (fusion fitted on it), the
  :class:`~stylecluster.viz.similar.StyleIndex` built and saved, opened again (reused), and
  200 queries of stored vectors timed one by one: ``query`` (what ``similar`` calls: search and
  the neighbours' table) and ``search`` (the faiss search alone).

    nice -n 10 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/import_index.py [--rows 100000 1000000]

Prints a table; writes ``benchmarks/out/import_index.json``. The machine is shared: absolute
seconds move with its load; compare rows of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, print_table, write_json

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def make_inputs(folder: Path, rows: int, dim: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """Parquet, .npy and paths files of ``rows`` vectors in 20 blobs, written in slices."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(20, dim)).astype(np.float32)
    parquet, npy, paths = folder / f"v{rows}x{dim}.parquet", folder / f"v{rows}x{dim}.npy", folder / f"v{rows}x{dim}.txt"
    matrix = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, dim))
    schema = pa.schema([("path", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(parquet, schema) as writer, open(paths, "w") as listing:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            block = centres[rng.integers(0, 20, n)] + rng.normal(0, 1, size=(n, dim)).astype(np.float32)
            names = [f"collection/{i // 1000:04d}/img{i:07d}.jpg" for i in range(start, start + n)]
            matrix[start : start + n] = block
            writer.write_table(pa.table({"path": names, "vector": pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), dim)}, schema=schema))
            listing.write("\n".join(names) + "\n")
    matrix.flush()
    del matrix
    return parquet, npy, paths


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ``getrusage``: on Linux its ``ru_maxrss`` survives ``exec``, so a
    child started by a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_import(source: str, out: str, paths: str | None) -> dict:
    from stylecluster.importer import import_vectors
    from stylecluster.store import load_store

    began = time.perf_counter()
    report = import_vectors(source, out, paths=paths)
    seconds = time.perf_counter() - began
    rss = peak_rss_mb()
    began = time.perf_counter()
    store = load_store(out)
    store.global_
    return {"seconds": seconds, "peak_rss_mb": rss, "rows": report.rows_stored, "read_store_seconds": time.perf_counter() - began,
            "chunks": len(list(Path(out).glob("part-*.parquet")))}


def step_index(source: str, out: str, paths: str | None) -> dict:
    from stylecluster.importer import import_vectors
    from stylecluster.store import load_store
    from stylecluster.viz.data import load_explorer
    from stylecluster.viz.similar import StyleIndex

    import_vectors(source, out, paths=paths)
    began = time.perf_counter()
    explorer = load_explorer(load_store(out), None)
    explorer_seconds = time.perf_counter() - began
    began = time.perf_counter()
    index = StyleIndex(explorer)
    build = time.perf_counter() - began
    assert not index.reused
    began = time.perf_counter()
    again = StyleIndex(explorer)
    reopen = time.perf_counter() - began
    assert again.reused
    rng = np.random.default_rng(1)
    latencies, searches = [], []
    for row in rng.integers(0, len(explorer.points), 200):
        began = time.perf_counter()
        found = again.query(explorer.fused[row], 12)
        latencies.append(time.perf_counter() - began)
        assert found["row"].iloc[0] == row or found["similarity"].iloc[0] >= 0.999999
        query = explorer.fused[row : row + 1] / np.linalg.norm(explorer.fused[row])
        began = time.perf_counter()
        again.index.search(query, 12)
        searches.append(time.perf_counter() - began)
    compared = compare_ivf(explorer.fused, rng.integers(0, len(explorer.points), 200)) if len(explorer.points) >= 100_000 else {}
    return {"kind": json.loads(again.sidecar.read_text())["kind"], **compared, "explorer_seconds": explorer_seconds, "build_and_save_seconds": build, "reopen_seconds": reopen,
            "search_ms_median": 1e3 * float(np.median(searches)), "query_ms_median": 1e3 * float(np.median(latencies)), "query_ms_p90": 1e3 * float(np.percentile(latencies, 90)),
            "peak_rss_mb": peak_rss_mb(), "index_mb": index.file.stat().st_size / 1e6}


def compare_ivf(fused: np.ndarray, rows: np.ndarray) -> dict:
    """The exact (flat) and IVF indexes :func:`~stylecluster.viz.similar.build_index` makes, on the
    same vectors in the same run: build seconds, search latency, and the IVF's recall@12 against the
    exact neighbours by nprobe."""
    from stylecluster.vectors import unit_rows
    from stylecluster.viz.similar import build_index

    vectors = unit_rows(fused)
    began = time.perf_counter()
    flat = build_index(vectors, flat_limit=len(vectors))
    result = {"flat_build_seconds": time.perf_counter() - began}
    began = time.perf_counter()
    ivf = build_index(vectors, flat_limit=0)
    result.update({"ivf_nlist": ivf.nlist, "ivf_build_seconds": time.perf_counter() - began})
    queries = vectors[rows]
    _, exact = flat.search(queries, 12)
    flat_ms = []
    for q in queries[:50]:
        began = time.perf_counter()
        flat.search(q[None], 12)
        flat_ms.append(time.perf_counter() - began)
    result["flat_search_ms"] = 1e3 * float(np.median(flat_ms))
    for nprobe in (ivf.nlist // 32, ivf.nlist // 8, ivf.nlist // 4):
        ivf.nprobe = max(1, nprobe)
        latencies, recall = [], []
        for q, truth in zip(queries, exact):
            began = time.perf_counter()
            _, found = ivf.search(q[None], 12)
            latencies.append(time.perf_counter() - began)
            recall.append(len(set(found[0]) & set(truth)) / 12)
        result[f"ivf_nprobe{ivf.nprobe}_ms"] = 1e3 * float(np.median(latencies))
        result[f"ivf_nprobe{ivf.nprobe}_recall12"] = float(np.mean(recall))
    return result


def run_step(step: str, source: Path, out: Path, paths: Path | None) -> dict:
    command = [sys.executable, __file__, "--step", step, str(source), str(out)] + ([str(paths)] if paths else [])
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--index-only", action="store_true", help="only the similar-index step")
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        step, source, out, *paths = args.step
        print(json.dumps({"import": step_import, "index": step_index}[step](source, out, paths[0] if paths else None)))
        return
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="import_index-") as tmp:
        tmp = Path(tmp)
        for rows in args.rows:
            parquet, npy, paths = make_inputs(tmp, rows, 192) if not args.index_only else (None, None, None)
            for fmt, source, listing in (("parquet", parquet, None), ("npy", npy, paths)) if not args.index_only else ():
                result = run_step("import", source, tmp / f"{fmt}{rows}.store", listing)
                rows_out.append({"step": f"import {fmt}", "rows": rows, "dim": 192, **result})
                print_table(rows_out[-1:], list(rows_out[-1]))
            for f in tmp.iterdir():
                if f.is_file():
                    f.unlink()
            parquet, npy, paths = make_inputs(tmp, rows, 64)
            result = run_step("index", npy, tmp / f"index{rows}.store", paths)
            rows_out.append({"step": "similar index", "rows": rows, "dim": 64, **result})
            print_table(rows_out[-1:], list(rows_out[-1]))
            for f in tmp.iterdir():
                if f.is_file():
                    f.unlink()
    print()
    for step in ("import parquet", "import npy", "similar index"):
        chosen = [r for r in rows_out if r["step"] == step]
        if not chosen:
            continue
        print_table(chosen, list(chosen[0]))
        print()
    print(f"wrote {write_json('import_index_only.json' if args.index_only else 'import_index.json', {'rows': rows_out})}")


if __name__ == "__main__":
    main()
