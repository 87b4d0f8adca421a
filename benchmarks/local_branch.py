"""Does the local (brush-stroke) branch add style information? Artist-disjoint, several seeds.

Every labelled image of the three shared sets is embedded once per patch scale with the designed
front end (Sobel scores, top 10 %, draws ∝ score, DoG σ 3/5, InfoVAE μ) and **every drawn patch's
code kept** (``--patches`` draws, 32 by default; the first n draws of a successive ∝-score sample
are themselves such a sample of n, so 5 and 16 patches come from the same store). Aggregations,
local style heads and fusion weights are then compared from the stored codes:

* aggregations: ``mean`` and ``mean+std`` of the first 5 / 16 / 32 codes;
* local head: the artist-discriminant head (features/style_head.py) fitted on the aggregated
  codes of the training artists only;
* global vector: the default style head fitted on the same training artists (the raw store comes
  from ``benchmarks/generalisation.py``'s work folder);
* protocols: ``wikiart`` — 30 % of the artists held out (seeded), their wikiart images clustered
  by movement; ``aic`` — heads fitted on every wikiart image by an artist absent from aic-cc0,
  all aic-cc0 paintings clustered by period (high resolution: strokes are visible).

Scores: k-means (k = number of labels) and BGMM (k inferred) NMI, mean ± sd over seeds, for
local only, global only, and fused at each ``--weights`` value (the product's ``Fuser``).

With ``--from-patches`` the drawn patches themselves are kept once (uint8, the same per-image
seed as ``embed``) and encoded by ``--local-model``: several encoders (``local_artist_term.py``)
are then compared on exactly the same patches, in minutes instead of an embedding each.

    python benchmarks/local_branch.py --global-work benchmarks/out/generalisation_work
    python benchmarks/local_branch.py --from-patches --local-model ENCODER.pt --patches 32 ...
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import OUT, SHARED, print_table, write_json
from generalisation import DATASETS, artist_disjoint, head_variant, load_pool
from stylecluster.cluster import make_clusterer
from stylecluster.cluster.fuse import Fuser, part_blocks
from stylecluster.config import Config
from stylecluster.data.dataset import image_seed
from stylecluster.data.decode import BadImage, load_image
from stylecluster.hashing import file_sha256
from stylecluster.io import save_atomic
from stylecluster.data.discovery import discover_images
from stylecluster.evaluate import evaluate_labels
from stylecluster.features.embedder import embed_images
from stylecluster.features.local_ import LocalBranch
from stylecluster.features.patches import extract_patches
from stylecluster.store import load_store


class PatchCodes(LocalBranch):
    """The local branch with no aggregation: every drawn patch's code, flattened (benchmark only)."""

    @property
    def dim(self) -> int:
        return self.config.n_patches * self.encoder.arch.latent_dim

    def encode(self, batch) -> np.ndarray:
        patches = torch.as_tensor(batch).to(self.device, torch.float32)
        with torch.inference_mode():
            mu, _ = self.encoder(patches.flatten(0, 1))
        return mu.reshape(len(patches), -1).float().cpu().numpy()

    def provenance(self) -> dict:
        return {**super().provenance(), "aggregate": "codes"}


def code_stores(work: Path, mode: str, n_patches: int, workers: int, model: str | None = None) -> pd.DataFrame:
    """(dataset, path, codes[n, n_patches, latent]) for every image of the shared sets, encoded by
    ``model`` (an InfoVAE checkpoint; None: the packaged encoder). The patches drawn depend only
    on the image and the patch settings, so two encoders' stores hold codes of the same patches."""
    config = Config()
    config.local = replace(config.local, n_patches=n_patches, patch_scale=mode, style_head=None, model=model)
    config.embed.workers = workers
    frames = []
    for name in DATASETS:
        root = SHARED / name
        out = work / f"codes-{mode}-{n_patches}" / f"{name}.store"
        embed_images(discover_images(root), root, out, config, quiet=True, branches=[PatchCodes(config.local)])
        store = load_store(out)
        codes = store.vectors("local").reshape(len(store), n_patches, -1)
        frames.append(pd.DataFrame({"dataset": name, "path": store.paths, "codes": list(codes)}))
    return pd.concat(frames, ignore_index=True)


