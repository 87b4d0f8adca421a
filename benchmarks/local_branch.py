"""Local (brush-stroke) branch: does it add style information to the global branch?

For each data set (wikiart-styles by style, aic-cc0 by period) this embeds the images once with
the global branch and once per patch-scale mode with the local branch alone (separate stores,
resumable, under ``--work``), then clusters local-only, global-only and fused vectors (the project's ``Fuser`` with its
default PCA/whitening, then k-means with k = number of labels, several seeds) across a sweep of
``local_weight`` and reports NMI / purity / ARI. It also times patch extraction per image and
reads the training time per epoch from the encoder's checkpoint.

    python benchmarks/local_branch.py                       # everything (slow: full wikiart)
    python benchmarks/local_branch.py --per-label 100       # stratified subset per label
    python benchmarks/local_branch.py --datasets aic-cc0 --weights 0.5,1

Prints a table; writes ``benchmarks/out/local_branch.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stylecluster.cluster import make_clusterer
from stylecluster.cluster.fuse import Fuser, blocks_for_store
from stylecluster.config import Config, FuseConfig, LocalConfig
from stylecluster.data.decode import load_image
from stylecluster.evaluate import evaluate_labels
from stylecluster.features.embedder import embed_images
from stylecluster.features.global_ import GlobalBranch
from stylecluster.features.infovae import load_checkpoint
from stylecluster.features.local_ import LocalBranch, default_model_path
from stylecluster.features.patches import extract_patches
from stylecluster.store import load_store

HERE = Path(__file__).resolve().parent
DATASETS = {"wikiart-styles": "style", "aic-cc0": "period"}
MODES = ("pixels", "relative")


class Columns:
    """The vector columns of several stores aligned on path (the store interface fusion reads)."""

    def __init__(self, paths: list[str], columns: dict[str, tuple[np.ndarray, dict]]):
        self.paths = paths
        self._columns = columns

    @classmethod
    def join(cls, paths: list[str], picks: dict[str, tuple]) -> "Columns":
        """``picks``: output column → (store, store column); rows follow ``paths``."""
        columns = {}
        for name, (store, column) in picks.items():
            index = {p: i for i, p in enumerate(store.paths)}
            columns[name] = (store.vectors(column)[[index[p] for p in paths]], store.parts(column))
        return cls(paths, columns)

    def vectors(self, column: str):
        return self._columns[column][0] if column in self._columns else None

    def parts(self, column: str) -> dict:
        return self._columns[column][1]


def select_images(root: Path, label: str, per_label: int | None, seed: int) -> pd.DataFrame:
    table = pd.read_csv(root / "labels.csv")[["path", label]].dropna()
    table = table[[(root / p).is_file() for p in table["path"]]]
    if per_label:
        table = table.sample(frac=1, random_state=seed).groupby(label).head(per_label)
    return table.sort_values("path").reset_index(drop=True)


def build_store(paths: list[Path], root: Path, out: Path, config: Config, branch) -> None:
    report = embed_images(paths, root, out, config, quiet=True, branches=[branch])
    if report.skipped:
        print(f"  {out.name}: skipped {len(report.skipped)} files")


def fused_space(view: Columns, seed: int, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fused coordinates at local_weight 1 and a mask of the local columns.

    The Fuser's output for weight w is its output for weight 1 with the local columns times w
    (each block is PCA'd and scaled independently, and a branch's weight only enters the scale),
    so one fit serves the whole weight sweep; global-only and local-only are column subsets.
    """
    X, blocks = blocks_for_store(view, local_weight=1.0)
    fuser = Fuser(blocks, pca_components=FuseConfig().pca_components, whiten=whiten, random_state=seed)
    Z = fuser.fit_transform(X)
    local = np.concatenate([np.full(p.n_components_, b.column == "local") for b, p in zip(blocks, fuser.pcas_)])
    return Z, local


def score(Z: np.ndarray, labels: np.ndarray, k: int, seeds: int) -> dict[str, float]:
    runs = []
    for seed in range(seeds):
        predicted = make_clusterer("kmeans", k=k, seed=seed).fit(Z).labels_
        result = evaluate_labels(labels, predicted)
        runs.append([result["nmi"], result["purity"], result["ari"]])
    mean, std = np.mean(runs, axis=0), np.std(runs, axis=0)
    return {"nmi": mean[0], "purity": mean[1], "ari": mean[2], "nmi_std": std[0]}


def time_extraction(paths: list[Path], config: LocalConfig, n: int) -> float:
    """Seconds per image for patch extraction alone (decoding excluded)."""
    images = [load_image(p) for p in paths[:n]]
    started = time.perf_counter()
    for i, image in enumerate(images):
        extract_patches(image, config, seed=i)
    return (time.perf_counter() - started) / len(images)


