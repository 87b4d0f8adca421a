"""``train-local``, ``train-global`` and ``train-style-head``: the models stylecluster embeds with."""
from __future__ import annotations

import argparse

from ..io import check_not_input, check_writable
from ._common import LazyChoices, add_config_options, add_verbosity_options, check_output, images_folder, inputs_of, overrides
from .embed import PATCH_FLAGS, add_patch_options


def add_parsers(sub) -> None:
    for add in (_add_train_local, _add_train_global, _add_train_style_head):
        add(sub)


LOCAL_FLAGS = {"epochs": "epochs", "batch_size": "batch_size", "seed": "seed", "workers": "workers", "train_scales": "train_scales",
               **PATCH_FLAGS}


def _add_train_local(sub) -> None:
    p = sub.add_parser("train-local", help="train the local-branch InfoVAE on the top-scoring DoG patches of image folders")
    p.add_argument("images_dirs", nargs="+", metavar="IMAGES_DIR", help="folder(s) searched recursively for images")
    p.add_argument("--out", required=True, metavar="local.pt", help="checkpoint, rewritten after every epoch; rerun the same command to resume")
    p.add_argument("--epochs", type=int, help="total epochs")
    p.add_argument("--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu or cuda; mixed precision on CUDA")
    p.add_argument("--batch-size", type=int, help="patches per step")
    p.add_argument("--workers", type=int, help="processes extracting patches (0 = in this process)")
    p.add_argument("--seed", type=int)
    p.add_argument("--train-scales", nargs="+", choices=["pixels", "relative"], help="patch-scale modes whose patches form the training set (default: local.patch_scale)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if --out holds a checkpoint of the same data")
    p.add_argument("--export", metavar="PATH", help="afterwards also write the encoder alone in fp16 (small; usable as embed --local-model)")
    p.add_argument("--labels", nargs="+", metavar="LABELS.csv",
                   help="one CSV per IMAGES_DIR ('path' relative to it, 'artist'): artists for the artist term (--set artist_weight=W) — never style labels")
    add_patch_options(p)
    add_config_options(p, "configs/train_local.yaml: the fields of InfoVAETrainConfig, its patches in section local, e.g. --set lr=0.0005")
    p.set_defaults(func=run_train_local)


def run_train_local(args: argparse.Namespace) -> int:
    from ..features.infovae import export_encoder
    from ..train.infovae import load_infovae_train_config, train_local

    config = load_infovae_train_config(args.config, **overrides(args, LOCAL_FLAGS))
    for out in filter(None, (args.out, args.export)):
        check_not_input(out, [*args.images_dirs, *(args.labels or []), args.config])
        check_writable(out)
    history = train_local(args.images_dirs, args.out, config, device=args.device, resume=not args.no_resume, progress=not args.quiet,
                          labels=args.labels)
    print_epochs(history, {"loss": ".1f", "recon": ".1f", "kl": ".2f"})
    if args.export:
        print(f"wrote encoder {export_encoder(args.out, args.export)}")
    return 0


def print_epochs(history: list[dict[str, float]], formats: dict[str, str] | None = None) -> None:
    """One line per epoch of a training loop's history: its terms (format ``.4f`` unless given), seconds."""
    formats = formats or {}
    for record in history:
        terms = ", ".join(f"{k} {v:{formats.get(k, '.4f')}}" for k, v in record.items() if k not in ("epoch", "seconds"))
        print(f"epoch {record['epoch']}: {terms}, {record['seconds']:.0f} s")


def _recipe_names() -> list[str]:
    from ..train.global_style import available_recipes

    return available_recipes()