def _drawn(task: tuple[Path, object]) -> np.ndarray | None:
    path, config = task
    try:
        image = load_image(path)
    except BadImage:
        return None
    return extract_patches(image, config, image_seed(file_sha256(path), 0)).dog.astype(np.uint8)


def drawn_patches(work: Path, mode: str, n_patches: int, workers: int) -> pd.DataFrame:
    """(dataset, path, patches[n_patches, s, s] uint8) for every image of the shared sets: the DoG
    patches ``embed`` draws (same per-image seed), kept once so that several encoders can be
    trained on and compared over exactly the same patches (``--from-patches``)."""
    import multiprocessing

    config = replace(Config().local, n_patches=n_patches, patch_scale=mode)
    frames = []
    for name in DATASETS:
        root = SHARED / name
        cache = work / f"drawn-{mode}-{n_patches}" / f"{name}.npz"
        if not cache.is_file():
            paths = discover_images(root)
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                drawn = pool.map(_drawn, [(p, config) for p in paths], chunksize=16)
            keep = [i for i, d in enumerate(drawn) if d is not None]
            relative = np.array([paths[i].relative_to(root).as_posix() for i in keep])
            stacked = np.stack([drawn[i] for i in keep])
            save_atomic(cache, lambda tmp: np.savez(tmp, paths=relative, patches=stacked))
        with np.load(cache) as stored:
            frames.append(pd.DataFrame({"dataset": name, "path": stored["paths"], "patches": list(stored["patches"])}))
    return pd.concat(frames, ignore_index=True)


def encode_patches(patches: np.ndarray, model: str | None, batch: int = 1024) -> np.ndarray:
    """The InfoVAE μ of (images, n, s, s) uint8 patches → (images, n, latent), as the branch computes it."""
    branch = LocalBranch(replace(Config().local, model=model, style_head=None))
    flat = patches.reshape(-1, 1, *patches.shape[2:])
    out = []
    with torch.inference_mode():
        for start in range(0, len(flat), batch):
            x = torch.from_numpy(flat[start : start + batch]).float().div_(255).contiguous(memory_format=torch.channels_last)
            out.append(branch._posterior_mean(x).float().numpy())
    return np.concatenate(out).reshape(len(patches), patches.shape[1], -1)


def aggregate(codes: np.ndarray, n: int, how: str) -> np.ndarray:
    first = codes[:, :n]
    parts = [first.mean(axis=1)]
    if how == "mean+std":
        parts.append(first.std(axis=1))
    return np.hstack(parts)


def head_space(train_X, train_groups, test_X, parts, **params) -> tuple[np.ndarray, dict]:
    """The test images' vectors projected by a head fitted on the training ones (generalisation.py's)."""
    return head_variant(**params)(train_X, train_groups, test_X, parts)


def scores(Z: np.ndarray, truth: np.ndarray, seed: int) -> dict[str, float]:
    out = {}
    for method in ("kmeans", "bgmm"):
        labels = make_clusterer(method, k=len(np.unique(truth)) if method == "kmeans" else None, seed=seed).fit(Z).labels_
        out[f"{method}_nmi"] = float(evaluate_labels(truth, labels)["nmi"])
    return out


def fuse(global_vec, global_parts, local_vec, local_parts, weight, seed) -> np.ndarray:
    blocks = part_blocks("global", global_parts, 1.0)
    if local_vec is None:
        return Fuser(blocks, random_state=seed).fit_transform(global_vec)
    offset = global_vec.shape[1]
    blocks += part_blocks("local", local_parts, weight, offset)
    return Fuser(blocks, random_state=seed).fit_transform(np.hstack([global_vec, local_vec]))


