"""float32 or float16 vectors in a store: what half precision costs the clusters, and saves.

    python benchmarks/store_dtype.py STORE --labels LABELS.csv [--label-column style]

Copies STORE (float32, as ``embed`` writes it) into a float16 store beside it, then for each:
disk size, the seconds to open it and read every vector, and BGMM (k inferred) and k-means
(k = the number of labels) clusterings with the defaults; between the two, the largest relative
error of a stored number, the least cosine between an image's two fused vectors, the ARI between
the clusterings, and each one's NMI against the labels. Prints a table, writes
benchmarks/out/store_dtype.json. Decides ``embed.dtype: auto`` (store.FLOAT16_FROM_ROWS).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402


def half_copy(source, out: Path) -> None:
    from stylecluster.store import StoreWriter, _schema

    meta = source.metadata
    writer = StoreWriter(out, branches=meta["branches"], dims=meta["dims"], parts={c: {k: tuple(v) for k, v in p.items()} for c, p in meta["parts"].items()},
                         images_root=meta.get("images_root"), chunk_size=4_096, checkpoint_rows=4_096, vector_dtype="float16",
                         extra_metadata={k: meta[k] for k in ("runtime",) if k in meta})
    try:
        for _, table in source.iter_chunks(_schema(meta).names):
            writer.add_table(table)
    finally:
        writer.close()


def measure(path: Path, labels, column: str, k: int, seed: int = 0) -> dict:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from stylecluster.cluster import StyleClustering
    from stylecluster.config import ClusterConfig
    from stylecluster.store import load_store

    start = time.perf_counter()
    store = load_store(path)
    vectors = {c: store.vectors(c) for c in ("global", "local") if store.dim(c)}
    read_s = time.perf_counter() - start
    row = {"dtype": store.vector_dtype, "seed": seed, "MB on disk": sum(f.stat().st_size for f in path.glob("part-*.parquet")) / 2**20, "open + read s": read_s}
    truth = labels.set_index("path")[column].reindex(store.paths)
    known = truth.notna().to_numpy()
    out = {"row": row, "vectors": vectors}
    for method, k_value in (("bgmm", None), ("kmeans", k)):
        clustering = StyleClustering(ClusterConfig(method=method, k=k_value, seed=seed)).fit(store)
        out[method] = clustering.labels_
        row[f"{method} k"] = clustering.n_clusters_
        row[f"{method} NMI"] = nmi(truth[known], clustering.labels_[known])
        if method == "bgmm":
            out["fused"] = clustering.embed(store)
    return out


def main() -> int:
    from sklearn.metrics import adjusted_rand_score

    from stylecluster.data.labels import read_labels

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--label-column", default="style")
    parser.add_argument("--out", default="store_dtype.json")
    args = parser.parse_args()
    from stylecluster.store import load_store

    labels = read_labels(args.labels, args.label_column)
    k = labels[args.label_column].nunique()
    work = Path(tempfile.mkdtemp(prefix="store-dtype-"))
    try:
        half_copy(load_store(args.store), work / "half.store")
        full, half = measure(args.store, labels, args.label_column, k), measure(work / "half.store", labels, args.label_column, k)
        other_seed = measure(args.store, labels, args.label_column, k, seed=1)  # what the seed alone moves: the yardstick
    finally:
        shutil.rmtree(work, ignore_errors=True)
    error = max(float(np.max(np.abs(half["vectors"][c] - v)) / max(float(np.max(np.abs(v))), 1e-12)) for c, v in full["vectors"].items())
    a, b = full["fused"], half["fused"]
    cosine = float(np.min(np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)))
    rows = [full["row"], half["row"], other_seed["row"]]
    half["row"].update({"largest relative error": error, "least fused cosine": cosine,
                        "bgmm ARI to float32": adjusted_rand_score(full["bgmm"], half["bgmm"]),
                        "kmeans ARI to float32": adjusted_rand_score(full["kmeans"], half["kmeans"])})
    other_seed["row"].update({"bgmm ARI to float32": adjusted_rand_score(full["bgmm"], other_seed["bgmm"]),
                              "kmeans ARI to float32": adjusted_rand_score(full["kmeans"], other_seed["kmeans"])})
    columns = ["dtype", "seed", "MB on disk", "open + read s", "bgmm k", "bgmm NMI", "kmeans NMI", "largest relative error", "least fused cosine",
               "bgmm ARI to float32", "kmeans ARI to float32"]
    print_table(rows, columns)
    print(f"wrote {write_json(args.out, {'machine': machine(), 'store': str(args.store), 'labels': str(args.labels), 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
