"""Supervised reference: CNN-only, ViT-only and fusion classifiers on artists they never saw,
beside the unsupervised clusters of the same test artists.

Protocol (issue 6): wikiart-styles (11 styles), split 7:1:2 *by artist* (seed 0). The CPU
settings of configs/classifier.yaml: frozen backbones (EfficientNet-Lite0 ImageNet weights stand
in for ResNet-50; the hybrid ViT's Lite0 stem for a pretrained ViT — no other weights are
offline), outputs cached once per view (clean + augmented views of the training images), heads
trained on the cache. Test accuracy / macro-F1 per model; training CPU-minutes from
``time.process_time``. The unsupervised pipeline (default global + local store vectors, fusion
and clustering through ``StyleClustering``) is fitted on the test artists' images alone and
scored with purity / NMI / Hungarian accuracy — on the ImageNet vector, and with a style head
fitted on the classifier's training artists (so no test artist is seen by either side).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/classifier.py [--threads 2] [--epochs 10] [--models cnn fusion vit]

Work files (feature cache, checkpoints) in benchmarks/out/classifier/; the table is printed and
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
from common import OUT, WIKIART, print_table, write_json  # noqa: E402

from stylecluster import evaluate_clusters, load_store, read_labels  # noqa: E402
from stylecluster.classify import LabelledImages, fit_classifier, load_classifier, load_classifier_config  # noqa: E402
from stylecluster.classify.data import FeatureCache, clean_view, encode_views, split_three_ways  # noqa: E402
from stylecluster.classify.models import classifier_class, create_classifier  # noqa: E402
from stylecluster.classify.report import score_predictions, top_confusions, worst_class  # noqa: E402
from stylecluster.classify.train import Inputs, predict_rows  # noqa: E402
from stylecluster.cluster import StyleClustering  # noqa: E402
from stylecluster.config import ClusterConfig, FuseConfig  # noqa: E402
from stylecluster.features.style_head import ArtistDiscriminantHead  # noqa: E402
from stylecluster.data.preload import load_images  # noqa: E402

WORK = OUT / "classifier"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "classifier.yaml"
STORE = Path("/work/stores/wikiart-full.store")


class StoreRows:
    """The rows ``keep`` of a store, with the interface ``StyleClustering`` reads."""

    def __init__(self, store, keep: np.ndarray):
        self.store, self.keep = store, np.asarray(keep)

    def __len__(self) -> int:
        return len(self.keep)

    @property
    def paths(self) -> list[str]:
        all_paths = self.store.paths
        return [all_paths[i] for i in self.keep]

    def vectors(self, column: str):
        values = self.store.vectors(column)
        return None if values is None else values[self.keep]

    def parts(self, column: str):
        return self.store.parts(column)


def labelled_images(config, limit: int | None) -> tuple[LabelledImages, pd.DataFrame]:
    labels = pd.read_csv(WIKIART / "labels.csv")
    if limit:
        labels = labels.sample(limit, random_state=0).sort_index().reset_index(drop=True)
    images, kept, skipped = load_images([WIKIART / p for p in labels["path"]], config.image_size, workers=2)
    for line in skipped:
        print(f"skipped {line}")
    labels = labels.iloc[kept].reset_index(drop=True)
    labels["split"] = split_three_ways(labels, config.split, config.seed).to_numpy()
    classes = sorted(labels["style"].unique())
    targets = torch.as_tensor(pd.Categorical(labels["style"], categories=classes).codes.astype(np.int64))
    return LabelledImages(images, targets, labels["split"].to_numpy(), classes, labels["path"].tolist()), labels


def feature_cache(data: LabelledImages, config) -> tuple[FeatureCache, float]:
    """The fusion model's frozen outputs (the CNN map and the ViT's patch tokens: a superset of
    what the cnn and vit models need), computed once; returns it and its CPU-minutes."""
    scale = "-".join(f"{s:g}" for s in config.crop_scale)
    path = WORK / f"cache_{config.image_size}px_{config.views}views_crop{scale}_seed{config.seed}.pt"
    if path.is_file():
        payload = torch.load(path, weights_only=True)
        return FeatureCache.from_dict(payload), payload["cpu_minutes"]
    started = time.process_time()
    model = create_classifier(load_classifier_config(CONFIG, model="fusion"), len(data.classes))
    cache = encode_views(model, data.images, data.rows("train"), config, torch.device("cpu"), batch_size=64)
    minutes = (time.process_time() - started) / 60
    torch.save({**cache.to_dict(), "cpu_minutes": minutes}, path)
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


class HeadProjectedRows(StoreRows):
    """Rows of a raw store with their global vectors projected by an artist-discriminant head:
    what ``embed`` writes with ``global.style_head`` set to that head."""

    def __init__(self, store, keep: np.ndarray, head: ArtistDiscriminantHead):
        super().__init__(store, keep)
        self.head = head

    def vectors(self, column: str):
        values = super().vectors(column)
        return self.head.transform(values) if column == "global" and values is not None else values

    def parts(self, column: str):
        return {"style": (0, self.head.n_components_)} if column == "global" else super().parts(column)


def store_rows(store, paths: list[str]) -> np.ndarray:
    """Store row indices of ``paths`` (paths the store lacks are left out)."""
    position = {p: i for i, p in enumerate(store.paths)}
    return np.array([position[p] for p in paths if p in position])


def unsupervised(store, train_paths: list[str], test_paths: list[str], artists: pd.Series) -> list[dict]:
    """The default pipeline on the test artists: without a style head, and with one fitted on the
    classifier's *training* artists only (the shipped head saw some of these test artists)."""
    train, keep = store_rows(store, train_paths), store_rows(store, test_paths)
    head = ArtistDiscriminantHead().fit(store.vectors("global")[train], artists.loc[[store.paths[i] for i in train]].to_numpy(), store.parts("global"))
    labels = read_labels(WIKIART / "labels.csv", "style")
    rows = []
    for variant, subset in (("ImageNet pooled + Gram", StoreRows(store, keep)), ("style head from the train artists", HeadProjectedRows(store, keep, head))):
        for method, k in (("bgmm", None), ("kmeans", 11)):
            clustering = StyleClustering(ClusterConfig(method=method, k=k, seed=0), FuseConfig()).fit(subset)
            result = evaluate_clusters(clustering.to_frame(), labels, "style")
            rows.append({"model": f"unsupervised {method}" + (f" k={k}" if k else "") + f", {variant}", "purity": result["purity"], "nmi": result["nmi"],
                         "hungarian_acc": result["accuracy"], "clusters": result["n_clusters"], "n_images": result["n_images"]})
    return rows


