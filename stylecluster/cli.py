"""Command-line interface: parses arguments, calls the Python API, prints. Nothing else lives here."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from ._version import __version__
from .classify import cli as classify_cli
from .cluster.persist import model_path_for
from .config import Config, load_config
from .io import OutputError, check_writable, printable, save_atomic

log = logging.getLogger("stylecluster")

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit status 2."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="configuration file (see configs/default.yaml); flags override it")
    add_verbosity_options(parser)


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="more detail, including debug messages")
    noise.add_argument("-q", "--quiet", action="store_true", help="no progress bars; only warnings and errors")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def images_folder(path: str | Path) -> Path:
    """The images folder a command reads, or a one-line error when it is not one."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    return root


def _check_output(path: str | Path, overwrite: bool) -> Path:
    """An output file, checked before any work: refused when it exists (without --overwrite) or
    cannot be written (a read-only folder, a file where a folder should be)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{printable(path)} exists; pass --overwrite to replace it or choose another --out")
    check_writable(path)
    return path


# --- embed -------------------------------------------------------------------------------------

def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="compute style embeddings of a folder of images into a store")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder searched recursively for images; stored paths are relative to it")
    p.add_argument("--out", required=True, metavar="STORE", help="store folder to create or resume")
    p.add_argument("--list", metavar="FILE", help="embed only the images named in this CSV (a 'path' column) or TXT (one per line), relative to IMAGES_DIR")
    p.add_argument("--backbone", help="global backbone: a registered name or any timm model name (default: efficientnet_lite0)")
    p.add_argument("--weights", help="weights for the backbone: a file (.pth/.pt/.safetensors), 'hub' or 'hf-hub:ORG/REPO' (online only), or 'random'")
    p.add_argument("--device", help="auto (default: CUDA, then MPS, then CPU), cpu or cuda")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default 32)")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding images (default 2; 0 decodes in the main process)")
    p.add_argument("--max-pixels", type=int, help="skip images with more pixels than this (decompression-bomb guard; default 200,000,000)")
    p.add_argument("--local-model", metavar="PATH", help="local (brush-stroke) branch encoder from `train-local` (default: the one shipped with stylecluster)")
    p.add_argument("--no-local", action="store_true", help="embed the global branch only (no brush-stroke patches)")
    p.add_argument("--overwrite", action="store_true", help="replace a store made with another model or configuration")
    _common(p)
    p.set_defaults(command="embed")


def _run_embed(args: argparse.Namespace) -> int:
    from .data.discovery import discover_images, read_path_list
    from .features.embedder import embed_images

    config = _config(args)
    for flag, section, attr in [
        ("backbone", config.global_, "backbone"),
        ("weights", config.global_, "weights"),
        ("device", config.embed, "device"),
        ("batch_size", config.embed, "batch_size"),
        ("workers", config.embed, "workers"),
        ("max_pixels", config.ingest, "max_pixels"),
        ("local_model", config.local, "model"),
    ]:
        if getattr(args, flag, None) is not None:
            setattr(section, attr, getattr(args, flag))
    if args.no_local:
        config.local.enabled = False
    root = images_folder(args.images_dir)
    paths = read_path_list(args.list, root) if args.list else discover_images(root, config.ingest.follow_symlinks)
    if not paths:
        raise UserError(f"{args.list or root}: no images found (looked for {', '.join(sorted(_image_exts()))})")
    report = embed_images(paths, root, Path(args.out), config, overwrite=args.overwrite, quiet=args.quiet)
    print("\n".join(report.summary_lines()))
    if report.stored_total == 0:
        print("stylecluster: error: nothing could be embedded", file=sys.stderr)
        return 1
    return 0


def _image_exts():
    from .data.discovery import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


# --- cluster -----------------------------------------------------------------------------------

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


def _add_method_options(p: argparse.ArgumentParser) -> None:
    from .cluster import available_methods

    p.add_argument("--method", choices=available_methods(), help="clustering method (default: bgmm)")
    p.add_argument("--k", type=_k_value, help="number of clusters (kmeans, dec, agglomerative) or its upper bound (bgmm); "
                   "'auto' selects it (BIC for bgmm, silhouette or stability for the others); hdbscan infers it")
    p.add_argument("--param", action="append", type=_parse_param, default=[], metavar="NAME=VALUE", help="method parameter, repeatable (e.g. --param min_cluster_size=20)")


def _apply_method_options(config: Config, args: argparse.Namespace) -> None:
    if args.method:
        config.cluster.method = args.method
    if args.k is not None:
        config.cluster.k = args.k
    config.cluster.params.update(dict(args.param))


def _add_cluster(sub) -> None:
    p = sub.add_parser("cluster", help="cluster a store's images; writes CLUSTERS.csv and the fitted model beside it")
    p.add_argument("store", metavar="STORE")
    _add_method_options(p)
    p.add_argument("--local-weight", type=float, help="weight of the local branch relative to the global one (0 = global only)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--out", required=True, metavar="CLUSTERS.csv", help="output CSV: path, cluster, probability")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _common(p)
    p.set_defaults(command="cluster")


def _run_cluster(args: argparse.Namespace) -> int:
    from .cluster import StyleClustering
    from .store import load_store

    config = _config(args)
    _apply_method_options(config, args)
    if args.seed is not None:
        config.cluster.seed = args.seed
    if args.local_weight is not None:
        config.fuse.local_weight = args.local_weight
    out = _check_output(args.out, args.overwrite)
    _check_output(model_path_for(out), args.overwrite)
    store = load_store(args.store)
    if len(store) == 0:
        raise UserError(f"{args.store}: the store is empty")
    clustering = StyleClustering(config.cluster, config.fuse).fit(store)
    frame = clustering.to_frame()
    save_atomic(out, lambda tmp: frame.to_csv(tmp, index=False))
    written = [out, clustering.save(model_path_for(out))]
    for name, table in clustering.tables().items():  # e.g. the agglomerative merge tree
        written.append(save_atomic(out.with_suffix(f".{name}.csv"), lambda tmp: table.to_csv(tmp, index=False)))
    summary = clustering.summary()
    print(f"{summary['method']}: {summary['n_clusters']} cluster{'' if summary['n_clusters'] == 1 else 's'} over {summary['n_images']} images"
          + (f", {summary['outlier_share']:.1%} outliers" if summary["outlier_share"] else "")
          + (f" (k chosen by {summary['k_selection']['criterion']})" if "k_selection" in summary else ""))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# --- assign ------------------------------------------------------------------------------------

def _add_assign(sub) -> None:
    p = sub.add_parser("assign", help="assign the images of another store to an existing clustering")
    p.add_argument("model", metavar="MODEL", help="CLUSTERS.model.npz written by `stylecluster cluster` (or its CLUSTERS.csv)")
    p.add_argument("store", metavar="NEW_STORE", help="store embedded with the same model and configuration")
    p.add_argument("--out", required=True, metavar="NEW_CLUSTERS.csv", help="output CSV: path, cluster, probability")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _common(p)
    p.set_defaults(command="assign")


def _run_assign(args: argparse.Namespace) -> int:
    from .cluster import StyleClustering
    from .store import load_store

    out = _check_output(args.out, args.overwrite)
    model = Path(args.model)
    clustering = StyleClustering.load(model_path_for(model) if model.suffix == ".csv" else model)
    frame = clustering.predict_store(load_store(args.store))
    save_atomic(out, lambda tmp: frame.to_csv(tmp, index=False))
    print(f"assigned {len(frame)} images to {clustering.n_clusters_} clusters ({clustering.cluster.method}); wrote {out}")
    return 0


# --- stability ---------------------------------------------------------------------------------

def _add_stability(sub) -> None:
    p = sub.add_parser("stability", help="how reproducible a clustering is: ARI between runs with other seeds or subsamples")
    p.add_argument("store", metavar="STORE")
    _add_method_options(p)
    p.add_argument("--runs", type=int, default=5, help="number of runs (default 5)")
    p.add_argument("--mode", choices=["seed", "subsample"], default="seed", help="vary the seed only, or also fit on random 80%% subsamples")
    p.add_argument("--json", metavar="OUT.json", help="also write the pairwise ARI matrix as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    _common(p)
    p.set_defaults(command="stability")


def _run_stability(args: argparse.Namespace) -> int:
    from .cluster import stability
    from .store import load_store

    config = _config(args)
    _apply_method_options(config, args)
    if args.json:
        _check_output(Path(args.json), args.overwrite)
    result = stability(load_store(args.store), config.cluster, config.fuse, runs=args.runs, mode=args.mode)
    print(f"{result.method}, {len(result.ari)} runs ({result.mode}): mean ARI {result.mean_ari:.3f} ± {result.std_ari:.3f}; "
          f"clusters per run: {', '.join(map(str, result.n_clusters))}")
    print("ARI near 1: the clusters are a property of the collection; near 0: of the seed.")
    if args.json:
        save_atomic(args.json, json.dumps(result.to_dict(), indent=2))
    return 0


# --- evaluate ----------------------------------------------------------------------------------

def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score clusters against reference labels (purity, NMI, ARI, accuracy)")
    p.add_argument("clusters", metavar="CLUSTERS.csv")
    p.add_argument("--labels", required=True, metavar="LABELS.csv", help="CSV with a 'path' column relative to the same images folder")
    p.add_argument("--label-column", default="style", help="label column to score against (default: style)")
    p.add_argument("--json", metavar="OUT.json", help="also write the full result (with per-cluster composition) as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    _common(p)
    p.set_defaults(command="evaluate")


def _run_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from .evaluate import evaluate_clusters, format_table, read_labels

    if args.json:
        _check_output(Path(args.json), args.overwrite)
    clusters = pd.read_csv(args.clusters)
    for column in ("path", "cluster"):
        if column not in clusters.columns:
            raise UserError(f"{args.clusters}: no {column!r} column; is it a stylecluster CLUSTERS.csv?")
    result = evaluate_clusters(clusters, read_labels(args.labels, args.label_column), args.label_column)
    print(format_table(result))
    if result["unmatched_clusters_rows"]:
        log.warning("%d clustered images have no label in %s and were not scored", result["unmatched_clusters_rows"], args.labels)
    if args.json:
        save_atomic(args.json, json.dumps(result, indent=2))
    return 0


# --- demo --------------------------------------------------------------------------------------

def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="embed, cluster and evaluate the built-in sample of 267 CC0 paintings")
    p.add_argument("--out", default="stylecluster-demo", metavar="DIR", help="output folder (default: ./stylecluster-demo)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--workers", type=int, help="decoding processes (default 2)")
    _common(p)
    p.set_defaults(command="demo")


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    config = _config(args)
    if args.device:
        config.embed.device = args.device
    if args.workers is not None:
        config.embed.workers = args.workers
    result = run_demo(Path(args.out), config, quiet=args.quiet)
    print("\n".join(result.lines()))
    return 0


# --- patches -----------------------------------------------------------------------------------

def _add_patch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patch-scale", choices=["pixels", "relative"], help="patch side in image pixels (default) or as a fraction of the shorter side")
    p.add_argument("--relative-size", type=float, help="patch side / shorter image side with --patch-scale relative (default 0.25)")


def _local_config(args: argparse.Namespace):
    config = _config(args)
    if args.patch_scale:
        config.local.patch_scale = args.patch_scale
    if args.relative_size is not None:
        config.local.relative_size = args.relative_size
    return config


def _add_patches(sub) -> None:
    p = sub.add_parser("patches", help="write an image's brush-stroke patches (gradient-sampled) and their DoG versions as PNGs")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <name>_p<i>_raw.png, <name>_p<i>_dog.png and <name>_patches.json")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: the same image and seed give the same patches (default 0)")
    _add_patch_options(p)
    _common(p)
    p.set_defaults(command="patches")


def _run_patches(args: argparse.Namespace) -> int:
    from .data.decode import BadImage
    from .features.patches import extract_patches_to_dir

    config = _local_config(args)
    check_writable(args.out, folder=True)
    try:
        written = extract_patches_to_dir(args.image, args.out, config.local, seed=args.seed, max_pixels=config.ingest.max_pixels)
    except BadImage as exc:
        raise UserError(f"{args.image}: {exc}") from None
    print(f"wrote {len(written)} patch images to {args.out}")
    return 0


# --- train-local -------------------------------------------------------------------------------

def _add_train_local(sub) -> None:
    p = sub.add_parser("train-local", help="train the local-branch InfoVAE on the top-scoring DoG patches of image folders")
    p.add_argument("images_dirs", nargs="+", metavar="IMAGES_DIR", help="folder(s) searched recursively for images")
    p.add_argument("--out", required=True, metavar="local.pt", help="checkpoint, rewritten after every epoch; rerun the same command to resume")
    p.add_argument("--epochs", type=int, default=5, help="total epochs (default 5)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=128, help="patches per step (default 128)")
    p.add_argument("--workers", type=int, default=2, help="processes extracting patches (default 2; 0 = in this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-scales", nargs="+", choices=["pixels", "relative"], help="patch-scale modes whose patches form the training set (default: the configured one)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if --out holds a checkpoint of the same data")
    p.add_argument("--export", metavar="PATH", help="afterwards also write the encoder alone in fp16 (small; usable as embed --local-model)")
    _add_patch_options(p)
    _common(p)
    p.set_defaults(command="train-local")


def _run_train_local(args: argparse.Namespace) -> int:
    from .features.infovae import export_encoder
    from .train.infovae import train_local

    config = _local_config(args)
    for out in filter(None, (args.out, args.export)):
        check_writable(out)
    history = train_local(
        args.images_dirs, args.out, epochs=args.epochs, device=args.device, config=config.local, patch_scales=args.train_scales,
        batch_size=args.batch_size, seed=args.seed, workers=args.workers, resume=not args.no_resume, progress=not args.quiet,
    )
    for record in history:
        print(f"epoch {record['epoch']}: loss {record['loss']:.1f} (recon {record['recon']:.1f}, kl {record['kl']:.2f}, mmd {record['mmd']:.4f}), {record['seconds']:.0f} s")
    if args.export:
        print(f"wrote encoder {export_encoder(args.out, args.export)}")
    return 0


_COMMANDS.update({"patches": _run_patches, "train-local": _run_train_local})


# --- train-global ------------------------------------------------------------------------------

def _add_train_global(sub) -> None:
    from .train.global_style import available_recipes

    p = sub.add_parser("train-global", help="train the global backbone for style (SimCLR, or CSD-style over artist labels)")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of training images (with --labels: the folder its paths are relative to)")
    p.add_argument("--method", choices=available_recipes(), help="training recipe (default: the config's, else simclr)")
    p.add_argument("--labels", metavar="LABELS.csv", help="train on these rows only ('path' column); csd groups them by the 'artist' column — never by style")
    p.add_argument("--out", required=True, metavar="global.pt", help="checkpoint, rewritten after every epoch; rerun the same command to resume; usable as embed --weights")
    p.add_argument("--config", metavar="YAML", help="training configuration (configs/train_simclr.yaml, configs/train_csd.yaml); flags override it")
    p.add_argument("--backbone", help="a timm ViT name or vit_hybrid_lite0 (default: vit_hybrid_lite0)")
    p.add_argument("--weights", help="starting weights: a file, 'random', or 'hub' (online only); default: the backbone's offline start")
    p.add_argument("--epochs", type=int, help="total epochs")
    p.add_argument("--batch-size", type=int, help="images per step (each gives two views)")
    p.add_argument("--image-size", type=int, help="side of the training views in pixels")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu or cuda; mixed precision on CUDA")
    p.add_argument("--workers", type=int, default=4, help="threads decoding the images (default 4)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if --out holds a checkpoint of the same data and settings")
    p.add_argument("--export", metavar="PATH", help="afterwards also write the trained backbone alone in fp16 (small; usable as embed --weights)")
    add_verbosity_options(p)
    p.set_defaults(command="train-global")


def _run_train_global(args: argparse.Namespace) -> int:
    from .train.global_style import export_global, load_train_config, train_global

    root = images_folder(args.images_dir)
    for out in filter(None, (args.out, args.export)):
        check_writable(out)
    config = load_train_config(
        args.config, method=args.method, backbone=args.backbone, weights=args.weights, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size, seed=args.seed,
    )
    history = train_global(root, args.out, config, labels_csv=args.labels, device=args.device, workers=args.workers,
                           resume=not args.no_resume, progress=not args.quiet)
    for record in history:
        terms = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "seconds"))
        print(f"epoch {record['epoch']}: {terms}, {record['seconds']:.0f} s")
    print(f"wrote {args.out}; embed with: --backbone {config.backbone} --weights {args.out} (global.image_size {config.image_size}, gram_levels [])")
    if args.export:
        print(f"wrote {export_global(args.out, args.export)}")
    return 0


_COMMANDS.update({"train-global": _run_train_global})


def _add_train_style_head(sub) -> None:
    p = sub.add_parser("train-style-head", help="fit the artist-discriminant style head on stores of raw branch vectors")
    p.add_argument("stores", nargs="+", metavar="STORE", help="stores embedded with the branch's style_head: null (e.g. configs/raw_global.yaml); several collections fit one head")
    p.add_argument("--labels", required=True, nargs="+", metavar="LABELS.csv",
                   help="one per STORE, in the same order: 'path' column relative to that store's images folder, and the group column")
    p.add_argument("--branch", choices=("global", "local"), default="global", help="which branch's vectors the head projects (default global)")
    p.add_argument("--out", required=True, metavar="head.pt", help="the head; use it with global.style_head: head.pt")
    p.add_argument("--group-column", default="artist", help="images of one group are pulled together (default: artist — never style)")
    p.add_argument("--holdout", type=float, default=0.0, metavar="FRACTION", help="keep this share of the artists out of fitting and score the head on them")
    p.add_argument("--score-column", metavar="COLUMN", help="with --holdout: labels the held-out clusters are scored against (e.g. style)")
    p.add_argument("--n-components", type=int, default=64, help="dimensions of the style vector (default 64)")
    p.add_argument("--pca-components", type=int, default=128, help="PCA dimensions per part before the discriminant (default 128)")
    p.add_argument("--shrinkage", type=float, default=0.1, help="within-artist covariance shrinkage, 0-1 (default 0.1)")
    p.add_argument("--weighting", choices=("none", "posterior"), default="none", help="scale each direction by its measured artist signal: posterior = λ/(1+λ) (default none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_verbosity_options(p)
    p.set_defaults(command="train-style-head")


def _run_train_style_head(args: argparse.Namespace) -> int:
    from .features.style_head import ArtistDiscriminantHead
    from .store import load_store
    from .train.style_head import train_style_head

    out = _check_output(args.out, args.overwrite)
    head = ArtistDiscriminantHead(n_components=args.n_components, pca_components=args.pca_components, shrinkage=args.shrinkage, weighting=args.weighting)
    stores = [load_store(path) for path in args.stores]
    report = train_style_head(stores, args.labels, out, args.group_column, args.holdout, args.score_column, args.seed, head, column=args.branch)
    print(f"fitted on {report.images} images of {report.artists} artists; wrote {out}")
    if report.head is not None:
        print(f"held-out artists: {report.holdout_artists} ({report.holdout_images} images), k-means against {args.score_column}:")
        for name, scores in (("raw vectors", report.raw), ("style head", report.head)):
            print(f"  {name:12s} " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return 0


_COMMANDS.update({"train-style-head": _run_train_style_head})


# --- plot / report / similar (exploration) ---------------------------------------------------------

def _add_explore_inputs(p: argparse.ArgumentParser, clusters_required: bool = True) -> None:
    p.add_argument("store", metavar="STORE", help="store folder made by `stylecluster embed`")
    p.add_argument("--clusters", required=clusters_required, metavar="CLUSTERS.csv",
                   help="output of `stylecluster cluster`; its fitted model beside it defines the style space")
    p.add_argument("--labels", metavar="LABELS.csv", help="CSV with a 'path' column and label columns (optional)")
    p.add_argument("--label-column", help="label column to show (default: --color-by if it names one, else the first label column)")


def _explorer(args: argparse.Namespace, label_column: str | None = None):
    from .store import load_store
    from .viz.data import load_explorer

    if label_column and not args.labels:
        raise UserError(f"{label_column!r} is a label column: pass --labels LABELS.csv")
    return load_explorer(load_store(args.store), args.clusters, args.labels, label_column or args.label_column, _config(args).fuse)


def _add_plot(sub) -> None:
    from .viz.umap_map import EMBED_LIMIT

    p = sub.add_parser("plot", help="interactive style map (UMAP, WebGL) of a store's images as HTML")
    _add_explore_inputs(p)
    p.add_argument("--color-by", default="cluster", metavar="COLUMN", help="'cluster' (default) or a label column of --labels")
    p.add_argument("--out", required=True, metavar="map.html", help="the HTML file to write")
    p.add_argument("--embed-limit", type=int, default=EMBED_LIMIT,
                   help=f"largest collection written as one self-contained file; larger ones get thumbnails in <out>_files/ (default {EMBED_LIMIT})")
    p.add_argument("--seed", type=int, default=0, help="UMAP seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="threads making thumbnails (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _common(p)
    p.set_defaults(command="plot")


def _run_plot(args: argparse.Namespace) -> int:
    from .viz.umap_map import UmapParams, write_map

    out = _check_output(args.out, args.overwrite)
    by_label = args.color_by != "cluster"
    explorer = _explorer(args, args.color_by if by_label else None)
    result = write_map(explorer, out, "label" if by_label else "cluster", args.embed_limit, umap_params=UmapParams(seed=args.seed), workers=args.workers)
    size = out.stat().st_size / 1e6
    where = "self-contained" if result.self_contained else f"thumbnails in {result.thumbs_dir}"
    print(f"wrote {out}: {result.n_points} images, {size:.1f} MB, {where}")
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="static HTML explorer: the map, metrics, and one page per cluster")
    _add_explore_inputs(p)
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (open DIR/index.html)")
    p.add_argument("--per-section", type=int, default=12, help="images per section of a cluster page (default 12)")
    p.add_argument("--seed", type=int, default=0, help="UMAP seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="threads making thumbnails and patches (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace a report made earlier in DIR")
    _common(p)
    p.set_defaults(command="report")


def _run_report(args: argparse.Namespace) -> int:
    from .viz.report import check_folder, write_report
    from .viz.umap_map import UmapParams

    check_folder(Path(args.out), args.overwrite)
    explorer = _explorer(args)
    result = write_report(explorer, Path(args.out), args.per_section, _config(args), umap_params=UmapParams(seed=args.seed),
                          workers=args.workers, overwrite=args.overwrite)
    print(f"wrote {result.index}: {result.n_images} images, {len(result.pages)} cluster pages, {result.n_shown} images shown with their patches")
    return 0


def _add_similar(sub) -> None:
    p = sub.add_parser("similar", help="the paintings nearest in style to an image, inside or outside the store")
    _add_explore_inputs(p, clusters_required=False)
    p.add_argument("image", metavar="IMAGE", help="a stored path, or an image file (embedded with the store's branches if not in the store)")
    p.add_argument("--k", type=int, default=12, help="number of neighbours (default 12; an image of the store is its own first)")
    p.add_argument("--out", metavar="similar.html", help="also write a self-contained HTML page with thumbnails")
    p.add_argument("--device", help="for an outside image: auto (default), cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace an existing HTML file")
    _common(p)
    p.set_defaults(command="similar")


def _run_similar(args: argparse.Namespace) -> int:
    from .viz.similar import find_similar, write_similar

    if args.out:
        _check_output(Path(args.out), args.overwrite)
    config = _config(args)
    if args.device:
        config.embed.device = args.device
    explorer = _explorer(args)
    result = find_similar(explorer, args.image, args.k, config)
    print(f"nearest in style to {printable(result.query)}" + ("" if result.inside else " (outside the store)") + ":")
    for row in result.neighbours.itertuples(index=False):
        cluster = f"  cluster {row.cluster}" if explorer.has_clusters else ""
        label = f"  {row.label}" if explorer.has_labels else ""
        print(printable(f"{row.rank:>3}  {row.similarity:.3f}{cluster}  {row.path}{label}"))
    if args.out:
        print(f"wrote {write_similar(result, explorer, args.out)}")
    return 0


_COMMANDS.update(plot=_run_plot, report=_run_report, similar=_run_similar)


_COMMANDS.update(embed=_run_embed, cluster=_run_cluster, assign=_run_assign, stability=_run_stability, evaluate=_run_evaluate, demo=_run_demo)
_COMMANDS.update(classify_cli.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylecluster",
        description="Find the style structure of an art collection: embed, cluster, evaluate, explore.",
    )
    parser.add_argument("--version", action="version", version=f"stylecluster {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND", required=True)
    for add in (_add_embed, _add_cluster, _add_assign, _add_stability, _add_evaluate, _add_demo, _add_patches, _add_train_local, _add_train_global, _add_train_style_head, _add_plot, _add_report, _add_similar, classify_cli.add_parsers):
        add(sub)
    return parser


class _LineHandler(logging.Handler):
    """One escaped line per message (a file name with a newline or a terminal escape stays on its
    line and inert), written through tqdm so that it never glues onto a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(printable(self.format(record)), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _setup_logging(args: argparse.Namespace) -> None:
    verbose = getattr(args, "verbose", False)
    level = logging.DEBUG if verbose else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", handlers=[_LineHandler()])
    logging.getLogger("stylecluster").setLevel(level)
    # Libraries' warnings (scikit-learn, numpy, hdbscan) speak of their internals, not of the
    # user's images: shown with -v only, as log lines.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    from .features.backbones import WeightsError
    from .store import StoreError

    try:
        return _COMMANDS[args.command](args)
    except (UserError, StoreError, WeightsError, OutputError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"stylecluster: error: {printable(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # an input that cannot be read: one line naming it
        where = f"{printable(exc.filename)}: " if exc.filename else ""
        print(f"stylecluster: error: {where}{printable(exc.strerror or exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stylecluster: interrupted; what was saved is kept — run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
