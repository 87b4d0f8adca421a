"""Does an artist term in the InfoVAE loss make the local branch carry style? A controlled A/B.

Encoders are trained from scratch on the same patches — the DoG patches ``embed`` draws
(``local_branch.drawn_patches``, the first ``--train-patches`` of each image) of the images whose
artist is in *no* test set of ``local_branch.py``'s protocols (the held-out artists of every
artist-disjoint seed, and every aic-cc0 artist) — once per ``--weights`` value of the artist term
(0 is the plain InfoVAE: the control). Each is then scored with ``local_branch.py --from-patches
--local-model ENCODER`` on exactly the same patches, so the only difference is the loss.

    python benchmarks/local_artist_term.py --weights 0,20 --epochs 3
    python benchmarks/local_branch.py --from-patches --local-model benchmarks/out/local_artist_term/w20.pt ...

Writes the checkpoints and ``local_artist_term_w<weights>.json`` (training sizes, final losses).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from common import OUT, print_table, write_json
from generalisation import artist_disjoint, load_pool
from local_branch import drawn_patches
from stylecluster.train.infovae import InfoVAETrainConfig, fit_infovae


def training_images(pool: pd.DataFrame, seeds: int) -> np.ndarray:
    """Rows of images whose artist is in no test set of local_branch.py (any seed; aic-cc0)."""
    held = set(pool.loc[pool["dataset"] == "aic-cc0", "artist"])
    for split in artist_disjoint(pool, seeds):
        held |= set(pool["artist"].to_numpy()[split.test])
    return np.flatnonzero(~pool["artist"].isin(held).to_numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=OUT / "local_branch_work", help="local_branch.py's work folder (drawn patches)")
    parser.add_argument("--global-work", type=Path, default=OUT / "generalisation_work", help="raw global stores (generalisation.py): the image pool")
    parser.add_argument("--out", type=Path, default=OUT / "local_artist_term")
    parser.add_argument("--weights", default="0,20", help="artist-term weights; 0 is the control")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-patches", type=int, default=16, help="patches per training image (of the 32 drawn)")
    parser.add_argument("--patches-per-artist", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3, help="local_branch.py's seeds whose test artists are excluded")
    args = parser.parse_args()

    pool, _, _ = load_pool(args.global_work, "efficientnet_lite0", build=False, workers=0)
    drawn = drawn_patches(args.work, "pixels", 32, workers=2)
    table = pool.iloc[training_images(pool, args.seeds)][["dataset", "path", "artist"]].merge(drawn, on=["dataset", "path"], how="inner")
    rows = np.arange(len(table))
    patches = np.stack(table["patches"].to_numpy()[rows])[:, : args.train_patches]
    artists = pd.factorize(table["artist"].to_numpy()[rows])[0]
    groups = np.repeat(artists, args.train_patches)
    patches = patches.reshape(-1, *patches.shape[2:])
    print(f"training on {len(rows)} images of {artists.max() + 1} artists: {len(patches)} patches", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for weight in (float(w) for w in args.weights.split(",")):
        config = InfoVAETrainConfig(epochs=args.epochs, artist_weight=weight, patches_per_artist=args.patches_per_artist)
        out = args.out / f"w{weight:g}.pt"
        history = fit_infovae(patches, out, config, device="cpu", metadata={"data": f"local_artist_term:{len(rows)}:{args.train_patches}"}, groups=groups)
        last = history[-1]
        results.append({"artist_weight": weight, "checkpoint": str(out), **{k: round(v, 4) for k, v in last.items()}})
        print(f"w {weight:g}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()), flush=True)
    print_table(results, list(results[0]))
    name = "local_artist_term_w" + "_".join(args.weights.split(",")) + ".json"
    print("wrote", write_json(name, {"settings": {k: str(v) for k, v in vars(args).items()},
                                                          "images": int(len(rows)), "artists": int(artists.max() + 1), "results": results}))


if __name__ == "__main__":
    main()