def run_dataset(name: str, label: str, args: argparse.Namespace, model: Path) -> dict:
    root = args.data / name
    table = select_images(root, label, args.per_label, args.seed)
    paths = [root / p for p in table["path"]]
    labels = table[label].to_numpy()
    k = len(set(labels))
    work = args.work / f"{name}-{args.per_label or 'all'}"
    config = Config()
    config.embed.workers = args.workers
    print(f"{name}: {len(paths)} images, {k} {label} labels")

    global_branch = GlobalBranch(config.global_)
    started = time.perf_counter()
    if name in args.global_store:
        global_store = load_store(args.global_store[name])
        if global_store.metadata["branches"].get("global") != global_branch.provenance():
            raise SystemExit(f"{args.global_store[name]}: its global branch is not today's default; drop --global-store")
    else:
        build_store(paths, root, work / "global.store", config, global_branch)
        global_store = load_store(work / "global.store")
    timings = {"embed_global_s": time.perf_counter() - started}
    stores = {"global": global_store}
    for mode in MODES:
        local_config = replace(config.local, model=str(model), patch_scale=mode, **args.local)
        started = time.perf_counter()
        build_store(paths, root, work / f"local-{mode}{args.tag}.store", config, LocalBranch(local_config))
        timings[f"embed_local_{mode}_s"] = time.perf_counter() - started
        timings[f"extract_{mode}_ms_per_image"] = 1000 * time_extraction(paths, local_config, args.timing_images)
        stores[mode] = load_store(work / f"local-{mode}{args.tag}.store")

    rel = [p.relative_to(root).as_posix() for p in paths]
    rows = []
    for mode in MODES:
        view = Columns.join(rel, {"global": (stores["global"], "global"), "local": (stores[mode], "local")})
        Z, local = fused_space(view, args.seed, args.whiten)
        if mode == MODES[0]:
            rows.append({"dataset": name, "embedding": "global only", "mode": "-", "local_weight": 0.0, **score(Z[:, ~local], labels, k, args.seeds)})
        rows.append({"dataset": name, "embedding": "local only", "mode": mode, "local_weight": np.inf, **score(Z[:, local], labels, k, args.seeds)})
        for weight in args.weights:
            weighted = np.where(local, weight, 1.0).astype(np.float32) * Z
            rows.append({"dataset": name, "embedding": "fused", "mode": mode, "local_weight": weight, **score(weighted, labels, k, args.seeds)})
    return {"images": len(paths), "labels": k, "label_column": label, "timings": timings, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    parser.add_argument("--per-label", type=int, default=None, help="stratified subset: at most N images per label")
    parser.add_argument("--weights", default="0.25,0.5,0.75,1,1.5,2", help="local_weight values for the fused rows")
    parser.add_argument("--model", type=Path, default=None, help="local encoder checkpoint (default: the shipped one)")
    parser.add_argument("--seeds", type=int, default=3, help="k-means seeds averaged per row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timing-images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local", action="append", default=[], metavar="FIELD=VALUE",
                        help="LocalConfig override for the local stores, repeatable (e.g. aggregate=mean+std, n_patches=20)")
    parser.add_argument("--no-whiten", dest="whiten", action="store_false", help="fuse without whitening each block's PCA")
    parser.add_argument("--global-store", action="append", default=[], metavar="DATASET=STORE",
                        help="reuse an existing global-only store of DATASET made with the default global branch")
    parser.add_argument("--work", type=Path, default=HERE / "out" / "local_branch_work", help="stores (resumable)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "local_branch.json")
    args = parser.parse_args()
    args.weights = [float(w) for w in args.weights.split(",")]
    args.global_store = dict(item.split("=", 1) for item in args.global_store)
    fields = {f.name: f.type for f in dataclasses.fields(LocalConfig)}
    args.local = {k: (v if fields[k] == "str" else type(getattr(LocalConfig(), k))(v)) for k, v in (i.split("=", 1) for i in args.local)}
    args.tag = "".join(f"-{k}={v}" for k, v in sorted(args.local.items()))
    model = args.model or default_model_path()
    checkpoint = load_checkpoint(model)

    results = {"settings": {"per_label": args.per_label, "local": args.local, "whiten": args.whiten, "seeds": args.seeds}, "datasets": {}}
    for name in args.datasets.split(","):
        results["datasets"][name] = run_dataset(name, DATASETS[name], args, model)
    history = checkpoint.get("history", [])
    results["training"] = {
        "model": str(model),
        "epochs": len(history),
        "seconds_per_epoch": [round(r["seconds"], 1) for r in history],
        "final_losses": {k: history[-1][k] for k in ("loss", "recon", "kl", "mmd")} if history else None,
    }
    results["machine"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
                          "cpus": torch.get_num_threads(), "torch": torch.__version__}

    frame = pd.DataFrame([r for d in results["datasets"].values() for r in d["rows"]])
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, d in results["datasets"].items():
        print(name, {k: round(v, 2) for k, v in d["timings"].items()})
    print("training", results["training"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
