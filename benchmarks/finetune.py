"""Cached-activation fine-tuning of Lite0 (issue 22), measured in generalisation.py's protocols.

For every split of ``generalisation.py`` (artist-disjoint seeds, movement-disjoint folds) the
layers of EfficientNet-Lite0 above the cut are trained from the ImageNet weights with CSD's two
terms (``stylecluster/train/cached.py``) on **that split's training artists only**; the artist
discriminant head is refitted on the trained network's vectors of the same training images; the
unseen images are scored as generalisation.py scores every variant (fuser, BGMM with k inferred,
k-means, P@10). Beside it, on the same split: the raw vector and today's head (``lda256``).

The frozen part's activations are cached once for all artist-labelled images (view 0: the whole
painting as the branch embeds it; the others: CSD-style crops) and reused by every split; a
trained vector is the raw one with its ``pooled`` part recomputed by the trained layers from view 0
(every Gram level of the default branch lies below ``blocks.3``, so below any cut allowed here —
tests/test_cached_finetune.py checks that this equals ``embed --weights``).

    python benchmarks/finetune.py --seeds 1 --protocols artist            # the first screen
    python benchmarks/finetune.py --set epochs=6 --set lr=0.0003 --validate  # choose on training artists
    python benchmarks/finetune.py --set dates_weight=0.5 --validate --label dates0.5  # + the dates term (labels' year)

Checkpoints and the cache live under ``--work`` and resume; ``--validate`` keeps 20 % of each
split's *training* artists out and scores them instead (test artists are never looked at).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import GENERALISATION_WORK, SHARED, print_table, write_json
from generalisation import DATASETS, VARIANTS, raw_config, artist_disjoint, fused, load_pool, movement_disjoint, score, summarise
from stylecluster.data.splits import split_by_artist
from stylecluster.features.global_ import GlobalBranch
from stylecluster.train.cached import ViewCache, build_view_cache, cut_index, forward_above, levels_above, load_cached_config, train_cached

ROOT = Path(__file__).resolve().parents[1]


def cached_pool(pool: pd.DataFrame, config, work: Path, workers: int) -> tuple[ViewCache, np.ndarray]:
    """The view cache of every pool image (built once, resumable) and each pool row's cache row."""
    names = [f"{d}/{p}" for d, p in zip(pool["dataset"], pool["path"])]
    every = sorted(set(names))  # one order whatever table asks, so the cache is built once
    folder = work / f"views-{config.backbone}-{config.cut}-v{config.views_per_image}-{config.image_size}"
    cache = build_view_cache([SHARED / n for n in every], every, config, folder, workers)
    position = {name: i for i, name in enumerate(cache.names)}
    return cache, np.array([position[n] for n in names])


def trained_vectors(X: np.ndarray, parts: dict, rows: np.ndarray, cache: ViewCache, cache_rows: np.ndarray, checkpoint: Path, config) -> np.ndarray:
    """The raw vectors of pool ``rows`` with every part the trained layers compute (pooled, the
    Gram levels above the cut) recomputed from the cached whole-painting view: what ``embed
    --weights checkpoint`` writes for them (tests/test_cached_finetune.py checks the equality)."""
    branch = GlobalBranch(replace(raw_config(config.backbone, 0).global_, weights=str(checkpoint)))
    model = branch.backbone.model
    start = cut_index(model, config.cut)
    levels = levels_above(model, start, branch.config.gram_levels)
    out = X[rows].copy()
    with torch.inference_mode():
        for i in range(0, len(rows), 256):
            whole = torch.from_numpy(cache.views[cache_rows[rows[i : i + 256]], 0]).float()
            pooled, maps = forward_above(model, start, whole, levels)
            for name, part in zip(["pooled"] + [f"gram{level}" for level in levels], [pooled, *branch.gram_parts(maps, levels)]):
                a, b = parts[name]
                out[i : i + 256, a:b] = part.numpy()
    return out


def embed_ms(backbone: str, weights: str | None, batches: int = 3) -> float:
    """Milliseconds per image of the global branch's forward (raw vector, batch 32, this process's threads)."""
    branch = GlobalBranch(replace(raw_config(backbone, 0).global_, weights=weights))
    batch = torch.randint(0, 256, (32, 3, 224, 224), dtype=torch.uint8)
    branch.encode(batch)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        branch.encode(batch)
    return (time.perf_counter() - started) / (32 * batches) * 1000


