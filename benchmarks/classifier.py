"""Supervised reference: CNN-only, ViT-only and fusion classifiers on artists they never saw,
beside the unsupervised clusters of the same test artists.

Protocol (issue 6; broader data, issue 11): wikiart-styles + wikiart-more, 13 movements, 11,568
images of 460 artists (names matched across the sets with ``artist_key``), split 7:1:2 *by
artist* (seed 0): 8,391 / 1,164 / 2,013 images, 322 / 46 / 92 artists. The movement ("style")
labels train the classifiers: they are the supervised reference. The CPU settings of
configs/classifier.yaml: frozen backbones (EfficientNet-Lite0 ImageNet weights stand in for
ResNet-50; the hybrid ViT's Lite0 stem for a pretrained ViT — no other weights are offline),
outputs cached once per view (clean + augmented views of the training images), heads trained on
the cache. Test accuracy / macro-F1 per model; training CPU-minutes from ``time.process_time``.

The unsupervised side reads the raw global stores (Lite0 pooled + Gram, 224 px, no head) that
benchmarks/generalisation.py builds. The default pipeline — the global vector alone, since
``fuse.local_weight`` is 0 by default, fused and clustered through ``StyleClustering`` with BGMM
(k inferred) and k-means (k = 13) — is fitted on the test artists' images alone and scored with
purity / NMI / Hungarian accuracy: on the raw vector, and through a style head of the shipped
recipe (``ArtistDiscriminantHead()``: 256 directions on a per-part PCA of 256) fitted on the
training artists only — the wikiart train split and every aic-cc0 image by an artist outside the
val and test splits — with artist names as its only labels. No test artist is seen by either
side. The linear probe (logistic regression on the fused raw vector) is fitted on the train split.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/classifier.py [--threads 2] [--epochs 10] [--models cnn fusion vit]
        [--stores benchmarks/out/generalisation_work/efficientnet_lite0] [--work benchmarks/out/classifier]

Work files (feature cache, about 2 GB, and checkpoints) in ``--work``; the table is printed and
written to benchmarks/out/classifier.json. Reruns reuse the cache and resume the checkpoints.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ARTIST_LABELLED, GENERALISATION_WORK, OUT, SHARED, artist_labelled, print_table, stored_vectors, write_json  # noqa: E402

from stylecluster import evaluate_clusters  # noqa: E402
from stylecluster.classify import LabelledImages, fit_classifier, load_classifier, load_classifier_config  # noqa: E402
from stylecluster.classify.data import FeatureCache, clean_view, encode_views, split_three_ways  # noqa: E402
from stylecluster.classify.models import classifier_class, create_classifier  # noqa: E402
from stylecluster.classify.report import score_predictions, top_confusions, worst_class  # noqa: E402
from stylecluster.classify.train import Inputs, predict_rows  # noqa: E402
from stylecluster.cluster import StyleClustering  # noqa: E402
from stylecluster.config import ClusterConfig, FuseConfig  # noqa: E402
from stylecluster.features.style_head import ArtistDiscriminantHead  # noqa: E402
from stylecluster.data.preload import load_images  # noqa: E402
from stylecluster.io import save_atomic  # noqa: E402

WORK = OUT / "classifier"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "classifier.yaml"
WIKIART_SETS = ("wikiart-styles", "wikiart-more")  # the sets with style labels


class VectorRows:
    """Images and their global vectors, with the interface ``StyleClustering`` reads from a store."""

    def __init__(self, paths: list[str], vectors: np.ndarray, parts: dict):
        self.paths, self._vectors, self._parts = paths, vectors, parts

    def __len__(self) -> int:
        return len(self.paths)

    def vectors(self, column: str):
        return self._vectors if column == "global" else None

    def parts(self, column: str):
        return self._parts if column == "global" else {}


def labelled_images(config, limit: int | None) -> tuple[LabelledImages, pd.DataFrame]:
    """Every image of both wikiart sets, decoded, its style the target, split by artist; the
    table has the columns dataset, path, key (``dataset/path``, unique), style, artist, split."""
    labels = artist_labelled(WIKIART_SETS, "style")
    if limit:
        labels = labels.sample(limit, random_state=0).sort_index().reset_index(drop=True)
    files = [SHARED / dataset / path for dataset, path in zip(labels["dataset"], labels["path"])]
    images, kept, skipped = load_images(files, config.image_size, workers=2)
    for line in skipped:
        print(f"skipped {line}")
    labels = labels.iloc[kept].reset_index(drop=True)
    labels["key"] = labels["dataset"] + "/" + labels["path"]
    labels["split"] = split_three_ways(labels, config.split, config.seed).to_numpy()
    classes = sorted(labels["style"].unique())
    targets = torch.as_tensor(pd.Categorical(labels["style"], categories=classes).codes.astype(np.int64))
    return LabelledImages(images, targets, labels["split"].to_numpy(), classes, labels["key"].tolist()), labels


def feature_cache(data: LabelledImages, config) -> tuple[FeatureCache, float]:
    """The fusion model's frozen outputs (the CNN map and the ViT's patch tokens: a superset of
    what the cnn and vit models need), computed once; returns it and its CPU-minutes."""
    scale = "-".join(f"{s:g}" for s in config.crop_scale)
    data_id = data.data_id(config.image_size)[:12]  # images, labels and split: another data set, another cache
    path = WORK / f"cache_{data_id}_{config.image_size}px_{config.views}views_crop{scale}_seed{config.seed}.pt"
    if path.is_file():
        payload = torch.load(path, weights_only=True)
        return FeatureCache.from_dict(payload), payload["cpu_minutes"]
    started = time.process_time()
    model = create_classifier(load_classifier_config(CONFIG, model="fusion"), len(data.classes))
    cache = encode_views(model, data.images, data.rows("train"), config, torch.device("cpu"), batch_size=64)
    minutes = (time.process_time() - started) / 60
    save_atomic(path, lambda tmp: torch.save({**cache.to_dict(), "cpu_minutes": minutes}, tmp))
    return cache, minutes


def check_cache(trained, cache: FeatureCache, data: LabelledImages) -> None:
    """The checkpoint's frozen parts reproduce the cached features (same weights, same inputs)."""
    index = torch.arange(4)
    with torch.inference_mode():
        fresh = trained.model.encode(clean_view(data.images[index]))
    for name, value in cache.take(index, torch.zeros_like(index)).items():
        error = float((fresh[name] - value.float()).abs().max() / fresh[name].abs().max())
        assert error < 1e-2, f"cached {name} features differ from the model's ({error:.3g})"


