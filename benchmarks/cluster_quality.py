"""Clustering quality on a store of wikiart-styles embeddings, for every method.

    python benchmarks/cluster_quality.py [--store /work/stores/wikiart.store] [--methods bgmm hdbscan]

Each method runs with its defaults: methods that need k get it twice, once as the true number of
styles (an oracle a user does not have) and once as ``k="auto"``; BGMM and HDBSCAN infer it.
HDBSCAN also runs with its UMAP reduction. Writes benchmarks/out/cluster_quality.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WIKIART, print_table, write_json  # noqa: E402

from stylecluster import evaluate_clusters, load_store, read_labels  # noqa: E402
from stylecluster.cluster import StyleClustering, available_methods  # noqa: E402
from stylecluster.cluster.base import method_class  # noqa: E402
from stylecluster.config import ClusterConfig, FuseConfig  # noqa: E402

DEFAULT_STORE = Path("/work/stores/wikiart.store")
# Extra configurations beyond each method's defaults: (method, label, params).
VARIANTS = [("hdbscan", "umap", {"reduction": "umap"})]


def runs_for(method: str, n_labels: int, auto: bool) -> list[tuple[str, int | str | None, dict]]:
    """(label, k, params) of the runs of one method."""
    if method_class(method).k_meaning == "exact":
        runs = [("k=labels", n_labels, {})] + ([("k=auto", "auto", {})] if auto else [])
    else:
        runs = [("default", None, {})]
    return runs + [(label, None, params) for m, label, params in VARIANTS if m == method]


def evaluate_method(store, labels, method: str, k, params: dict, seed: int = 0) -> dict:
    start = time.perf_counter()
    clustering = StyleClustering(ClusterConfig(method=method, k=k, seed=seed, params=params), FuseConfig()).fit(store)
    seconds = time.perf_counter() - start
    result = evaluate_clusters(clustering.to_frame(), labels, "style")
    selection = clustering.k_selection_
    return {
        "k_given": k,
        "k_found": result["n_clusters"],
        "k_criterion": selection.criterion if selection else None,
        "nmi": result["nmi"],
        "ari": result["ari"],
        "purity": result["purity"],
        "accuracy": result["accuracy"],
        "outliers": result["outlier_share"],
        "seconds": round(seconds, 1),
        "n_images": result["n_images"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--labels", type=Path, default=WIKIART / "labels.csv")
    parser.add_argument("--methods", nargs="+", choices=available_methods(), default=None)
    parser.add_argument("--no-auto", action="store_true", help="skip the k=auto runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="cluster_quality.json", help="file name under benchmarks/out/")
    args = parser.parse_args()
    if not args.store.is_dir():
        print(f"no store at {args.store}; embed wikiart-styles first (stylecluster embed ... --out {args.store})")
        return 2
    store = load_store(args.store)
    labels = read_labels(args.labels, "style")
    n_labels = labels["style"].nunique()
    print(f"{store!r}; {n_labels} styles")

    rows = []
    for method in args.methods or available_methods():
        for label, k, params in runs_for(method, n_labels, auto=not args.no_auto):
            row = {"method": method, "run": label, **evaluate_method(store, labels, method, k, params, seed=args.seed)}
            print(f"  {method:14s} {label:9s} k={row['k_found']:<3d} NMI {row['nmi']:.3f}  ARI {row['ari']:.3f}  {row['seconds']:.0f} s", flush=True)
            rows.append(row)
    columns = ["method", "run", "k_given", "k_found", "k_criterion", "nmi", "ari", "purity", "accuracy", "outliers", "seconds"]
    print_table(rows, columns)
    path = write_json(args.out, {"store": str(args.store), "n_styles": int(n_labels), "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