def linear_probe(store, train_paths: list[str], test_paths: list[str], styles: pd.Series) -> dict:
    """The reference the brief quotes (≈ 62 %): logistic regression on the stored ImageNet pooled +
    Gram vectors (224 px), each part reduced as the fuser does, fitted on the training artists."""
    from sklearn.linear_model import LogisticRegression

    from stylecluster.cluster.fuse import Fuser, blocks_for_store

    train, test = store_rows(store, train_paths), store_rows(store, test_paths)
    X, blocks = blocks_for_store(store, local_weight=0.0)
    fuser = Fuser(blocks, pca_components=128).fit(X[train])
    y = styles.loc[store.paths].to_numpy()
    probe = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(fuser.transform(X[train]), y[train])
    predicted = probe.predict(fuser.transform(X[test]))
    scores = score_predictions(y[test], predicted, sorted(set(y)))
    return {"model": "linear probe (pooled + Gram, 224 px)", "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "fusion", "vit"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="at most this many epochs per model (default: the config's)")
    parser.add_argument("--limit", type=int, help="a random sample of this many images (a quick smoke run, in its own work folder)")
    args = parser.parse_args()
    if not (WIKIART / "labels.csv").is_file():
        print(f"no wikiart-styles at {WIKIART}")
        return 2
    torch.set_num_threads(args.threads)
    global WORK
    if args.limit:
        WORK = WORK / f"limit{args.limit}"
    WORK.mkdir(parents=True, exist_ok=True)
    config = load_classifier_config(CONFIG)
    data, labels = labelled_images(config, args.limit)
    counts = {side: int((data.split == side).sum()) for side in ("train", "val", "test")}
    artists = {side: int(labels.loc[labels["split"] == side, "artist"].nunique()) for side in ("train", "val", "test")}
    print(f"images {counts}, artists {artists}", flush=True)
    cache, cache_minutes = feature_cache(data, config)
    print(f"feature cache: {cache_minutes:.1f} CPU-min", flush=True)
    rows = []
    for kind in args.models:
        row = run_model(kind, data, cache, args.epochs)
        print(f"{kind}: accuracy {row['accuracy']:.3f}, macro-F1 {row['macro_f1']:.3f}, {row['train_cpu_min_this_run']} CPU-min", flush=True)
        (WORK / f"{kind}.json").write_text(json.dumps(row, indent=2))
        rows.append(row)
    side = labels.set_index("path")
    train_paths, test_paths = side.index[side["split"] == "train"].tolist(), side.index[side["split"] == "test"].tolist()
    store = load_store(STORE)
    clusters = unsupervised(store, train_paths, test_paths, side["artist"])
    probe = linear_probe(store, train_paths, test_paths, side["style"])
    print(f"{probe['model']}: accuracy {probe['accuracy']:.3f}, macro-F1 {probe['macro_f1']:.3f}", flush=True)
    print_table(rows, ["model", "accuracy", "macro_f1", "worst_class", "epochs", "best_epoch", "train_cpu_min_this_run", "train_wall_min"])
    print()
    print_table(clusters, ["model", "purity", "nmi", "hungarian_acc", "clusters", "n_images"])
    for row in rows:
        print(f"{row['model']} top confusions: " + "; ".join(row["top_confusions"][:3]))
    path = write_json(f"classifier{'_limit%d' % args.limit if args.limit else ''}.json", {
        "split": {"images": counts, "artists": artists}, "feature_cache_cpu_min": cache_minutes, "config": config.to_dict(),
        "classifiers": [{k: v for k, v in r.items() if k != "scores"} | {"per_class": r["scores"]["per_class"]} for r in rows],
        "unsupervised": clusters,
        "linear_probe": probe,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