def splits(pool: pd.DataFrame, seeds: int) -> list[tuple[str, int, np.ndarray, np.ndarray, np.ndarray]]:
    """(protocol, seed, train rows, test rows, truth labels)."""
    out = [("wikiart", s.seed, s.train, s.test, pool["movement"].to_numpy()[s.test].astype(str)) for s in artist_disjoint(pool, seeds)]
    aic = pool["dataset"].to_numpy() == "aic-cc0"
    aic_artists = set(pool.loc[aic, "artist"])
    train = np.flatnonzero(~aic & ~pool["artist"].isin(aic_artists).to_numpy())
    periods = pd.read_csv(SHARED / "aic-cc0" / "labels.csv").set_index("path")["period"]
    test = np.flatnonzero(aic)
    truth = periods.reindex(pool["path"].to_numpy()[test]).astype(str).to_numpy()
    out += [("aic", seed, train, test, truth) for seed in range(seeds)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=OUT / "local_branch_work", help="patch-code stores (resumable)")
    parser.add_argument("--global-work", type=Path, default=OUT / "generalisation_work", help="raw global stores (generalisation.py)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--modes", default="pixels,relative")
    parser.add_argument("--patches", type=int, default=32)
    parser.add_argument("--global-components", type=int, default=128, help="output dimensions of the global style head")
    parser.add_argument("--aggregations", default="mean:5,mean+std:16,mean+std:32")
    parser.add_argument("--local-heads", default="none,lda32", help="none, or ldaN (artist head with N outputs)")
    parser.add_argument("--weights", default="0.25,0.5")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="local_branch.json", help="JSON file name under benchmarks/out/")
    parser.add_argument("--build-only", action="store_true", help="embed the patch-code stores and stop")
    parser.add_argument("--from-patches", action="store_true", help="encode the kept drawn patches (drawn_patches) with --local-model instead of embedding code stores: encoders compared on the same patches")
    parser.add_argument("--local-model", help="InfoVAE checkpoint to encode the patches with (default: the packaged encoder; give each encoder its own --work)")
    args = parser.parse_args()
    if args.build_only:
        for mode in args.modes.split(","):
            code_stores(args.work, mode, args.patches, args.workers, args.local_model)
        return
    weights = [float(w) for w in args.weights.split(",")]

    pool, X, parts = load_pool(args.global_work, args.backbone, build=True, workers=args.workers)
    artists = pool["artist"].to_numpy()
    rows, global_spaces = [], {}
    for mode in args.modes.split(","):
        started = time.perf_counter()
        if args.from_patches:
            codes_table = drawn_patches(args.work, mode, args.patches, args.workers)
            codes_table["codes"] = list(encode_patches(np.stack(codes_table.pop("patches").to_numpy()), args.local_model))
        else:
            codes_table = code_stores(args.work, mode, args.patches, args.workers, args.local_model)
        embed_seconds = time.perf_counter() - started
        codes = np.stack(pool[["dataset", "path"]].merge(codes_table, on=["dataset", "path"], how="left")["codes"].to_numpy())
        for protocol, seed, train, test, truth in splits(pool, args.seeds):
            if (protocol, seed) not in global_spaces:  # the global side does not depend on the patch mode
                global_vec, global_parts = head_space(X[train], artists[train], X[test], parts, n_components=args.global_components)
                base = scores(fuse(global_vec, global_parts, None, None, 0, seed), truth, seed)
                global_spaces[protocol, seed] = global_vec, global_parts, base
                rows.append({"protocol": protocol, "mode": "-", "aggregation": "-", "local_head": "-", "weight": 0.0, "seed": seed, **base})
            global_vec, global_parts, base = global_spaces[protocol, seed]
            for spec in args.aggregations.split(","):
                how, n = spec.split(":")
                local_all = aggregate(codes, int(n), how)
                for local_head in args.local_heads.split(","):
                    if local_head == "none":
                        local_vec, local_parts = local_all[test], {"local": (0, local_all.shape[1])}
                    else:
                        local_vec, local_parts = head_space(local_all[train], artists[train], local_all[test], {"local": (0, local_all.shape[1])},
                                                            n_components=int(local_head[3:]), pca_components=local_all.shape[1])
                    key = {"protocol": protocol, "mode": mode, "aggregation": spec, "local_head": local_head, "seed": seed}
                    only = Fuser(part_blocks("local", local_parts, 1.0), random_state=seed).fit_transform(local_vec)
                    rows.append({**key, "weight": np.inf, **scores(only, truth, seed)})
                    for weight in weights:
                        Z = fuse(global_vec, global_parts, local_vec, local_parts, weight, seed)
                        row = {**key, "weight": weight, **scores(Z, truth, seed)}
                        row["gain_kmeans"] = row["kmeans_nmi"] - base["kmeans_nmi"]
                        row["gain_bgmm"] = row["bgmm_nmi"] - base["bgmm_nmi"]
                        rows.append(row)
                    print(f"{protocol} seed {seed} {mode} {spec} {local_head}: local only {rows[-len(weights) - 1]['kmeans_nmi']:.3f}, "
                          f"global {base['kmeans_nmi']:.3f}, fused " + " ".join(f"{r['weight']}:{r['kmeans_nmi']:.3f}" for r in rows[-len(weights):]), flush=True)
        rows.append({"protocol": "timing", "mode": mode, "embed_seconds": embed_seconds})
    frame = pd.DataFrame([r for r in rows if r["protocol"] != "timing"])
    table = []
    for key, group in frame.groupby(["protocol", "mode", "aggregation", "local_head", "weight"], sort=False):
        entry = dict(zip(["protocol", "mode", "aggregation", "local_head", "weight"], key))
        for metric in ("kmeans_nmi", "bgmm_nmi", "gain_kmeans", "gain_bgmm"):
            if metric in group and group[metric].notna().any():
                entry[metric] = f"{group[metric].mean():+.3f} ± {group[metric].std(ddof=0):.3f}" if metric.startswith("gain") else f"{group[metric].mean():.3f} ± {group[metric].std(ddof=0):.3f}"
        table.append(entry)
    print_table(table, ["protocol", "mode", "aggregation", "local_head", "weight", "kmeans_nmi", "bgmm_nmi", "gain_kmeans", "gain_bgmm"])
    timing = _time_patches(args.patches)
    print("patch extraction + encoding per image:", timing)
    print("wrote", write_json(args.out, {"settings": {k: str(v) for k, v in vars(args).items()}, "summary": table, "rows": rows, "per_image": timing}))


def _time_patches(n_patches: int, images: int = 40) -> dict[str, float]:
    """Milliseconds per image: patch extraction alone, and the encoder over the drawn patches."""
    paths = sorted((SHARED / "wikiart-styles" / "images").rglob("*.jpg"))[:images] + sorted((SHARED / "aic-cc0" / "images").glob("*.jpg"))[:images]
    decoded = [load_image(p) for p in paths]
    branch = LocalBranch(replace(Config().local, n_patches=n_patches))
    out = {}
    for n in sorted({5, 16, n_patches}):
        config = replace(Config().local, n_patches=n)
        started = time.perf_counter()
        batches = [extract_patches(image, config, seed=i).dog for i, image in enumerate(decoded)]
        out[f"extract_{n}_ms"] = 1000 * (time.perf_counter() - started) / len(decoded)
        tensor = torch.as_tensor(np.stack([b[:, None] / 255.0 for b in batches]).astype(np.float32))
        started = time.perf_counter()
        with torch.inference_mode():
            branch.encoder(tensor.flatten(0, 1))
        out[f"encode_{n}_ms"] = 1000 * (time.perf_counter() - started) / len(decoded)
    return {k: round(v, 2) for k, v in out.items()}


if __name__ == "__main__":
    main()
