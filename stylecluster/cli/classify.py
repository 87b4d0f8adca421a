"""``train-classifier``, ``classify`` and ``explain``: the supervised reference.

Imports stay inside the run functions: the CLI starts without loading torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..io import check_not_input, save_atomic
from ._common import LazyChoices, add_config_options, add_verbosity_options, images_folder, inputs_of, overrides


def _report_skipped(skipped: list[str]) -> None:
    for line in skipped:
        print(f"stylecluster: skipped {line}", file=sys.stderr)


def _classifier_names() -> list[str]:
    from ..classify.models import available_classifiers

    return available_classifiers()


def _add_train(sub) -> None:
    p = sub.add_parser("train-classifier", help="train a supervised style classifier (cnn, vit or the CNN+Transformer fusion)")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="the folder the labels' paths are relative to")
    p.add_argument("--labels", required=True, metavar="LABELS.csv", help="CSV with 'path', 'artist' (the 7:1:2 split is made by artist) and the label column")
    p.add_argument("--label-column", default="style", help="the column to learn (default: style)")
    p.add_argument("--model", choices=LazyChoices(_classifier_names), metavar="KIND", help="classifier kind: %(choices)s (default: the config's, else fusion)")
    p.add_argument("--out", required=True, metavar="clf.pt", help="checkpoint, rewritten after every epoch (rerun to resume); the split is written beside it as clf.split.csv")
    p.add_argument("--cnn", help="CNN backbone: a registered name or timm CNN (default efficientnet_lite0; resnet50 with --cnn-weights FILE)")
    p.add_argument("--cnn-weights", help="CNN weights: a file, 'random', or 'hub' (online only)")
    p.add_argument("--vit", help="ViT backbone: vit_hybrid_lite0 (default) or a timm ViT name (with --vit-weights FILE)")
    p.add_argument("--vit-weights", help="ViT weights: a file, 'random', or 'hub' (online only)")
    p.add_argument("--freeze", choices=["backbone", "none"], help="backbone: frozen backbones, features cached (CPU); none: train everything (GPU)")
    p.add_argument("--image-size", type=int, help="input side in pixels")
    p.add_argument("--epochs", type=int, help="at most this many epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu or cuda; mixed precision on CUDA")
    p.add_argument("--workers", type=int, default=4, help="threads decoding the images (default 4)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if --out holds a checkpoint of the same data and settings")
    add_config_options(p, "configs/classifier.yaml: the fields of ClassifierConfig, e.g. --set lr=0.0003")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ..classify.config import load_classifier_config
    from ..classify.train import split_path, train_classifier

    images_folder(args.images_dir)
    check_not_input(args.out, inputs_of(args, "labels", "cnn_weights", "vit_weights"))
    flags = {name: name for name in ("model", "cnn", "cnn_weights", "vit", "vit_weights", "freeze", "image_size", "epochs", "batch_size", "seed")}
    config = load_classifier_config(args.config, **overrides(args, flags))
    result, skipped = train_classifier(args.images_dir, args.labels, args.out, config, args.label_column, args.device,
                                       args.workers, resume=not args.no_resume, progress=not args.quiet)
    _report_skipped(skipped)
    for record in result.history:
        print(f"epoch {record['epoch']}: loss {record['loss']:.4f}, val loss {record['val_loss']:.4f}, "
              f"val accuracy {record['val_accuracy']:.3f}, lr {record['lr']:.1e}, {record['seconds']:.0f} s")
    print(f"wrote {args.out} ({config.model}; best epoch {result.best_epoch}{', stopped early' if result.stopped_early else ''}) and {split_path(args.out)}")
    print(f"score the held-out artists: stylecluster classify {args.out} {args.images_dir} --labels {split_path(args.out)} --split test --out DIR")
    return 0


def _add_classify(sub) -> None:
    p = sub.add_parser("classify", help="predict styles with a trained classifier; with labels, score it (accuracy, F1, confusions)")
    p.add_argument("model", metavar="clf.pt")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of images (with --labels: the folder its paths are relative to)")
    p.add_argument("--labels", metavar="LABELS.csv", help="classify these rows only and score them against --label-column")
    p.add_argument("--label-column", help="default: the column the classifier learned")
    p.add_argument("--split", choices=["train", "val", "test"], help="only the rows of this side of a split CSV (train-classifier's clf.split.csv)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for predictions.csv (and scores.json, per_class.csv, confusion.csv/.html)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu (default), auto or cuda")
    p.add_argument("--workers", type=int, default=4, help="threads decoding the images (default 4)")
    add_verbosity_options(p)
    p.set_defaults(func=run_classify)


def run_classify(args: argparse.Namespace) -> int:
    from ..data.discovery import discover_images
    from ..classify.predict import predict_files
    from ..classify.report import format_scores, read_labelled, score_labelled, write_report
    from ..classify.train import load_classifier

    root = images_folder(args.images_dir)
    for name in ("predictions.csv", "scores.json"):
        check_not_input(Path(args.out) / name, inputs_of(args, "model", "labels"))
    trained = load_classifier(args.model, args.device)
    column = args.label_column or trained.metadata.get("label_column", "style")
    labels = None
    if args.labels:
        labels = read_labelled(args.labels, column, args.split)
        paths = [root / p for p in labels["path"]]
    elif args.split:
        raise InputError("--split selects rows of --labels; pass the split CSV written by train-classifier")
    else:
        paths = discover_images(root)
    if not paths:
        raise InputError(f"{args.labels or root}: no images to classify")
    result = predict_files(trained, paths, root, args.batch_size, args.workers, progress=not args.quiet)
    _report_skipped(result.skipped)
    out = Path(args.out)
    frame = result.frame
    written = [out / "predictions.csv"]
    if labels is not None:
        scores = score_labelled(frame, labels, column, trained.classes)
        print(format_scores(scores))
        save_atomic(out / "scores.json", json.dumps(scores, indent=2))
        written += [out / "scores.json"] + write_report(scores, out)
    save_atomic(written[0], lambda tmp: frame.to_csv(tmp, index=False))
    print(f"classified {len(frame)} images ({len(result.skipped)} skipped); wrote " + ", ".join(str(p) for p in written))
    return 0


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM heat map of the regions that drove a cnn or fusion classifier's prediction")
    p.add_argument("model", metavar="clf.pt")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="cam.png", help="the overlay image to write")
    p.add_argument("--class", dest="target", metavar="NAME", help="explain this class instead of the predicted one")
    p.add_argument("--device", default="cpu", help="cpu (default), auto or cuda")
    add_verbosity_options(p)
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from ..data.decode import BadImage
    from ..classify.predict import explain_image
    from ..classify.train import load_classifier

    check_not_input(args.out, inputs_of(args, "model", "image"))
    trained = load_classifier(args.model, args.device)
    try:
        picture, result = explain_image(trained, args.image, args.target)
    except BadImage as exc:
        raise InputError(f"{args.image}: {exc}") from None
    save_atomic(args.out, lambda tmp: picture.save(tmp))
    top = result.probabilities.argmax()
    print(f"predicted {trained.classes[top]} ({result.probabilities[top]:.0%}); Grad-CAM for {trained.classes[result.target]} written to {args.out}")
    return 0


def add_parsers(sub) -> None:
    for add in (_add_train, _add_classify, _add_explain):
        add(sub)
