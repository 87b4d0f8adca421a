"""Embedding and clustering speed, and memory.

    python benchmarks/speed.py                 # 256 wikiart images, batch 1 and 32
    python benchmarks/speed.py --images 1024 --cluster-sizes 1000 10000 100000
    python benchmarks/speed.py --runtimes torch,onnx:fp32,onnx:bf16 --batch-sizes 32 --skip-cluster
    python benchmarks/speed.py --images 96 --batch-sizes 32 --runtimes onnx:fp32 --image-sizes 224,3000 --alternate 3

Embedding: images/s end to end (the real ``embed`` path: hashing and decoding in workers, both
branches, the store's writes), beside the global backbone's forward pass alone on the same
preprocessed batches, measured before and after it in the same run (``embed / forward``: the
share of the backbone's speed the whole path keeps; the goal is >= 0.8). Also the time split
into decoding (``ImageDataset`` per image, one process) and model (``encode`` per batch), and
peak RSS. Clustering: seconds per method on synthetic points at the store's fused
dimensionality (benchmarks/cluster_speed.py). Writes benchmarks/out/speed.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import SHARED, WIKIART, print_table, wikiart_sample, write_json

from stylecluster import Config
from stylecluster.data.dataset import ImageDataset, WorkItem, collate_items
from stylecluster.device import autocast, resolve_device
from stylecluster.features.embedder import build_branches, embed_images


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def embed_speed(paths: list[Path], root: Path, batch_size: int, workers: int, local: bool = True, backbone: str | None = None,
                runtime: str = "torch", reference: dict | None = None) -> dict:
    """``runtime``: "torch", or "onnx:fp32" / "onnx:bf16" (features/runtime.py). ``reference``:
    the torch row's vectors (``_vectors``), for the per-image cosine and the clusters' agreement."""
    config = Config()
    config.local.enabled = local
    config.global_.backbone = backbone or config.global_.backbone
    config.embed.batch_size = batch_size
    config.embed.workers = workers
    config.embed.runtime, _, precision = runtime.partition(":")
    config.embed.precision = precision or "auto"
    device = resolve_device(config.embed.device)
    start = time.perf_counter()
    branches = build_branches(config, device)
    setup_s = time.perf_counter() - start

    # decode + preprocess, one process, per image
    items = [WorkItem(i, p, None) for i, p in enumerate(paths)]  # hashed while decoding, as embed does
    dataset = ImageDataset(items, branches, config.ingest.max_pixels, config.ingest.min_side)
    start = time.perf_counter()
    samples = [dataset[i] for i in range(len(dataset))]
    decode_s = (time.perf_counter() - start) / len(paths)

    # model only, per batch
    batches = [collate_items(samples[i : i + batch_size])[0] for i in range(0, len(samples), batch_size)]
    model_s = 0.0
    vectors = {b.name: [] for b in branches}
    for batch in batches:
        start = time.perf_counter()
        for b in branches:
            vectors[b.name].append(b.encode(batch["inputs"][b.name]))
        model_s += time.perf_counter() - start
    model_s /= len(paths)
    vectors = {name: np.concatenate(v) for name, v in vectors.items()}
    agreement = {}
    if reference is not None:
        for name, v in vectors.items():
            r = reference["_vectors"][name]
            cosine = (v * r).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(r, axis=1))
            agreement[f"min_cos_{name}"] = float(cosine.min())
        agreement.update(cluster_agreement(vectors["global"], reference["_vectors"]["global"], paths))

    # end to end through the real embed path (workers decode while the model runs), between two
    # timings of the global backbone's forward pass alone, so that a busy machine's drift shows
    forward_before = forward_only_seconds(branches[0], batches, device)
    out = Path(tempfile.mkdtemp()) / "speed.store"
    start = time.perf_counter()
    embed_images(paths, root, out, config, quiet=True, branches=branches)
    total = time.perf_counter() - start
    shutil.rmtree(out.parent)
    forward_after = forward_only_seconds(branches[0], batches, device)
    forward = (forward_before + forward_after) / 2
    return {
        "backbone": config.global_.backbone, "branches": "+".join(b.name for b in branches), "batch_size": batch_size, "workers": workers, "device": str(device), "images": len(paths),
        "images_per_s": len(paths) / total, "forward_images_per_s": len(paths) / forward, "embed_over_forward": forward / total,
        "forward_drift": forward_after / forward_before,
        "decode_ms_per_image": 1000 * decode_s, "model_ms_per_image": 1000 * model_s,
        "peak_rss_mb": peak_rss_mb(), "runtime": runtime, "setup_s": setup_s, **agreement, "_vectors": vectors,
    }


def paintings_at_size(side: int, n: int) -> tuple[list[Path], Path]:
    """``n`` JPEGs (quality 90) made from the shared AIC paintings with the longer side ``side``
    (upsampled bicubic where the original is smaller), in a temporary folder: museum-size files
    without shipping any."""
    from PIL import Image

    sources = sorted((SHARED / "aic-cc0").rglob("*.jpg"))
    folder = Path(tempfile.mkdtemp()) / f"aic-{side}"
    folder.mkdir()
    paths = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as image:
            image = image.convert("RGB")
            scale = side / max(image.size)
            image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC).save(
                folder / f"{i:04d}.jpg", quality=90)
        paths.append(folder / f"{i:04d}.jpg")
    return paths, folder


def alternating_rates(sides: list[int], n: int, runtime: str, reps: int, batch_size: int, workers: int) -> dict:
    """End-to-end images/s of embedding (both branches, ``runtime``) JPEGs made at each of
    ``sides``, the sizes taking turns ``reps`` times with the same compiled branches, so that a
    busy machine's drift falls on every size alike: {side: [images/s per turn]}."""
    config = Config()
    config.embed.batch_size, config.embed.workers = batch_size, workers
    config.embed.runtime, _, precision = runtime.partition(":")
    config.embed.precision = precision or "auto"
    branches = build_branches(config, resolve_device(config.embed.device))
    sets = {side: paintings_at_size(side, n) for side in sides}
    rates = {side: [] for side in sides}
    try:
        for _ in range(reps):
            for side, (paths, root) in sets.items():
                out = Path(tempfile.mkdtemp()) / "speed.store"
                start = time.perf_counter()
                embed_images(paths, root, out, config, quiet=True, branches=branches)
                rates[side].append(len(paths) / (time.perf_counter() - start))
                shutil.rmtree(out.parent)
    finally:
        for _, root in sets.values():
            shutil.rmtree(root.parent)
    return rates