def run_model(kind: str, data: LabelledImages, cache: FeatureCache, epochs: int | None) -> dict:
    config = load_classifier_config(CONFIG, model=kind, epochs=epochs)
    out = WORK / f"{kind}.pt"
    parts = classifier_class(kind).parts
    own_cache = FeatureCache({k: v for k, v in cache.features.items() if k in parts}, cache.rows)
    started = time.process_time()
    result = fit_classifier(data, config, out, device="cpu", cache=own_cache, metadata={"label_column": "style"})
    cpu = (time.process_time() - started) / 60
    trained = load_classifier(out)
    check_cache(trained, own_cache, data)
    test = data.rows("test")
    logits = predict_rows(trained.model, Inputs(data, config, torch.device("cpu"), own_cache), test, 256)
    classes = np.asarray(data.classes, dtype=object)
    scores = score_predictions(classes[data.targets[test].numpy()], classes[logits.argmax(1).numpy()], data.classes)
    worst = worst_class(scores)
    train_seconds = sum(h["seconds"] for h in result.history)
    return {
        "model": kind, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
        "worst_class": f"{worst['class']} F1 {worst['f1']:.2f}", "epochs": len(result.history), "best_epoch": result.best_epoch,
        "train_cpu_min_this_run": round(cpu, 1), "train_wall_min": round(train_seconds / 60, 1),
        "trained_values": sum(v.numel() for v in trained.model.trained_state_dict().values()),
        "top_confusions": top_confusions(scores), "scores": scores, "history": result.history,
    }


def unsupervised(stores: Path, labels: pd.DataFrame) -> tuple[list[dict], dict]:
    """The default pipeline (global vector alone: ``fuse.local_weight`` is 0) on the test artists'
    images, without a style head and with the shipped recipe's head (``ArtistDiscriminantHead()``)
    fitted on the *training* artists only: the wikiart train split and every aic-cc0 image by an
    artist outside the val and test splits (the shipped head saw some of these test artists).
    Returns the rows and what the head was fitted on."""
    aic = artist_labelled(("aic-cc0",), None)
    held_out = set(labels.loc[labels["split"] != "train", "artist"])
    fit_side = pd.concat([labels[labels["split"] == "train"], aic[~aic["artist"].isin(held_out)]], ignore_index=True)
    test = labels[labels["split"] == "test"].reset_index(drop=True)
    assert not set(fit_side["artist"]) & set(test["artist"]), "a test artist on the head's side"
    X, parts, rows = stored_vectors(stores, fit_side)
    head = ArtistDiscriminantHead().fit(X, fit_side["artist"].to_numpy()[rows], parts)
    fitted_on = {"images": len(rows), "artists": head.n_artists_, "aic_images": int((fit_side["dataset"].iloc[rows] == "aic-cc0").sum())}
    X, parts, rows = stored_vectors(stores, test)
    test = test.iloc[rows]
    truth = test[["key", "style"]].rename(columns={"key": "path"})
    keys, k = test["key"].tolist(), labels["style"].nunique()
    spaces = (("raw pooled + Gram", VectorRows(keys, X, parts)),
              ("style head from the train artists", VectorRows(keys, head.transform(X), {"style": (0, head.n_components_)})))
    out = []
    for variant, subset in spaces:
        for method, method_k in (("bgmm", None), ("kmeans", k)):
            clustering = StyleClustering(ClusterConfig(method=method, k=method_k, seed=0), FuseConfig()).fit(subset)
            result = evaluate_clusters(clustering.to_frame(), truth, "style")
            out.append({"model": f"unsupervised {method}" + (f" k={method_k}" if method_k else "") + f", {variant}", "purity": result["purity"],
                        "nmi": result["nmi"], "hungarian_acc": result["accuracy"], "clusters": result["n_clusters"], "n_images": result["n_images"]})
    return out, fitted_on


