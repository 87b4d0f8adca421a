"""A hundred thousand to ten million images: seconds and peak memory of every step after embedding.

    python benchmarks/scale.py                          # 100k rows
    nice -n 10 python benchmarks/scale.py --rows 100000 1000000
    OMP_NUM_THREADS=1 python benchmarks/scale.py --rows 1000000 10000000 --methods bgmm kmeans --ray --no-similar --no-fuse
    python benchmarks/scale.py --rows 20000 --methods bgmm kmeans --keep   # a quick look
    python benchmarks/scale.py --rows 1000000 --work W --reuse --methods hdbscan   # again, same store
    python benchmarks/scale.py --rows 1000000 --work W --reuse-source --methods bgmm   # import again, same source

For each size a seeded Gaussian mixture (``CLUSTERS`` components, so the clusters can be found
again: the table gives each clustering's ARI against them) is written as a Parquet file of
``path`` + ``vector`` and turned into a store shaped like the default ``embed`` output: the global
branch's 256-d style vector and the local branch's 64-d codes; fusion with the default local
weight (0) reads the global part alone and makes it 64 dimensions, as ``cluster`` does by default
(the 1M numbers in RESULTS.md were measured with a 128-d global part at local weight 0.5: 128
fused dimensions). Then every step runs in its own process, so each has its own peak RSS
(``os.wait4``); ``seconds`` is the whole process (Python, torch and stylecluster imports: 5-15 s
on a busy machine), ``step_s`` the step's own work:

* ``import``   Parquet → store with ``stylecluster.importer.import_vectors`` (``import_s``);
* ``layout``   the two-branch store the other steps read (:func:`layout_store`; set-up, not a
               product step);
* ``fuse``     fit the fusion on the store and fuse every row;
* ``cluster``  ``StyleClustering.fit`` + ``write`` per method, as ``stylecluster cluster`` does
               (fusion included; ``fit_s`` is the method alone); k-means also with scikit-learn,
               to keep the measurement behind the faiss choice;
* ``assign``   load the saved model and assign every image of the store (``stylecluster assign``);
               for cluster and assign ``own_peak_mb`` is the process's peak before the step scores
               its result (ARI against the planted truth, labels against the fit's), which at 10M
               holds memory of its own (~0.1 GB), so it is the figure for the product's memory;
* ``similar``  ``StyleIndex`` build time and per-query latency (median, p95 of 50 queries);
* ``map``, ``ray``: measured by benchmarks/scale_map.py and benchmarks/ray_scaling.py; their rows
               here run those scripts (defaults) with ``--with-others`` when they exist.

Writes benchmarks/out/scale.json. Run it with ``OMP_NUM_THREADS=1`` on a shared machine (the
steps inherit the environment); the JSON records the environment and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, print_table, wait_measured, write_json  # noqa: E402

CLUSTERS = 20
GLOBAL_DIM, LOCAL_DIM = 256, 64
BATCH = 65_536
#: name → (registered method, its parameters)
VARIANTS = {
    "bgmm": ("bgmm", {}),
    "hdbscan": ("hdbscan", {}),
    "kmeans": ("kmeans", {}),
    "kmeans-sklearn": ("kmeans", {"engine": "sklearn"}),
    "agglomerative": ("agglomerative", {}),
    "dec": ("dec", {}),
}


# ---------------------------------------------------------------- steps (each in its own process)

def make_source(work: Path, rows: int, seed: int = 0) -> dict:
    """``source.parquet`` (path, vector: GLOBAL_DIM + LOCAL_DIM float32) and ``truth.npy`` (component of each row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = GLOBAL_DIM + LOCAL_DIM
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
    truth = rng.integers(0, CLUSTERS, size=rows)
    schema = pa.schema([("path", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(work / "source.parquet", schema) as writer:
        for start in range(0, rows, BATCH):
            labels = truth[start : start + BATCH]
            noise = np.random.default_rng([seed, start]).standard_normal((len(labels), dim), dtype=np.float32)
            vectors = centers[labels] + 0.6 * noise
            paths = pa.array([f"synthetic/{i:07d}.jpg" for i in range(start, start + len(labels))])
            writer.write_table(pa.table({"path": paths, "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)}, schema=schema))
    np.save(work / "truth.npy", truth)
    return {"rows": rows, "dim": dim}


def import_source(source: Path, out: Path) -> dict:
    """The import step: ``stylecluster import`` of the Parquet file into ``imported.store`` beside
    ``out`` (float16 from a million rows, as ``--dtype auto`` decides)."""
    from stylecluster.importer import import_vectors

    start = time.perf_counter()
    report = import_vectors(source, out.parent / "imported.store", overwrite=True)
    return {"import_s": time.perf_counter() - start, "rows_stored": report.rows_stored}


def layout_store(source: Path, out: Path, rows: int) -> dict:
    """The store the other steps read, in the default embed layout (global 256-d style part,
    local 64-d codes; the importer keeps one vector per image, which fusion would make one 64-d
    block), in the dtype ``auto`` picks for ``rows``: the benchmark's own set-up, not a product step."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stylecluster.store import StoreWriter, resolve_dtype

    start = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)  # a writer resumes a store that is there: a second layout would add every row again
    dtype = resolve_dtype("auto", rows)
    writer = StoreWriter(
        out,
        branches={"global": {"synthetic": "scale benchmark"}, "local": {"synthetic": "scale benchmark"}},
        dims={"global": GLOBAL_DIM, "local": LOCAL_DIM},
        parts={"global": {"style": (0, GLOBAL_DIM)}, "local": {"local": (0, LOCAL_DIM)}},
        chunk_size=16_384, checkpoint_rows=16_384, checkpoint_seconds=float("inf"), vector_dtype=dtype,
    )
    try:
        # pre_buffer off: with it, Arrow kept the read ranges of the whole 13 GB source (12 GB RSS at 10M)
        for batch in pq.ParquetFile(source, pre_buffer=False).iter_batches(batch_size=BATCH):
            vectors = batch.column("vector").flatten().to_numpy().reshape(batch.num_rows, -1)
            part = lambda a, b: pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors[:, a:b]).ravel()), b - a)  # noqa: E731
            writer.add_table(pa.table({"path": batch.column("path"), "sha256": batch.column("path"), "width": pa.array(np.zeros(batch.num_rows, np.int32)),
                                       "height": pa.array(np.zeros(batch.num_rows, np.int32)), "duplicate_of": pa.nulls(batch.num_rows, pa.string()),
                                       "global": part(0, GLOBAL_DIM), "local": part(GLOBAL_DIM, GLOBAL_DIM + LOCAL_DIM)}))
    finally:
        writer.close()
    return {"layout_s": time.perf_counter() - start, "dtype": dtype}


def fuse(store_path: Path) -> dict:
    """Open the store, fit the fusion on its subsample and fuse every row, a batch at a time."""
    from stylecluster.cluster.fuse import fit_store_fuser, store_batches, store_layout
    from stylecluster.config import FuseConfig
    from stylecluster.store import load_store

    start = time.perf_counter()
    store = load_store(store_path)
    read_s = time.perf_counter() - start
    config = FuseConfig()
    columns, blocks = store_layout(store, local_weight=config.local_weight)
    fuser = fit_store_fuser(store, columns, blocks, config.max_fit_samples, 0, pca_components=config.pca_components, whiten=config.whiten)
    rows = sum(len(fuser.transform(batch)) for batch in store_batches(store, columns))
    return {"read_s": read_s, "fused_dim": int(fuser.n_features_out_), "rows_fused": rows}


def own_peak_mb() -> float | None:
    """This process's peak RSS so far (Linux's VmHWM): the product's work alone, before a step
    scores it; None where /proc is not there."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return None


def cluster(store_path: Path, work: Path, variant: str) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from stylecluster.cluster import StyleClustering
    from stylecluster.config import ClusterConfig
    from stylecluster.store import load_store

    method, params = VARIANTS[variant]
    start = time.perf_counter()
    store = load_store(store_path)
    open_s = time.perf_counter() - start
    clustering = StyleClustering(ClusterConfig(method=method, params=dict(params)))
    start = time.perf_counter()
    clustering.fit(store)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    clustering.write(work / f"clusters-{variant}.csv")
    write_s = time.perf_counter() - start
    peak = own_peak_mb()  # before the scoring below: ten million truth labels and ARI's contingency are the benchmark's
    truth = np.load(work / "truth.npy")
    return {"open_s": open_s, "fit_s": fit_s, "write_s": write_s, "own_peak_mb": peak, "n_clusters": clustering.n_clusters_, "ari": adjusted_rand_score(truth, clustering.labels_),
            "outlier_share": float(np.mean(clustering.labels_ < 0)), "fits_subsample": type(clustering.method_).fits_subsample,
            "engine": getattr(clustering.method_, "engine_", None)}


def assign(store_path: Path, work: Path, variant: str, actors: int = 0) -> dict:
    """``stylecluster assign`` of the whole store: locally (``actors`` 0) or on Ray with that
    many actors; ``running_s`` is from the first assigned batch to the last (Ray's start-up and
    the actors' model loading left out), ``same_as_fit`` the share of labels equal to the fit's."""
    import contextlib

    import pandas as pd

    from stylecluster.cluster import StyleClustering, model_path_for
    from stylecluster.io import save_csv_batches
    from stylecluster.store import load_store

    clustering = StyleClustering.load(model_path_for(work / f"clusters-{variant}.csv"), per_image=False)  # as `assign` loads it
    store = load_store(store_path)
    engine = None
    if actors:
        from stylecluster.cluster.ray_assign import RayAssigner

        engine = RayAssigner(actors=actors, quiet=True)
    times, counts = [], []

    def pieces():
        for piece in clustering.predict_csv(store, engine=engine):
            times.append(time.perf_counter())
            counts.append(piece.rows)
            yield piece

    out = work / f"assigned-{variant}-{actors}.csv"
    start = time.perf_counter()
    with engine or contextlib.nullcontext():
        rows = save_csv_batches(out, pieces(), "path,cluster,probability")
    total = time.perf_counter() - start
    running = times[-1] - times[0] if len(times) > 1 else total
    # rows of the first batch are not in ``running``: rate over the others
    rate = (rows - counts[0]) / running if len(times) > 1 and running > 0 else rows / total
    peak = own_peak_mb()  # before the comparison below, which is the benchmark's
    same = 0  # both CSVs read back a column at a time: the step's peak RSS stays the assignment's
    for assigned, fitted in zip(*(pd.read_csv(f, usecols=["cluster"], chunksize=1_000_000) for f in (out, work / f"clusters-{variant}.csv"))):
        same += int(np.sum(assigned["cluster"].to_numpy() == fitted["cluster"].to_numpy()))
    return {"assign_s": total, "running_s": running, "rows_per_s_running": rate, "same_as_fit": same / max(rows, 1), "actors": actors, "own_peak_mb": peak}


def similar(store_path: Path, work: Path, queries: int = 50) -> dict:
    from stylecluster.store import load_store
    from stylecluster.viz.data import load_explorer
    from stylecluster.viz.similar import StyleIndex

    explorer = load_explorer(load_store(store_path), work / "clusters-bgmm.csv" if (work / "clusters-bgmm.csv").exists() else None)
    start = time.perf_counter()
    index = StyleIndex(explorer)
    build_s = time.perf_counter() - start
    rows = np.random.default_rng(0).choice(len(explorer.fused), size=queries, replace=False)
    latencies = []
    for row in rows:
        start = time.perf_counter()
        index.query(explorer.fused[row], k=12)
        latencies.append(time.perf_counter() - start)
    return {"index_build_s": build_s, "query_ms_median": 1000 * float(np.median(latencies)), "query_ms_p95": 1000 * float(np.percentile(latencies, 95))}


def run_step(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    store = work / "synthetic.store"
    if args.step == "source":
        return make_source(work, args.rows)
    if args.step == "import":
        return import_source(work / "source.parquet", store)
    if args.step == "layout":
        return layout_store(work / "source.parquet", store, args.rows)
    if args.step == "fuse":
        return fuse(store)
    if args.step == "cluster":
        return cluster(store, work, args.variant)
    if args.step == "assign":
        return assign(store, work, args.variant)
    if args.step == "ray-assign":
        return assign(store, work, "bgmm", actors=int(args.variant))
    if args.step == "similar":
        return similar(store, work)
    raise SystemExit(f"unknown step {args.step}")


# ---------------------------------------------------------------- the driver

def in_process(command: list[str], env: dict | None = None, timeout: float = 3600) -> dict:
    """Run a command; its wall seconds, its own peak RSS (os.wait4) and the JSON line it printed last."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        status, usage = wait_measured(process, timeout)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read()
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    row = {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "status": "ok" if process.returncode == 0 else f"failed ({process.returncode})"}
    if process.returncode != 0:
        row["error"] = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    elif lines:
        row.update(json.loads(lines[-1]))
    return row


def step(work: Path, rows: int, name: str, variant: str | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--work", str(work), "--rows", str(rows)]
    if variant:
        command += ["--variant", variant]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    row = {"rows": rows, "step": name if not variant else f"{name} {variant}", **in_process(command, env)}
    print(f"  {row['step']:<24} {row['seconds']:8.1f} s  {row['peak_rss_mb']:7.0f} MB  {row['status']}", flush=True)
    return row


def other_script(name: str, step_name: str, rows: int) -> dict:
    script = ROOT / "benchmarks" / name
    row = {"rows": rows, "step": step_name}
    if not script.exists():
        return {**row, "status": f"not run ({name} absent)"}
    return {**row, **in_process([sys.executable, str(script)])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000])
    parser.add_argument("--methods", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--reuse", action="store_true", help="with --work: keep the source and store made by an earlier run")
    parser.add_argument("--reuse-source", action="store_true", help="with --work: keep the source made by an earlier run, import it again")
    parser.add_argument("--no-similar", dest="similar", action="store_false", help="skip the similar step (benchmarks/similar_scale.py measures search at 10M)")
    parser.add_argument("--no-fuse", dest="fuse", action="store_false", help="skip the fuse-only step (cluster fuses anyway)")
    parser.add_argument("--ray", action="store_true", help="also assign the bgmm clustering on Ray with 1 and 2 actors")
    parser.add_argument("--with-others", action="store_true", help="also run benchmarks/scale_map.py and ray_scaling.py if present")
    parser.add_argument("--out", default="scale.json")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        args.rows = args.rows[0]
        start = time.perf_counter()
        result = run_step(args)
        print(json.dumps({"step_s": time.perf_counter() - start, **result}))
        return 0

    results, load = [], []
    for rows in args.rows:
        work = Path(args.work) / f"rows-{rows}" if args.work else Path(tempfile.mkdtemp(prefix=f"scale-{rows}-"))
        work.mkdir(parents=True, exist_ok=True)
        print(f"{rows} rows in {work}", flush=True)
        try:
            load.append({"rows": rows, "loadavg_before": os.getloadavg()})
            if not (args.reuse and (work / "synthetic.store").is_dir()):
                if not (args.reuse_source and (work / "source.parquet").is_file()):
                    results.append(step(work, rows, "source"))
                results.append(step(work, rows, "import"))
                results.append(step(work, rows, "layout"))
            if args.fuse:
                results.append(step(work, rows, "fuse"))
            for variant in args.methods:
                results.append(step(work, rows, "cluster", variant))
            for variant in args.methods:
                if variant != "kmeans-sklearn":
                    results.append(step(work, rows, "assign", variant))
            if args.ray and "bgmm" in args.methods:
                for actors in (1, 2):
                    results.append(step(work, rows, "ray-assign", str(actors)))
            if args.similar:
                results.append(step(work, rows, "similar"))
            if args.with_others:
                results.append(other_script("scale_map.py", "map", rows))
                results.append(other_script("ray_scaling.py", "ray", rows))
            else:
                results += [{"rows": rows, "step": "map", "status": "benchmarks/scale_map.py"}, {"rows": rows, "step": "ray", "status": "benchmarks/ray_scaling.py"}]
            load[-1]["loadavg_after"] = os.getloadavg()
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)

    columns = ["rows", "step", "seconds", "step_s", "peak_rss_mb", "own_peak_mb", "import_s", "fit_s", "write_s", "n_clusters", "ari", "same_as_fit", "rows_per_s_running",
               "index_build_s", "query_ms_median", "status"]
    print_table(results, columns)
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    path = write_json(args.out, {"clusters": CLUSTERS, "dims": {"global": GLOBAL_DIM, "local": LOCAL_DIM}, "environment": env, "load": load, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