def cluster_agreement(fast: np.ndarray, reference: np.ndarray, paths: list[Path], k: int = 11) -> dict:
    """k-means (k = the sample's movements) on both sets of global vectors, same seed: ARI between
    the two clusterings, and each one's NMI against the movements."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from stylecluster.data.labels import read_labels

    labels = read_labels(WIKIART / "labels.csv", "style").set_index("path")["style"]
    movement = np.asarray([labels.get(p.relative_to(WIKIART).as_posix(), "") for p in paths])
    unit = lambda X: X / np.linalg.norm(X, axis=1, keepdims=True)  # noqa: E731
    a, b = (KMeans(k, n_init=4, random_state=0).fit_predict(unit(X)) for X in (fast, reference))
    return {"ari_to_torch": adjusted_rand_score(b, a), "nmi": normalized_mutual_info_score(movement, a),
            "nmi_torch": normalized_mutual_info_score(movement, b)}


def forward_only_seconds(branch, batches: list[dict], device: torch.device) -> float:
    """Seconds for the global backbone's forward pass alone (pooled features; no Gram statistics,
    no head) over the preprocessed batches: the speed ``embed`` is measured against."""
    model = branch.backbone.model
    inputs = [branch.model_input(b["inputs"][branch.name]) for b in batches]
    with torch.inference_mode(), autocast(device):
        model.forward_head(model.forward_features(inputs[0][:2]), pre_logits=True)  # warm-up
        start = time.perf_counter()
        for x in inputs:
            model.forward_head(model.forward_features(x), pre_logits=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cluster-sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--no-local", action="store_true", help="time the global branch alone")
    parser.add_argument("--image-sizes", default="",
                        help="also time embedding JPEGs made from the AIC paintings with these longer sides, e.g. 224,1000,3000 (global alone and both branches)")
    parser.add_argument("--alternate", type=int, default=0, metavar="REPS",
                        help="with --image-sizes: time only those sizes end to end, in turns, REPS times each (both branches, the last of --runtimes)")
    parser.add_argument("--runtimes", default="torch",
                        help="comma-separated runtimes timed in the same run, torch first: torch, onnx:fp32, onnx:bf16 (embed.runtime:embed.precision)")
    parser.add_argument("--backbones", default=None,
                        help="comma-separated global backbones timed in the same run (ratios between them are what a busy machine can measure)")
    args = parser.parse_args(argv)
    sides = [int(side) for side in filter(None, args.image_sizes.split(","))]
    if args.alternate:  # the sizes in turns, nothing else
        runtime = args.runtimes.split(",")[-1]
        rates = alternating_rates(sides, args.images, runtime, args.alternate, args.batch_sizes[-1], args.workers)
        print(f"both branches, {runtime}, batch {args.batch_sizes[-1]}, {args.images} images a size, sizes in turns: images/s end to end")
        for side, values in rates.items():
            ratios = [r / first for r, first in zip(values, rates[sides[0]])]
            print(f"  {side:>5} px: {', '.join(f'{r:.1f}' for r in values)}; x the {sides[0]}-px turn before it: {', '.join(f'{q:.2f}' for q in ratios)}")
        print(f"machine load average (1, 5, 15 min) at the end: {os.getloadavg()}")
        print(f"wrote {write_json('speed_alternating.json', {'runtime': runtime, 'images': args.images, 'images_per_s': rates})}")
        return 0
    paths = wikiart_sample(args.images)
    if paths is None:
        return 2
    print(f"torch threads: {torch.get_num_threads()}")
    backbones = args.backbones.split(",") if args.backbones else [None]
    embed_rows = []
    for b in backbones:
        for bs in args.batch_sizes:
            reference = None
            for runtime in args.runtimes.split(","):  # torch first: the others are compared with it
                row = embed_speed(paths, WIKIART, bs, args.workers, local=not args.no_local, backbone=b, runtime=runtime, reference=reference)
                reference = reference or row
                embed_rows.append(row)
    for side in filter(None, args.image_sizes.split(",")):
        paths_at, root = paintings_at_size(int(side), args.images)
        for runtime in args.runtimes.split(","):
            for local in ([False, True] if not args.no_local else [False]):
                row = embed_speed(paths_at, root, args.batch_sizes[-1], args.workers, local=local, runtime=runtime)
                embed_rows.append({"image_size": int(side), **row})
        shutil.rmtree(root.parent)
    for row in embed_rows:
        row.pop("_vectors")
    print_table(embed_rows, list(embed_rows[0]) + [k for k in embed_rows[-1] if k not in embed_rows[0]])
    for row in embed_rows:
        print(f"{row['backbone']} batch {row['batch_size']}: embed / forward-only = {row['embed_over_forward']:.2f} "
              f"({row['images_per_s']:.1f} vs {row['forward_images_per_s']:.1f} images/s; forward drift within the run x{row['forward_drift']:.2f})")
    print(f"machine load average (1, 5, 15 min) at the end: {os.getloadavg()}")

    cluster_rows = []
    if not args.skip_cluster:
        from cluster_speed import time_methods

        config = Config()
        # the fused space has one block per vector part, each of at most pca_components dimensions
        n_blocks = 1 + len(config.global_.gram_levels) + int(config.local.enabled)
        dim = config.fuse.pca_components * n_blocks
        print(f"\nclustering synthetic points at the fused dimensionality ({dim})")
        cluster_rows = time_methods(args.cluster_sizes, dim)
        print_table(cluster_rows, list(cluster_rows[0]))
    path = write_json("speed.json", {"embed": embed_rows, "cluster": cluster_rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