def linear_probe(stores: Path, labels: pd.DataFrame) -> dict:
    """Logistic regression on the stored ImageNet pooled + Gram vectors (224 px), each part
    reduced as the fuser does, fitted on the training artists' images, scored on the test artists'."""
    from sklearn.linear_model import LogisticRegression

    from stylecluster.cluster.fuse import Fuser, part_blocks

    train, test = (labels[labels["split"] == side].reset_index(drop=True) for side in ("train", "test"))
    (X_train, parts, train_rows), (X_test, _, test_rows) = stored_vectors(stores, train), stored_vectors(stores, test)
    y_train, y_test = train["style"].to_numpy()[train_rows], test["style"].to_numpy()[test_rows]
    fuser = Fuser(part_blocks("global", parts, 1.0), pca_components=128).fit(X_train)
    probe = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(fuser.transform(X_train), y_train)
    scores = score_predictions(y_test, probe.predict(fuser.transform(X_test)), sorted(labels["style"].unique()))
    return {"model": "linear probe (pooled + Gram, 224 px)", "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "fusion", "vit"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="at most this many epochs per model (default: the config's)")
    parser.add_argument("--limit", type=int, help="a random sample of this many images (a quick smoke run, in its own work folder)")
    parser.add_argument("--stores", type=Path, default=GENERALISATION_WORK / "efficientnet_lite0",
                        help="raw global stores <dataset>.store of the three sets, as benchmarks/generalisation.py builds them")
    parser.add_argument("--work", type=Path, default=OUT / "classifier", help="feature cache and checkpoints (about 2 GB)")
    args = parser.parse_args()
    missing = [name for name in ARTIST_LABELLED if not (SHARED / name / "labels.csv").is_file()]
    if missing:
        print(f"no {', '.join(missing)} at {SHARED}")
        return 2
    if not all((args.stores / f"{name}.store").is_dir() for name in ARTIST_LABELLED):
        print(f"no raw stores in {args.stores}: build them with python benchmarks/generalisation.py --work {args.stores.parent} "
              f"--backbones {args.stores.name} --protocols aic --variants raw --seeds 1, or give --stores")
        return 2
    torch.set_num_threads(args.threads)
    global WORK
    WORK = args.work / f"limit{args.limit}" if args.limit else args.work
    WORK.mkdir(parents=True, exist_ok=True)
    config = load_classifier_config(CONFIG)
    data, labels = labelled_images(config, args.limit)
    counts = {side: int((data.split == side).sum()) for side in ("train", "val", "test")}
    artists = {side: int(labels.loc[labels["split"] == side, "artist"].nunique()) for side in ("train", "val", "test")}
    print(f"images {counts}, artists {artists}, styles {len(data.classes)}", flush=True)
    cache, cache_minutes = feature_cache(data, config)
    print(f"feature cache: {cache_minutes:.1f} CPU-min", flush=True)
    rows = []
    for kind in args.models:
        row = run_model(kind, data, cache, args.epochs)
        print(f"{kind}: accuracy {row['accuracy']:.3f}, macro-F1 {row['macro_f1']:.3f}, {row['train_cpu_min_this_run']} CPU-min", flush=True)
        save_atomic(WORK / f"{kind}.json", json.dumps(row, indent=2))
        rows.append(row)
    clusters, head_fitted_on = unsupervised(args.stores, labels)
    print(f"style head fitted on {head_fitted_on}", flush=True)
    probe = linear_probe(args.stores, labels)
    print(f"{probe['model']}: accuracy {probe['accuracy']:.3f}, macro-F1 {probe['macro_f1']:.3f}", flush=True)
    print_table(rows, ["model", "accuracy", "macro_f1", "worst_class", "epochs", "best_epoch", "train_cpu_min_this_run", "train_wall_min"])
    print()
    print_table(clusters, ["model", "purity", "nmi", "hungarian_acc", "clusters", "n_images"])
    for row in rows:
        print(f"{row['model']} top confusions: " + "; ".join(row["top_confusions"][:3]))
    path = write_json(f"classifier{'_limit%d' % args.limit if args.limit else ''}.json", {
        "split": {"images": counts, "artists": artists, "styles": data.classes}, "stores": str(args.stores),
        "feature_cache_cpu_min": cache_minutes, "config": config.to_dict(),
        "classifiers": [{k: v for k, v in r.items() if k != "scores"} | {"per_class": r["scores"]["per_class"]} for r in rows],
        "unsupervised": clusters, "style_head_fitted_on": head_fitted_on,
        "linear_probe": probe,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
