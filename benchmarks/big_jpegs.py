"""How far big JPEGs' vectors move when both branches decode them reduced (issue 23), and whether
clustering the AIC paintings by period changes.

    python benchmarks/big_jpegs.py                   # the AIC set as shipped, and enlarged to 3,000 px
    python benchmarks/big_jpegs.py --sizes 3000 --images 64

For each set, the paintings are embedded twice with torch (so only the decoding differs): as
before (the local branch asked for full resolution, so every file was decoded whole and its
patches scored at full size) and now (one decode at the global branch's DCT scale, the patches
scored on the luma reduced 2x and cut from the file's own luma; stylecluster/features/patches.py,
"Big JPEGs"). Reports per-image cosine between the two runs' vectors, per branch, beside the
cosine between two draws of today's local vectors (seed 0 vs 1): a local vector is the mean code
of five patches drawn at random among the top 10 %, so a different draw moves it as much as any
change of scoring can; then each run's clusters against the periods (NMI, ARI), and the two
runs' agreement. Writes benchmarks/out/big_jpegs.json.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SHARED, print_table, write_json
from speed import paintings_at_size

from stylecluster import Config, load_store
from stylecluster.cluster import StyleClustering
from stylecluster.evaluate import evaluate_clusters
from stylecluster.features.embedder import build_branches, embed_images
from stylecluster.features.local_ import LocalBranch

AIC = SHARED / "aic-cc0"


class FullResolutionLocal(LocalBranch):
    """The local branch as it was before: it asks for the whole file at full resolution."""

    decode_side = None


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def embed(paths: list[Path], root: Path, out: Path, before: bool, seed: int = 0) -> float:
    config = Config()
    config.embed.runtime, config.embed.seed = "torch", seed
    branches = build_branches(config, __import__("torch").device("cpu"))
    if before:
        branches[1].__class__ = FullResolutionLocal
    start = time.perf_counter()
    embed_images(paths, root, out, config, quiet=True, branches=branches)
    return time.perf_counter() - start


def aligned(store, branch: str, order: list[str]) -> np.ndarray:
    """The store's vectors of ``branch`` in the row order ``order`` (paths): runs write rows in
    the order their batches finish."""
    row = {path: i for i, path in enumerate(store.paths)}
    return store.vectors(branch)[[row[p] for p in order]]


def clusters(store, labels, method: str, k: int, order: list[str]) -> tuple[dict, np.ndarray]:
    config = Config()
    config.cluster.method, config.cluster.k = method, k
    frame = StyleClustering(config.cluster, config.fuse).fit(store).to_frame()
    result = evaluate_clusters(frame, labels, "period")
    return result, frame.set_index("path").loc[order, "cluster"].to_numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="original,3000", help="comma-separated: original (the AIC files) and/or longer sides in px")
    parser.add_argument("--images", type=int, default=267)
    parser.add_argument("--methods", default="kmeans,bgmm")
    args = parser.parse_args(argv)
    if not (AIC / "labels.csv").is_file():
        print(f"no labels.csv in {AIC}: the shared data is needed for this benchmark", file=sys.stderr)
        return 2
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    table = pd.read_csv(AIC / "labels.csv").sort_values("path").head(args.images)
    k = table["period"].nunique()
    work = Path(tempfile.mkdtemp())
    rows = []
    try:
        for size in args.sizes.split(","):
            if size == "original":
                paths, root = [AIC / p for p in table["path"]], AIC
                labels = table[["path", "period"]]
            else:
                paths, root = paintings_at_size(int(size), len(table))  # same order as sorted(rglob) of the set
                order = sorted((AIC / "images").glob("*.jpg"))[: len(paths)]
                by_name = dict(zip((p.relative_to(AIC).as_posix() for p in order), (p.name for p in paths)))
                labels = table.assign(path=table["path"].map(by_name))[["path", "period"]].dropna()
            stores = {}
            for name, before, seed in (("before", True, 0), ("before seed 1", True, 1), ("now", False, 0)):
                stores[name] = work / f"{size}-{name.replace(' ', '-')}.store"
                seconds = embed(paths, root, stores[name], before, seed)
                print(f"{size}: embedded {len(paths)} ({name}) in {seconds:.0f} s", flush=True)
            loaded = {name: load_store(path) for name, path in stores.items()}
            row = {"size": size, "images": len(paths)}
            order = sorted(loaded["before"].paths)
            for branch in ("global", "local"):
                c = cosines(aligned(loaded["now"], branch, order), aligned(loaded["before"], branch, order))
                row[f"{branch}_cos_min"], row[f"{branch}_cos_mean"] = float(c.min()), float(c.mean())
            c = cosines(aligned(loaded["before seed 1"], "local", order), aligned(loaded["before"], "local", order))
            row["local_cos_seed1_mean"] = float(c.mean())
            for method in args.methods.split(","):
                (before, a), (now, b), (seed1, c1) = (clusters(loaded[name], labels, method, k, order) for name in ("before", "now", "before seed 1"))
                row[f"{method}_nmi_before"], row[f"{method}_nmi_now"], row[f"{method}_nmi_seed1"] = before["nmi"], now["nmi"], seed1["nmi"]
                row[f"{method}_ari_now_vs_before"] = adjusted_rand_score(a, b)
                row[f"{method}_ari_seed1_vs_before"] = adjusted_rand_score(a, c1)
            rows.append(row)
            print_table(rows[-1:], list(rows[-1]))
            if size != "original":
                shutil.rmtree(root.parent)
    finally:
        shutil.rmtree(work)
    print_table(rows, list(rows[0]))
    print(f"wrote {write_json('big_jpegs.json', {'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
