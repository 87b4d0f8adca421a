"""``embed`` and ``patches``: images in, vectors (or patch images) out."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..io import check_not_input, check_writable
from ._common import add_config_options, config_for, images_folder, inputs_of

PATCH_FLAGS = {"patch_scale": "local.patch_scale", "relative_size": "local.relative_size"}
EMBED_FLAGS = {
    "backbone": "global.backbone",
    "weights": "global.weights",
    "device": "embed.device",
    "batch_size": "embed.batch_size",
    "workers": "embed.workers",
    "max_pixels": "ingest.max_pixels",
    "local_model": "local.model",
    "runtime": "embed.runtime",
    "precision": "embed.precision",
}


def add_patch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patch-scale", choices=["pixels", "relative"], help="patch side in image pixels (default) or as a fraction of the shorter side (local.patch_scale)")
    p.add_argument("--relative-size", type=float, help="patch side / shorter image side with --patch-scale relative (default 0.25; local.relative_size)")


def add_parsers(sub) -> None:
    p = sub.add_parser("embed", help="compute style embeddings of a folder of images into a store")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder searched recursively for images; stored paths are relative to it")
    p.add_argument("--out", required=True, metavar="STORE", help="store folder to create or resume")
    p.add_argument("--list", metavar="FILE", help="embed only the images named in this CSV (a 'path' column) or TXT (one per line), relative to IMAGES_DIR")
    p.add_argument("--backbone", help="global backbone: a registered name or any timm model name (default: efficientnet_lite0)")
    p.add_argument("--weights", help="weights for the backbone: a file (.pth/.pt/.safetensors), 'hub' or 'hf-hub:ORG/REPO' (online only), or 'random'")
    p.add_argument("--device", help="auto (default: CUDA, then MPS, then CPU), cpu or cuda")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default 32)")
    p.add_argument("--runtime", choices=["auto", "torch", "onnx"],
                   help="auto (default): on a CPU, runs of 500+ images use the networks exported to ONNX and run by OpenVINO "
                        "(fp32; 2.6x torch end to end here) when their vectors pass the accuracy check, else torch; "
                        "torch: the reference; onnx: OpenVINO always (embed.runtime)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="with OpenVINO: auto (= fp32), fp32, or bf16 (faster, but it moved some paintings below cosine 0.99; embed.precision)")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding images (default 2; 0 decodes in the main process)")
    p.add_argument("--max-pixels", type=int, help="skip images with more pixels than this (decompression-bomb guard; default 200,000,000)")
    p.add_argument("--local-model", metavar="PATH", help="local (brush-stroke) branch encoder from `train-local` (default: the one shipped with stylecluster)")
    p.add_argument("--no-local", action="store_true", help="embed the global branch only (no brush-stroke patches)")
    p.add_argument("--overwrite", action="store_true", help="replace a store made with another model or configuration")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this machine (default); ray: Ray Data actors, on this machine or the cluster at --address (pip install 'stylecluster[ray]')")
    p.add_argument("--address", metavar="ADDR", help="with --engine ray: a running Ray cluster (host:port, or 'auto'); default: start Ray here for the run")
    p.add_argument("--actors", type=int, metavar="N", help="with --engine ray: models encoding at once (default: one per GPU, else one per CPU of the cluster)")
    add_config_options(p)
    p.set_defaults(func=run_embed)

    p = sub.add_parser("patches", help="write an image's brush-stroke patches (gradient-sampled) and their DoG versions as PNGs")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <name>_p<i>_raw.png, <name>_p<i>_dog.png and <name>_patches.json")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: the same image and seed give the same patches (default 0)")
    add_patch_options(p)
    add_config_options(p)
    p.set_defaults(func=run_patches)


def run_embed(args: argparse.Namespace) -> int:
    if args.no_local:
        args.settings.insert(0, ("local.enabled", False))
    config = config_for(args, EMBED_FLAGS)
    engine = None
    if args.engine == "ray":  # made before torch loads: it checks --address, one line in a second instead of thirty
        from ..features.ray_engine import RayEngine

        engine = RayEngine(config, address=args.address, actors=args.actors, quiet=args.quiet)
    elif args.address or args.actors:
        raise InputError("--address and --actors go with --engine ray")
    from ..data.discovery import IMAGE_EXTENSIONS, discover_images, read_path_list
    from ..features.embedder import embed_images

    root = images_folder(args.images_dir)
    check_not_input(args.out, inputs_of(args, "list"))
    paths = read_path_list(args.list, root) if args.list else discover_images(root, config.ingest.follow_symlinks)
    if not paths:
        raise InputError(f"{args.list or root}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    report = embed_images(paths, root, Path(args.out), config, overwrite=args.overwrite, quiet=args.quiet, engine=engine)
    print("\n".join(report.summary_lines()))
    if report.stored_total == 0:
        print("stylecluster: error: nothing could be embedded", file=sys.stderr)
        return 1
    return 0


def run_patches(args: argparse.Namespace) -> int:
    from ..data.decode import BadImage
    from ..features.patches import extract_patches_to_dir

    config = config_for(args, PATCH_FLAGS)
    check_writable(args.out, folder=True)
    try:
        written = extract_patches_to_dir(args.image, args.out, config.local, seed=args.seed, max_pixels=config.ingest.max_pixels)
    except BadImage as exc:
        raise InputError(f"{args.image}: {exc}") from None
    print(f"wrote {len(written)} patch images to {args.out}")
    return 0
