"""Embed → cluster → evaluate on wikiart-styles for every clustering method.

    python benchmarks/quality.py                      # all 9,521 images
    python benchmarks/quality.py --per-style 100      # a stratified subset
    python benchmarks/quality.py --store S.store      # reuse (or resume) a store

Prints a table (NMI, ARI, purity, Hungarian accuracy, k found, seconds) and writes
benchmarks/out/quality.json. Methods that need k get the number of styles (11); the others infer it.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from common import OUT, WIKIART, print_table, stratified_labels, write_json

from stylecluster import Config, load_config, load_store
from stylecluster.cluster import StyleClustering, available_methods
from stylecluster.cluster.base import method_class
from stylecluster.data.discovery import read_path_list
from stylecluster.evaluate import evaluate_clusters
from stylecluster.features.embedder import embed_images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=WIKIART, help="folder with images/ and labels.csv")
    parser.add_argument("--label-column", default="style")
    parser.add_argument("--per-style", type=int, help="images per label (default: all)")
    parser.add_argument("--store", type=Path, help="store to create or resume (default: benchmarks/out/quality-<n>.store)")
    parser.add_argument("--config", help="YAML config for embedding and fusion")
    parser.add_argument("--methods", nargs="*", help=f"default: all ({', '.join(available_methods())})")
    parser.add_argument("--local-weight", type=float, help="override fuse.local_weight")
    parser.add_argument("--json", default="quality.json", help="file name under benchmarks/out/")
    args = parser.parse_args()
    if not (args.data / "labels.csv").is_file():
        print(f"no labels.csv in {args.data}: the shared data is needed for this benchmark", file=sys.stderr)
        return 2

    config: Config = load_config(args.config)
    if args.local_weight is not None:
        config.fuse.local_weight = args.local_weight
    labels = stratified_labels(args.data / "labels.csv", args.label_column, args.per_style)
    OUT.mkdir(parents=True, exist_ok=True)
    list_file = OUT / f"quality-list-{len(labels)}.csv"
    labels[["path"]].to_csv(list_file, index=False)
    store_path = args.store or OUT / f"quality-{len(labels)}.store"

    start = time.time()
    report = embed_images(read_path_list(list_file, args.data), args.data, store_path, config)
    embed_seconds = time.time() - start
    store = load_store(store_path)
    n_labels = labels[args.label_column].nunique()

    rows = []
    for method in args.methods or available_methods():
        config.cluster.method = method
        config.cluster.k = n_labels if method_class(method).k_meaning == "exact" else None
        start = time.time()
        clustering = StyleClustering(config.cluster, config.fuse).fit(store)
        seconds = time.time() - start
        result = evaluate_clusters(clustering.to_frame(), labels[["path", args.label_column]], args.label_column)
        rows.append({
            "method": method, "k_given": config.cluster.k, "k_found": result["n_clusters"], "nmi": result["nmi"], "ari": result["ari"],
            "purity": result["purity"], "accuracy": result["accuracy"], "outliers": result["outlier_share"], "seconds": round(seconds, 1),
        })
        print_table(rows[-1:], list(rows[-1]))
    print()
    print(f"{len(store)} images, {n_labels} labels ({args.label_column}); embedding {embed_seconds:.0f} s "
          f"({report.embedded} newly embedded); peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print_table(rows, ["method", "k_given", "k_found", "nmi", "ari", "purity", "accuracy", "outliers", "seconds"])
    path = write_json(args.json, {
        "data": str(args.data), "n_images": len(store), "label_column": args.label_column, "per_style": args.per_style,
        "config": config.to_dict(), "embed_seconds": embed_seconds, "store_metadata": store.metadata["branches"], "results": rows,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
