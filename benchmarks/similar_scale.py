"""`similar` at a million and ten million rows: index build, memory, query latency and recall@10.

    OMP_NUM_THREADS=1 python benchmarks/similar_scale.py --rows 1000000 10000000
    python benchmarks/similar_scale.py --rows 50000 --kinds ivf ivfpq      # a quick look

For each size, synthetic fused vectors shaped like the default ``cluster`` fusion's output
(64-d float32; a seeded mixture of ``CLUSTERS`` Gaussians, centres N(0, 5) per dimension, each
row its centre plus N(0, 0.6²) noise in every dimension — the fused output of benchmarks/scale.py's
store is its 20 centres in a 19-d subspace plus isotropic noise) are written to ``WORK/vectors-N.npy``
a batch at a time and memory-mapped, so the benchmark never holds the matrix. Each index kind is
then measured in its own process (its peak RSS from ``os.wait4``, which counts the memory map's
pages it has touched; ``anon`` is the peak of the process's own memory, RssAnon sampled every
50 ms, which is what the index and its batches take):

* ``build``   :func:`stylecluster.viz.similar.build_index` over the memory map, batch by batch;
* ``query``   p50 / p90 of :func:`~stylecluster.viz.similar.search_index` for ``QUERIES`` fresh
              draws from the mixture, one query at a time, k = 10 (what ``StyleIndex.query``
              does before it looks up the neighbours' table rows);
* ``recall``  recall@10 of those queries against the exact top 10, found with
              :func:`~stylecluster.viz.similar.exact_search` (faiss ``IndexFlatIP`` over the
              memory map a batch at a time);
* ``sweep``   recall and p50 over the first ``SWEEP_QUERIES`` queries for other nprobe / rerank
              settings of the same index (the measurement behind the defaults).

Prints a table and writes benchmarks/out/similar_scale.json. Run with ``OMP_NUM_THREADS=1`` on a
shared machine (the children inherit it); check ``free -g`` first: the 10M file is 2.56 GB, read
through the page cache.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, print_table, wait_measured, write_json  # noqa: E402

CLUSTERS = 20
DIM = 64
CENTRE_SCALE, NOISE = np.sqrt(5.0), 0.6
WRITE_BATCH = 262_144
QUERIES = 1_000
SWEEP_QUERIES = 200
K = 10


def mixture(rows: int, seed, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), size=rows)
    return centres[labels] + NOISE * rng.standard_normal((rows, centres.shape[1]), dtype=np.float32)


def centres(seed: int = 0) -> np.ndarray:
    return (CENTRE_SCALE * np.random.default_rng(seed).standard_normal((CLUSTERS, DIM))).astype(np.float32)


def write_vectors(path: Path, rows: int, seed: int = 0) -> None:
    """A .npy of ``rows`` x DIM float32 written a batch at a time (plain writes, no memory map)."""
    means = centres(seed)
    part = path.with_suffix(".part")
    with open(part, "wb") as out:
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (rows, DIM)})
        for start in range(0, rows, WRITE_BATCH):
            out.write(mixture(min(WRITE_BATCH, rows - start), [seed, start], means).astype(np.float32).tobytes())
    os.replace(part, path)


class AnonPeak:
    """The peak of this process's RssAnon (its own memory, not the memory map's pages), sampled."""

    def __init__(self, every: float = 0.05):
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    @staticmethod
    def now_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        return 0

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.now_kb())
            time.sleep(every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak_kb, self.now_kb()) / 1024**2


def measure(path: Path, kind: str) -> dict:
    """One index kind over the memory-mapped vectors (runs in its own process)."""
    import resource

    from stylecluster.vectors import unit_rows
    from stylecluster.viz.similar import RERANK, build_index, exact_search, index_parameters, search_index

    vectors = np.load(path, mmap_mode="r")
    n = len(vectors)
    anon = AnonPeak()
    start = time.perf_counter()
    index = build_index(vectors, flat_limit=0 if kind != "flat" else n, pq_limit=0 if kind == "ivfpq" else n)
    build_s = time.perf_counter() - start
    build_anon_gb = anon.stop()
    build_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    anon = AnonPeak()

    import faiss

    index_bytes = faiss.serialize_index(index).size
    queries = unit_rows(mixture(QUERIES, [0, 10**9], centres(0)))  # fresh draws: images outside the store
    cached = path.with_name(f"{path.stem}-exact-top{K}-of-{QUERIES}.npy")  # the same queries every run: found once
    start = time.perf_counter()
    if cached.exists():
        truth, exact_s = np.load(cached), None
    else:
        _, truth = exact_search(vectors, queries, K)
        exact_s = time.perf_counter() - start
        np.save(cached, truth)

    def run(count: int, rerank: int = RERANK) -> tuple[np.ndarray, np.ndarray]:
        latencies, found = [], []
        for query in queries[:count]:
            began = time.perf_counter()
            _, ids = search_index(index, vectors, query[None], K, rerank)
            latencies.append(time.perf_counter() - began)
            found.append(ids[0])
        recall = np.mean([len(np.intersect1d(t, f[f >= 0])) / K for t, f in zip(truth[:count], found)])
        return 1000 * np.asarray(latencies), float(recall)

    latencies, recall = run(QUERIES)
    sweep = []
    if kind != "flat":
        default = index.nprobe
        for divisor in (32, 16, 8):
            index.nprobe = max(1, index.nlist // divisor)
            for rerank in ((5, 10, 20) if kind == "ivfpq" else (RERANK,)):
                ms, swept = run(SWEEP_QUERIES, rerank)
                sweep.append({"nprobe": int(index.nprobe), "rerank": rerank if kind == "ivfpq" else None, "p50_ms": float(np.median(ms)), "recall_at_10": swept})
        index.nprobe = default
    return {
        "rows": n, "kind": kind, "parameters": index_parameters(index), "build_s": build_s,
        "build_peak_rss_gb": build_rss_gb, "build_peak_anon_gb": build_anon_gb, "index_gb": index_bytes / 1e9,
        "query_p50_ms": float(np.median(latencies)), "query_p90_ms": float(np.percentile(latencies, 90)),
        "recall_at_10": recall, "exact_search_s": exact_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, "peak_anon_gb": max(build_anon_gb, anon.stop()),
        "sweep": sweep,
    }


def in_child(path: Path, kind: str, timeout: float) -> dict:
    """:func:`measure` in a fresh process; adds its whole wall seconds and peak RSS (os.wait4)."""
    command = [sys.executable, __file__, "--child", str(path), kind]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    status, usage = wait_measured(process, timeout)
    lines = [line for line in process.stdout.read().splitlines() if line.startswith("{")]
    row = {"rows": int(np.load(path, mmap_mode="r").shape[0]), "kind": kind, "process_s": time.perf_counter() - start,
           "process_peak_rss_gb": usage.ru_maxrss / 1024**2}
    if os.waitstatus_to_exitcode(status) != 0 or not lines:
        return {**row, "status": f"failed ({os.waitstatus_to_exitcode(status)})"}
    return {**row, **json.loads(lines[-1]), "status": "ok"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--kinds", nargs="*", default=None, choices=["flat", "ivf", "ivfpq"],
                        help="index kinds to measure (default: ivf and ivfpq up to 2M rows, ivfpq above)")
    parser.add_argument("--work", type=Path, default=OUT / "similar_scale_work", help="folder of the vector files (kept for reruns)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1])))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    results = []
    for rows in args.rows:
        path = args.work / f"vectors-{rows}.npy"
        if not path.exists():
            start = time.perf_counter()
            write_vectors(path, rows)
            print(f"wrote {path} in {time.perf_counter() - start:.1f} s", flush=True)
        for kind in args.kinds or (["ivf", "ivfpq"] if rows <= 2_000_000 else ["ivfpq"]):
            results.append({**in_child(path, kind, args.timeout), "load_before": os.getloadavg()[0]})
            print(json.dumps({k: v for k, v in results[-1].items() if k != "sweep"}), flush=True)
            write_json("similar_scale.json", {"omp_num_threads": threads, "queries": QUERIES, "k": K, "results": results})
    print(f"\nOMP_NUM_THREADS={threads}; load average now {os.getloadavg()[0]:.1f}")
    print_table(results, ["rows", "kind", "build_s", "build_peak_anon_gb", "build_peak_rss_gb", "index_gb", "query_p50_ms", "query_p90_ms", "recall_at_10", "status"])
    for row in results:
        if row.get("sweep"):
            print(f"\n{row['rows']:,} rows, {row['kind']}: other settings over {SWEEP_QUERIES} queries")
            print_table(row["sweep"], ["nprobe", "rerank", "p50_ms", "recall_at_10"])
    write_json("similar_scale.json", {"omp_num_threads": threads, "queries": QUERIES, "k": K, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
