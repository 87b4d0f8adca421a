"""``cluster``, ``assign``, ``stability``, ``evaluate`` and ``demo``: from a store to clusters and scores."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path

from ..errors import InputError
from ..io import save_atomic, save_csv_batches
from ._common import LazyChoices, add_config_options, check_output, config_for, inputs_of

log = logging.getLogger("stylecluster")

METHOD_FLAGS = {"method": "cluster.method", "k": "cluster.k"}


def _parse_param(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param takes NAME=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _k_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k takes a whole number or 'auto', got {text!r}") from None


def _method_names() -> list[str]:
    from ..cluster import available_methods

    return available_methods()


def _add_method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=LazyChoices(_method_names), metavar="METHOD", help="clustering method: %(choices)s (default: bgmm; cluster.method)")
    p.add_argument("--k", type=_k_value, help="number of clusters (kmeans, dec, agglomerative) or its upper bound (bgmm); "
                   "'auto' selects it (BIC for bgmm, silhouette or stability for the others); hdbscan infers it (cluster.k)")
    p.add_argument("--param", action="append", type=_parse_param, default=[], metavar="NAME=VALUE",
                   help="method parameter, repeatable (e.g. --param min_cluster_size=20; cluster.params.NAME)")


def _method_config(args: argparse.Namespace, flags: dict[str, str] = METHOD_FLAGS):
    args.settings[:0] = [(f"cluster.params.{name}", value) for name, value in args.param]
    return config_for(args, flags)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where every image is assigned once the model is fitted here: local (default) or on Ray Data actors, "
                        "on this machine or the cluster at --address (pip install 'stylecluster[ray]')")
    p.add_argument("--address", metavar="ADDR", help="with --engine ray: a running Ray cluster (host:port, or 'auto'); default: start Ray here for the run")
    p.add_argument("--actors", type=int, metavar="N", help="with --engine ray: copies of the model assigning at once (default: one per CPU of the cluster)")


def _engine(args: argparse.Namespace):
    """The Ray assigner (its --address checked before anything is read), or None for local."""
    if args.engine == "ray":
        from ..cluster.ray_assign import RayAssigner

        return RayAssigner(address=args.address, actors=args.actors, quiet=args.quiet)
    if args.address or args.actors:
        raise InputError("--address and --actors go with --engine ray")
    return None


def add_parsers(sub) -> None:
    p = sub.add_parser("cluster", help="cluster a store's images; writes CLUSTERS.csv and the fitted model beside it")
    p.add_argument("store", metavar="STORE")
    _add_method_options(p)
    p.add_argument("--local-weight", type=float, help="weight of the local branch relative to the global one (0 = global only; fuse.local_weight)")
    p.add_argument("--seed", type=int, help="random seed (default 0; cluster.seed)")
    p.add_argument("--out", required=True, metavar="CLUSTERS.csv", help="output CSV: path, cluster, probability")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_engine_options(p)
    add_config_options(p)
    p.set_defaults(func=run_cluster)

    p = sub.add_parser("assign", help="assign the images of another store to an existing clustering")
    p.add_argument("model", metavar="MODEL", help="CLUSTERS.model.npz written by `stylecluster cluster` (or its CLUSTERS.csv)")
    p.add_argument("store", metavar="NEW_STORE", help="store embedded with the same model and configuration")
    p.add_argument("--out", required=True, metavar="NEW_CLUSTERS.csv", help="output CSV: path, cluster, probability")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_engine_options(p)
    add_config_options(p, "unused: the model file holds the clustering's settings")
    p.set_defaults(func=run_assign)

    p = sub.add_parser("stability", help="how reproducible a clustering is: ARI between runs with other seeds or subsamples")
    p.add_argument("store", metavar="STORE")
    _add_method_options(p)
    p.add_argument("--runs", type=int, default=5, help="number of runs (default 5)")
    p.add_argument("--mode", choices=["seed", "subsample"], default="seed", help="vary the seed only, or also fit on random 80%% subsamples")
    p.add_argument("--json", metavar="OUT.json", help="also write the pairwise ARI matrix as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    add_config_options(p, "configs/default.yaml: its cluster and fuse sections")
    p.set_defaults(func=run_stability)

    p = sub.add_parser("evaluate", help="score clusters against reference labels (purity, NMI, ARI, accuracy)")
    p.add_argument("clusters", metavar="CLUSTERS.csv")
    p.add_argument("--labels", required=True, metavar="LABELS.csv", help="CSV with a 'path' column relative to the same images folder")
    p.add_argument("--label-column", default="style", help="label column to score against (default: style)")
    p.add_argument("--json", metavar="OUT.json", help="also write the full result (with per-cluster composition) as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    add_config_options(p, "unused")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("demo", help="embed, cluster and evaluate the built-in sample of 267 CC0 paintings")
    p.add_argument("--out", default="stylecluster-demo", metavar="DIR", help="output folder (default: ./stylecluster-demo)")
    p.add_argument("--device", help="auto (default), cpu or cuda (embed.device)")
    p.add_argument("--workers", type=int, help="decoding processes (default 2; embed.workers)")
    add_config_options(p)
    p.set_defaults(func=run_demo)


def run_cluster(args: argparse.Namespace) -> int:
    from ..cluster import StyleClustering
    from ..cluster.persist import model_path_for
    from ..store import load_store

    config = _method_config(args, {**METHOD_FLAGS, "seed": "cluster.seed", "local_weight": "fuse.local_weight"})
    out = check_output(args.out, args.overwrite, inputs_of(args, "store"))
    check_output(model_path_for(out), args.overwrite, inputs_of(args, "store"))
    engine = _engine(args)
    store = load_store(args.store)
    if len(store) == 0:
        raise InputError(f"{args.store}: the store is empty")
    with engine or contextlib.nullcontext():
        clustering = StyleClustering(config.cluster, config.fuse).fit(store, engine=engine)
    written = clustering.write(out)
    summary = clustering.summary()
    print(f"{summary['method']}: {summary['n_clusters']} cluster{'' if summary['n_clusters'] == 1 else 's'} over {summary['n_images']} images"
          + (f", {summary['outlier_share']:.1%} outliers" if summary["outlier_share"] else "")
          + (f" (k chosen by {summary['k_selection']['criterion']})" if "k_selection" in summary else ""))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_assign(args: argparse.Namespace) -> int:
    from ..cluster import StyleClustering
    from ..cluster.persist import model_path_for
    from ..store import load_store

    model = Path(args.model)
    model = model_path_for(model) if model.suffix == ".csv" else model
    out = check_output(args.out, args.overwrite, [*inputs_of(args, "model", "store"), model])
    engine = _engine(args)
    clustering = StyleClustering.load(model, per_image=False)
    store = load_store(args.store)
    with engine or contextlib.nullcontext():
        assigned = save_csv_batches(out, clustering.predict_csv(store, engine=engine), "path,cluster,probability")
    print(f"assigned {assigned} images to {clustering.n_clusters_} clusters ({clustering.cluster.method}); wrote {out}")
    return 0


def run_stability(args: argparse.Namespace) -> int:
    from ..cluster import stability
    from ..store import load_store

    config = _method_config(args)
    if args.json:
        check_output(Path(args.json), args.overwrite, inputs_of(args, "store"))
    result = stability(load_store(args.store), config.cluster, config.fuse, runs=args.runs, mode=args.mode)
    print(f"{result.method}, {len(result.ari)} runs ({result.mode}): mean ARI {result.mean_ari:.3f} ± {result.std_ari:.3f}; "
          f"clusters per run: {', '.join(map(str, result.n_clusters))}")
    print("ARI near 1: the clusters are a property of the collection; near 0: of the seed.")
    if args.json:
        save_atomic(args.json, json.dumps(result.to_dict(), indent=2))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..data.labels import read_labels
    from ..evaluate import evaluate_clusters, format_table

    if args.json:
        check_output(Path(args.json), args.overwrite, inputs_of(args, "clusters", "labels"))
    clusters = pd.read_csv(args.clusters)
    for column in ("path", "cluster"):
        if column not in clusters.columns:
            raise InputError(f"{args.clusters}: no {column!r} column; is it a stylecluster CLUSTERS.csv?")
    result = evaluate_clusters(clusters, read_labels(args.labels, args.label_column), args.label_column)
    print(format_table(result))
    if result["unmatched_clusters_rows"]:
        log.warning("%d clustered images have no label in %s and were not scored", result["unmatched_clusters_rows"], args.labels)
    if args.json:
        save_atomic(args.json, json.dumps(result, indent=2))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo as demo

    result = demo(Path(args.out), config_for(args, {"device": "embed.device", "workers": "embed.workers"}), quiet=args.quiet)
    print("\n".join(result.lines()))
    return 0