def pool_years(pool: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """Each pool row's ``year`` from its set's labels (NaN where the set has none or the work is undated)."""
    known = labels.assign(year=pd.to_numeric(labels.get("year"), errors="coerce"))[["dataset", "path", "year"]].drop_duplicates(["dataset", "path"])
    return pool[["dataset", "path"]].merge(known, on=["dataset", "path"], how="left")["year"].to_numpy(dtype=np.float64)


def run_split(split, pool, X, parts, cache, cache_rows, years, config, args) -> list[dict]:
    artists = pool["artist"].to_numpy()
    train, test = split.train, split.test
    movements = pool["movement"].to_numpy()[test].astype(str)
    if args.validate:  # score held-out *training* artists instead of the split's test artists
        frame = pd.DataFrame({"artist": artists[train]})
        fit_part, val_part = split_by_artist(frame, 0.2, seed=split.seed)
        test = train[val_part.index.to_numpy()]
        test = test[pd.notna(pool["movement"].to_numpy()[test])]
        train = train[fit_part.index.to_numpy()]
        movements = pool["movement"].to_numpy()[test].astype(str)
    skipped = {row for row, _ in cache.skipped}
    train = np.array([r for r in train if cache_rows[r] not in skipped])
    tag = f"{split.protocol}-{split.seed}-{split.fold.replace('+', '_').replace(' ', '').replace('%', '')}{'-val' if args.validate else ''}"
    checkpoint = args.work / "checkpoints" / f"{config.cut}-{args.label}-{tag}.pt"
    codes = pd.factorize(artists[train])[0]
    started, cpu = time.perf_counter(), time.process_time()
    history = train_cached(cache, codes, config, checkpoint, cache_rows[train], progress=True, years=years[train])
    train_minutes, cpu_minutes = (time.perf_counter() - started) / 60, (time.process_time() - cpu) / 60
    print(f"  {tag}: trained {len(train)} images ({len(set(codes))} artists), {cpu_minutes:.1f} CPU-min; "
          + ", ".join(f"ep{h['epoch']} {h['loss']:.3f}" for h in history), flush=True)
    both = np.concatenate([train, test])
    trained = trained_vectors(X, parts, both, cache, cache_rows, checkpoint, config)
    spaces = {"raw": (X[train], X[test]), "trained-raw": (trained[: len(train)], trained[len(train) :])}
    rows = []
    for name in args.variants:
        base = name.removeprefix("trained-")
        source = "trained-raw" if name.startswith("trained-") else "raw"
        vectors, vparts = VARIANTS[base](spaces[source][0], artists[train], spaces[source][1], parts)
        row = {"backbone": config.backbone, "variant": name if not name.startswith("trained-") else f"{name}@{args.label}", "protocol": split.protocol + ("-val" if args.validate else ""),
               "seed": split.seed, "fold": split.fold, "train_images": len(train), "test_images": len(test),
               **score(fused(vectors, vparts, split.seed), movements, artists[test], split.seed, args.methods),
               "train_cpu_minutes": cpu_minutes if source != "raw" else 0.0, "train_wall_minutes": train_minutes if source != "raw" else 0.0}
        rows.append(row)
        print(f"    {row['variant']:28s} " + " ".join(f"{m} {row[m + '_nmi']:.3f}" for m in args.methods)
              + f"  purity {row['bgmm_purity']:.3f}  P@10 artist {row['p10_artist']:.3f} movement {row['p10_movement']:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=GENERALISATION_WORK, help="generalisation.py's raw stores; the cache and checkpoints go here too")
    parser.add_argument("--config", default=str(ROOT / "configs" / "train_csd_cached.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting over the config (YAML value)")
    parser.add_argument("--label", default="default", help="names this setting's checkpoints and rows")
    parser.add_argument("--variants", default="raw,lda256,trained-raw,trained-lda256")
    parser.add_argument("--protocols", default="artist,movement")
    parser.add_argument("--methods", default="bgmm,kmeans")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--splits", type=int, default=None, help="only the first N splits of each protocol (a screen, e.g. one movement fold)")
    parser.add_argument("--validate", action="store_true", help="score 20 %% of each split's training artists, held out of training (for choosing settings)")
    parser.add_argument("--cache-only", action="store_true", help="build the view cache and stop")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="finetune.json")
    args = parser.parse_args()
    import yaml

    settings = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = load_cached_config(args.config, **settings)
    for key in ("variants", "protocols", "methods"):
        setattr(args, key, getattr(args, key).split(","))
    labels = pd.concat([pd.read_csv(SHARED / d / "labels.csv").dropna(subset=["artist"]).assign(dataset=d) for d in DATASETS], ignore_index=True)
    if args.cache_only:
        cached_pool(labels, config, args.work, args.workers)
        return
    pool, X, parts = load_pool(args.work, config.backbone, False, args.workers)
    cache, cache_rows = cached_pool(pool, config, args.work, args.workers)
    years = pool_years(pool, labels)
    splits = (artist_disjoint(pool, args.seeds)[: args.splits] if "artist" in args.protocols else []) \
        + (movement_disjoint(pool, args.seeds)[: args.splits] if "movement" in args.protocols else [])
    rows = []
    for split in splits:
        rows += run_split(split, pool, X, parts, cache, cache_rows, years, config, args)
    checkpoint = sorted((args.work / "checkpoints").glob(f"{config.cut}-{args.label}-*.pt"))[-1]
    speed = {"imagenet": embed_ms(config.backbone, None), "trained": embed_ms(config.backbone, str(checkpoint))}
    print(f"embed (raw global vector, batch 32): ImageNet weights {speed['imagenet']:.1f} ms/image, trained {speed['trained']:.1f} ms/image")
    table = summarise(rows, args.methods)
    frame = pd.DataFrame(rows)
    for entry in table:
        entry["train CPU-min"] = f"{frame[(frame.variant == entry['variant']) & (frame.protocol == entry['protocol'])]['train_cpu_minutes'].mean():.1f}"
    columns = ["protocol", "variant", "seeds"] + [c for c in table[0] if c.endswith(("_nmi", "_purity", "_k")) or c.startswith(("p10", "train"))]
    print_table(table, columns)
    path = write_json(args.out, {"settings": {"config": vars(config), **{k: str(v) for k, v in vars(args).items()}}, "embed_ms": speed, "summary": table, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