def _add_train_global(sub) -> None:
    p = sub.add_parser("train-global", help="train the global backbone for style (SimCLR, or CSD-style over artist labels)")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of training images (with --labels: the folder its paths are relative to)")
    p.add_argument("--method", choices=LazyChoices(_recipe_names), metavar="METHOD", help="training recipe: %(choices)s (default: the config's, else simclr)")
    p.add_argument("--labels", metavar="LABELS.csv", help="train on these rows only ('path' column); csd groups them by the 'artist' column — never by style")
    p.add_argument("--out", required=True, metavar="global.pt", help="checkpoint, rewritten after every epoch; rerun the same command to resume; usable as embed --weights")
    p.add_argument("--backbone", help="a timm ViT name or vit_hybrid_lite0 (default: vit_hybrid_lite0); efficientnet_lite0 with a cut (configs/train_csd_cached.yaml)")
    p.add_argument("--weights", help="starting weights: a file, 'random', or 'hub' (online only); default: the backbone's offline start")
    p.add_argument("--epochs", type=int, help="total epochs")
    p.add_argument("--batch-size", type=int, help="images per step (each gives two views)")
    p.add_argument("--image-size", type=int, help="side of the training views in pixels")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu or cuda; mixed precision on CUDA")
    p.add_argument("--workers", type=int, default=4, help="threads decoding the images (default 4)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if --out holds a checkpoint of the same data and settings")
    p.add_argument("--export", metavar="PATH", help="afterwards also write the trained backbone alone in fp16 (small; usable as embed --weights)")
    add_config_options(p, "configs/train_simclr.yaml, configs/train_csd.yaml: the fields of GlobalTrainConfig, e.g. --set lr=0.001")
    p.set_defaults(func=run_train_global)


def run_train_global(args: argparse.Namespace) -> int:
    from ..train.global_style import export_global, load_train_config, train_global

    root = images_folder(args.images_dir)
    for out in filter(None, (args.out, args.export)):
        check_not_input(out, inputs_of(args, "images_dir", "labels", "weights"))
        check_writable(out)
    flags = {name: name for name in ("method", "backbone", "weights", "epochs", "batch_size", "image_size", "seed")}
    config = load_train_config(args.config, **overrides(args, flags))
    history = train_global(root, args.out, config, labels_csv=args.labels, device=args.device, workers=args.workers,
                           resume=not args.no_resume, progress=not args.quiet)
    print_epochs(history)
    if config.cut is not None:  # plain backbone weights: the style head is refitted on their raw vectors
        print(f"wrote {args.out}; embed with --backbone {config.backbone} --weights {args.out} --config configs/raw_global.yaml, "
              "then fit the style head on that store (train-style-head)")
    else:
        print(f"wrote {args.out}; embed with: --backbone {config.backbone} --weights {args.out} (global.image_size {config.image_size}, gram_levels [])")
    if args.export:
        print(f"wrote {export_global(args.out, args.export)}")
    return 0


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
    p.add_argument("--n-components", type=_directions, default=256, metavar="N|all",
                   help="the first N discriminant directions (default 256), or all: every direction, whitened within artists (WCCN)")
    p.add_argument("--pca-components", type=int, default=256, help="PCA dimensions per part before the discriminant (default 256)")
    p.add_argument("--shrinkage", type=float, default=0.1, help="within-artist covariance shrinkage, 0-1 (default 0.1)")
    p.add_argument("--weighting", choices=("none", "posterior"), default="none", help="scale each direction by its measured artist signal: posterior = λ/(1+λ) (default none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_verbosity_options(p)
    p.set_defaults(func=run_train_style_head)


def _directions(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'all', got {text}")
    return value


def run_train_style_head(args: argparse.Namespace) -> int:
    from ..features.style_head import ArtistDiscriminantHead
    from ..store import load_store
    from ..train.style_head import train_style_head

    out = check_output(args.out, args.overwrite, [*args.stores, *args.labels])
    head = ArtistDiscriminantHead(n_components=args.n_components, pca_components=args.pca_components, shrinkage=args.shrinkage, weighting=args.weighting)
    stores = [load_store(path) for path in args.stores]
    report = train_style_head(stores, args.labels, out, args.group_column, args.holdout, args.score_column, args.seed, head, column=args.branch)
    print(f"fitted on {report.images} images of {report.artists} artists; wrote {out}")
    if report.head is not None:
        print(f"held-out artists: {report.holdout_artists} ({report.holdout_images} images), k-means against {args.score_column}:")
        for name, scores in (("raw vectors", report.raw), ("style head", report.head)):
            print(f"  {name:12s} " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return 0
