"""Seconds to fit each clustering method (default parameters) on synthetic Gaussian blobs.

    python benchmarks/cluster_speed.py [--sizes 1000 10000 100000] [--dim D] [--methods kmeans dec]

Targets: every method under 60 s at 100k points, DEC under 5 min. Writes
benchmarks/out/cluster_speed.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import make_blobs
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json  # noqa: E402

from stylecluster import Config  # noqa: E402
from stylecluster.cluster import available_methods, make_clusterer  # noqa: E402

TARGET_SECONDS = {"dec": 300.0}
DEFAULT_TARGET = 60.0


def synthetic_points(n: int, dim: int, n_centers: int = 12, seed: int = 0) -> np.ndarray:
    """Gaussian blobs: ``n_centers`` clusters, float32 like the fused matrix."""
    X, _ = make_blobs(n_samples=n, n_features=dim, centers=n_centers, cluster_std=2.0, center_box=(-10, 10), random_state=seed)
    return X.astype(np.float32)


def default_fused_dim() -> int:
    """Dimensionality of the default fused space: one PCA block per global part (the style head's
    one part, else pooled + Gram levels) and one for the local branch when it is enabled."""
    config = Config()
    global_blocks = 1 if config.global_.style_head else 1 + len(config.global_.gram_levels)
    blocks = global_blocks + (1 if config.local.enabled else 0)
    return config.fuse.pca_components * blocks


def time_methods(n_points: list[int], dim: int, seed: int = 0, methods: list[str] | None = None) -> list[dict]:
    """Fit seconds of every method (default parameters and k) for each size in ``n_points``."""
    rows = []
    for n in n_points:
        X = synthetic_points(n, dim, seed=seed)
        for method in methods or available_methods():
            start = time.perf_counter()
            estimator = make_clusterer(method, seed=seed).fit(X)
            seconds = time.perf_counter() - start
            target = TARGET_SECONDS.get(method, DEFAULT_TARGET)
            rows.append(
                {
                    "method": method,
                    "n": n,
                    "dim": dim,
                    "seconds": round(seconds, 2),
                    "n_clusters": int(estimator.n_clusters_),
                    "target_s": target,
                    "meets_target": bool(seconds < target),
                }
            )
            print(f"  {method:14s} n={n:<7d} {seconds:8.2f} s  k={estimator.n_clusters_}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--dim", type=int, default=None, help="default: the default config's fused dimensionality")
    parser.add_argument("--methods", nargs="+", choices=available_methods(), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="cap BLAS/OpenMP threads (default: the libraries' own)")
    args = parser.parse_args()
    dim = args.dim or default_fused_dim()
    print(f"fitting on synthetic blobs, {dim} dimensions, BLAS/OpenMP threads: {args.threads or 'default'}")
    with threadpool_limits(args.threads):
        rows = time_methods(args.sizes, dim, seed=args.seed, methods=args.methods)
    print_table(rows, list(rows[0]))
    path = write_json("cluster_speed.json", {"dim": dim, "threads": args.threads, "rows": rows})
    print(f"wrote {path}")
    return 0 if all(r["meets_target"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
