"""The CLI contract end to end on real paintings (44 images of ../shared/data/wikiart-styles); the
tests that read those are marked ``needs_wikiart``, the rest run without the shared data."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import WIKIART, make_image, needs_wikiart
from stylecluster.cli import main
from stylecluster.store import load_store

@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """4 images per style, listed relative to the wikiart folder."""
    tmp = tmp_path_factory.mktemp("cli")
    labels = pd.read_csv(WIKIART / "labels.csv")
    chosen = labels.sample(frac=1, random_state=0).groupby("style").head(4).sort_index()
    chosen.to_csv(tmp / "labels.csv", index=False)
    return tmp, chosen


@pytest.fixture(scope="module")
def store(subset):
    tmp, chosen = subset
    out = tmp / "art.store"
    code = main(["embed", str(WIKIART), "--list", str(tmp / "labels.csv"), "--out", str(out), "--workers", "1", "--batch-size", "16", "-q"])
    assert code == 0
    return out


@needs_wikiart()
def test_embed_writes_every_listed_image(store, subset):
    _, chosen = subset
    s = load_store(store)
    assert sorted(s.paths) == sorted(chosen["path"])
    assert s.global_.shape[0] == 44
    assert s.metadata["branches"]["global"]["backbone"] == "efficientnet_lite0"


@needs_wikiart()
def test_rerun_resumes_without_embedding_again(store, subset, capsys):
    tmp, _ = subset
    code = main(["embed", str(WIKIART), "--list", str(tmp / "labels.csv"), "--out", str(store), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "embedded now: 0" in out and "already in the store (resumed): 44" in out


@needs_wikiart()
def test_other_model_is_refused(store, subset, capsys):
    tmp, _ = subset
    code = main(["embed", str(WIKIART), "--list", str(tmp / "labels.csv"), "--out", str(store), "--weights", "random", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "made with another model or configuration" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1


# kmeans runs on the global branch alone: on 44 images the quality assertion below is about the
# style features, and the local branch's weight is chosen (and measured) on full collections.
@needs_wikiart()
@pytest.mark.parametrize("method,extra", [("kmeans", ["--k", "11", "--local-weight", "0"]), ("bgmm", []), ("hdbscan", [])])
def test_cluster_and_evaluate(store, subset, method, extra, capsys):
    tmp, _ = subset
    clusters = tmp / f"{method}.csv"
    assert main(["cluster", str(store), "--method", method, *extra, "--out", str(clusters), "-q"]) == 0
    frame = pd.read_csv(clusters)
    assert list(frame.columns[:3]) == ["path", "cluster", "probability"]
    assert len(frame) == 44 and frame["probability"].between(0, 1).all()
    assert (tmp / f"{method}.model.npz").is_file()
    if method == "kmeans":
        assert frame["cluster"].nunique() == 11
    capsys.readouterr()
    report = tmp / f"{method}.json"
    assert main(["evaluate", str(clusters), "--labels", str(tmp / "labels.csv"), "--label-column", "style", "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "NMI" in table and "purity" in table
    result = json.loads(report.read_text())
    assert {"nmi", "ari", "purity", "accuracy", "n_clusters", "per_cluster"} <= set(result)
    assert result["n_images"] == 44
    if method == "kmeans":
        # NMI is biased upward on 44 points (a random balanced labelling scores ≈ 0.48), so judge by
        # the chance-adjusted ARI: permuting these clusters 1,000 times never exceeded 0.046.
        assert result["ari"] > 0.06


@needs_wikiart()
def test_outputs_are_not_overwritten_without_asking(store, subset, capsys):
    tmp, _ = subset
    clusters = tmp / "keep.csv"
    clusters.write_text("path,cluster,probability\nmine,0,1\n")
    code = main(["cluster", str(store), "--method", "kmeans", "--k", "3", "--out", str(clusters)])
    assert code == 2 and "exists" in capsys.readouterr().err
    assert clusters.read_text() == "path,cluster,probability\nmine,0,1\n"


def test_folder_with_only_bad_files_exits_non_zero(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"")
    make_image(tmp_path / "imgs" / "b.png", size=(10, 10))
    result = subprocess.run(
        [sys.executable, "-m", "stylecluster", "embed", str(tmp_path / "imgs"), "--out", str(tmp_path / "s.store"), "--workers", "0", "-q"],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert "a.jpg: empty file (0 bytes)" in result.stderr
    assert "b.png: too small" in result.stderr
    assert "nothing could be embedded" in result.stderr


def test_help_explains_every_option():
    result = subprocess.run([sys.executable, "-m", "stylecluster", "embed", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ["--out", "--backbone", "--weights", "--device", "--batch-size", "--workers", "--overwrite", "--verbose", "--quiet"]:
        assert option in result.stdout


@needs_wikiart()
def test_assign_reproduces_the_fitted_labels(store, subset):
    tmp, _ = subset
    clusters = tmp / "for-assign.csv"
    assert main(["cluster", str(store), "--method", "bgmm", "--out", str(clusters), "-q"]) == 0
    assigned = tmp / "assigned.csv"
    assert main(["assign", str(tmp / "for-assign.model.npz"), str(store), "--out", str(assigned), "-q"]) == 0
    fitted, again = pd.read_csv(clusters), pd.read_csv(assigned)
    assert list(again["path"]) == list(fitted["path"])
    assert (again["cluster"] == fitted["cluster"]).all()
    assert again["probability"].to_numpy() == pytest.approx(fitted["probability"].to_numpy(), abs=1e-5)


@needs_wikiart()
def test_agglomerative_writes_its_merge_tree_and_k_auto(store, subset, capsys):
    tmp, _ = subset
    out = tmp / "ward.csv"
    assert main(["cluster", str(store), "--method", "agglomerative", "--k", "auto", "--out", str(out), "-q"]) == 0
    assert "k chosen by" in capsys.readouterr().out
    tree = pd.read_csv(tmp / "ward.merge_tree.csv")
    assert len(tree) == 43  # n - 1 merges of 44 images
    leaves = pd.read_csv(tmp / "ward.tree_leaves.csv")
    assert sorted(leaves["path"]) == sorted(pd.read_csv(out)["path"])


@needs_wikiart()
def test_stability_reports_pairwise_ari(store, subset, capsys):
    tmp, _ = subset
    report = tmp / "stability.json"
    assert main(["stability", str(store), "--method", "kmeans", "--k", "5", "--runs", "3", "--json", str(report)]) == 0
    assert "mean ARI" in capsys.readouterr().out
    result = json.loads(report.read_text())
    assert len(result["pairwise_ari"]) == 3 and result["pairwise_ari"][0][0] == 1.0


@needs_wikiart()
def test_k_must_be_a_number_or_auto(store):
    with pytest.raises(SystemExit):
        main(["cluster", str(store), "--k", "many", "--out", "x.csv"])
