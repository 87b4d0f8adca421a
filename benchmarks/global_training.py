"""Does style training of the global backbone help on artists it has never seen?

Protocol (issue 4): WikiArt styles, split *by artist* (about 70 % of the artists train, the rest
are held out); every model embeds the held-out artists' images, which are clustered on the global
vector alone (k-means k = 11 and BGMM with at most 11 components, via ``StyleClustering``) and
scored against the style labels (NMI / purity / ARI). Training never sees a style label.

    python benchmarks/global_training.py [--train-images 1500] [--epochs 3] [--only NAME ...] [--raw-store STORE]

With ``--raw-store`` (wikiart-styles embedded with configs/raw_global.yaml) the artist-discriminant
style head is fitted on the training artists' stored vectors and scored like the other variants.

Each variant's result is cached in benchmarks/out/global_training/<name>.json (rerunning skips
finished variants; delete the JSON to re-score from the saved <name>.npy vectors), trained
checkpoints as hybrid_<method>.pt (resumed, not retrained); the table is printed and written to
benchmarks/out/global_training.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import OUT, WIKIART, print_table, write_json  # noqa: E402
from stylecluster.cluster import StyleClustering  # noqa: E402
from stylecluster.config import ClusterConfig, FuseConfig, GlobalConfig  # noqa: E402
from stylecluster.data.decode import load_image  # noqa: E402
from stylecluster.data.splits import split_by_artist  # noqa: E402
from stylecluster.evaluate import ari, nmi, purity  # noqa: E402
from stylecluster.features.backbones import create_backbone  # noqa: E402
from stylecluster.features.global_ import GlobalBranch  # noqa: E402
from stylecluster.train.global_style import data_id, group_codes, load_images, load_train_config, train_on_images  # noqa: E402

WORK = OUT / "global_training"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class MemoryStore:
    """The slice of the store interface that ``StyleClustering`` reads."""

    paths: list[str]
    global_vectors: np.ndarray
    global_parts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def vectors(self, column: str):
        return self.global_vectors if column == "global" else None

    def parts(self, column: str):
        return self.global_parts


def embed(branch: GlobalBranch, paths: list[Path], batch_size: int = 32) -> np.ndarray:
    branch.to(torch.device("cpu"))
    out = []
    for i in tqdm(range(0, len(paths), batch_size), desc="embedding", unit="batch", leave=False):
        batch = torch.stack([branch.preprocess(load_image(p), 0) for p in paths[i : i + batch_size]])
        out.append(branch.encode(batch))
    return np.concatenate(out)


def score(vectors: np.ndarray, parts: dict, names: list[str], styles: np.ndarray) -> dict:
    store = MemoryStore(names, vectors, parts)
    result = {}
    for method in ("kmeans", "bgmm"):
        clustering = StyleClustering(ClusterConfig(method=method, k=11, seed=0), FuseConfig(local_weight=0.0)).fit(store)
        labels = clustering.labels_
        result[method] = {"nmi": nmi(styles, labels), "purity": purity(styles, labels), "ari": ari(styles, labels), "clusters": int(clustering.n_clusters_)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=1500, help="training images drawn from the training artists (CPU budget)")
    parser.add_argument("--eval-per-style", type=int, default=100, help="held-out images scored per style (CPU budget; 0 = all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--only", nargs="*", help="variant names to run")
    parser.add_argument("--raw-store", type=Path, help="raw global store of wikiart-styles, to fit the artist-discriminant head")
    args = parser.parse_args()
    torch.manual_seed(0)
    WORK.mkdir(parents=True, exist_ok=True)

    labels = pd.read_csv(WIKIART / "labels.csv")
    train, held_out = split_by_artist(labels, validation_fraction=0.3, seed=0)
    assert not set(train.artist) & set(held_out.artist)
    if args.eval_per_style:
        held_out = held_out.sample(frac=1, random_state=0).groupby("style").head(args.eval_per_style).sort_index()
    eval_paths = [WIKIART / p for p in held_out.path]
    styles = held_out["style"].to_numpy()
    # a training subset spread over all training artists (round-robin, seeded)
    subset = train.sample(frac=1, random_state=0)
    subset = subset.assign(rank=subset.groupby("artist").cumcount()).sort_values(["rank"], kind="stable").head(args.train_images)
    print(f"artists: {train.artist.nunique()} train / {held_out.artist.nunique()} held out; "
          f"images: {len(subset)} used for training, {len(held_out)} held-out images scored")

    train_images = None

    def train_images_once():
        nonlocal train_images
        if train_images is None:
            tensor, kept, _ = load_images([WIKIART / p for p in subset.path], 144, workers=2)
            train_images = (tensor, group_codes(subset.iloc[kept], len(kept)), data_id(list(subset.path.iloc[kept]), load_train_config()))
        return train_images

    size = args.image_size
    variants = {
        "lite0_pooled_gram (default, ImageNet)": lambda: GlobalBranch(GlobalConfig(style_head=None)),
        "vit_tiny random-init": lambda: GlobalBranch(
            GlobalConfig(backbone="vit_tiny_patch16_224", gram_levels=(), image_size=size),
            backbone=create_backbone("vit_tiny_patch16_224", "random", dynamic_img_size=True)),
        "hybrid untrained (Lite0 stem)": lambda: GlobalBranch(GlobalConfig(backbone="vit_hybrid_lite0", gram_levels=(), image_size=size)),
    }
    stats: dict[str, dict] = {}
    # (variant prefix, backbone, training overrides): the hybrid starts from the pretrained Lite0
    # stem (frozen); the plain ViT-tiny from random weights, all of it trained.
    architectures = [("hybrid", "vit_hybrid_lite0", {}), ("vit_tiny", "vit_tiny_patch16_224", {"weights": "random", "freeze_stem": False})]
    for prefix, backbone, overrides in architectures:
        for method in ("csd", "simclr"):
            def trained(method=method, prefix=prefix, backbone=backbone, overrides=overrides):
                out = WORK / f"{prefix}_{method}.pt"
                images, groups, data = train_images_once()
                config = load_train_config(CONFIGS / f"train_{method}.yaml", epochs=args.epochs, image_size=size, backbone=backbone, **overrides)
                started = time.perf_counter()
                history = train_on_images(images, groups, config, out, device="cpu", data=data)
                stats[f"{prefix} + {method}"] = {"seconds": time.perf_counter() - started, "history": history}
                return GlobalBranch(GlobalConfig(backbone=backbone, weights=str(out), gram_levels=(), image_size=size),
                                    backbone=create_backbone(backbone, str(out), dynamic_img_size=True))
            variants[f"{prefix} + {method}"] = trained

    if args.raw_store:
        def with_head():
            from stylecluster.store import load_store
            from stylecluster.train.style_head import train_style_head

            head = WORK / "style_head.pt"
            started = time.perf_counter()
            train_style_head(load_store(args.raw_store), WIKIART / "labels.csv", head, holdout=0.3, seed=0)
            stats["Lite0 pooled + Gram + artist-discriminant head"] = {"history": [{"seconds": time.perf_counter() - started}]}
            return GlobalBranch(GlobalConfig(style_head=str(head)))
        variants["Lite0 pooled + Gram + artist-discriminant head"] = with_head

    rows = []
    order = [*(["Lite0 pooled + Gram + artist-discriminant head"] if args.raw_store else []), "lite0_pooled_gram (default, ImageNet)", "hybrid + csd", "hybrid untrained (Lite0 stem)", "hybrid + simclr", "vit_tiny random-init", "vit_tiny + csd", "vit_tiny + simclr"]
    for name in order:
        make = variants[name]
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
        cache = WORK / f"{slug}.json"
        if args.only and not any(o in name for o in args.only):
            if cache.is_file():
                rows.append(json.loads(cache.read_text()))
            continue
        if cache.is_file():
            rows.append(json.loads(cache.read_text()))
            if (WORK / f"{slug}_pooled.json").is_file():
                rows.append(json.loads((WORK / f"{slug}_pooled.json").read_text()))
            continue
        print(f"--- {name}")
        started = time.perf_counter()
        branch = make()
        trained_stats = stats.get(name, {})
        vectors_file = WORK / f"{slug}.npy"
        if vectors_file.is_file():  # embedded before: only the clustering is redone
            vectors = np.load(vectors_file)
        else:
            vectors = embed(branch, eval_paths)
            np.save(vectors_file, vectors)
        result = score(vectors, branch.parts, list(held_out.path), styles)
        row = {
            "variant": name,
            "parts": list(branch.parts),
            "train_minutes": round(sum(r["seconds"] for r in trained_stats.get("history") or []) / 60, 1),
            "train_history": trained_stats.get("history"),
            "total_minutes": round((time.perf_counter() - started) / 60, 1),
            **{f"{m}_{k}": v for m, r in result.items() for k, v in r.items()},
        }
        cache.write_text(json.dumps(row, indent=2))
        rows.append(row)
        if "pooled" in branch.parts and len(branch.parts) > 1:
            # the pooled part alone: the same forward pass, no Gram statistics
            start, stop = branch.parts["pooled"]
            pooled = score(vectors[:, start:stop], {"pooled": (0, stop - start)}, list(held_out.path), styles)
            rows.append({"variant": f"{name}: pooled part only", "parts": ["pooled"], "train_minutes": 0.0,
                         **{f"{m}_{k}": v for m, r in pooled.items() for k, v in r.items()}})
            (WORK / f"{slug}_pooled.json").write_text(json.dumps(rows[-1], indent=2))
        print_table([row], ["variant", "kmeans_nmi", "kmeans_purity", "kmeans_ari", "bgmm_nmi", "bgmm_purity", "bgmm_ari", "train_minutes"])
    print()
    print_table(rows, ["variant", "kmeans_nmi", "kmeans_purity", "kmeans_ari", "bgmm_nmi", "bgmm_purity", "bgmm_ari", "bgmm_clusters", "train_minutes"])
    path = write_json("global_training.json", {
        "protocol": {"data": str(WIKIART), "split": "by artist, 30 % held out, seed 0", "train_images": len(subset),
                     "held_out_images_scored": len(held_out), "epochs": args.epochs, "image_size": size},
        "rows": rows,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
