"""``stylecluster demo``: the whole pipeline on the built-in sample, into one output folder."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .config import Config
from .data.labels import read_labels
from .evaluate import evaluate_clusters, format_table
from .errors import InputError
from .io import check_writable, save_atomic

MARKER = ".stylecluster-demo"


def sample_dir() -> Path:
    """Folder of the built-in sample: ``images/`` and ``labels.csv`` (column ``period``)."""
    return Path(str(resources.files("stylecluster") / "sample"))


@dataclass
class DemoResult:
    out: Path
    embed_summary: list[str]
    evaluation: dict

    def lines(self) -> list[str]:
        return [
            *self.embed_summary,
            "",
            f"clusters vs. period labels ({self.evaluation['n_labels']} periods):",
            format_table(self.evaluation),
            "",
            f"outputs in {self.out}/: store/ (embeddings), clusters.csv, clusters.model.npz, evaluation.json",
        ]


def run_demo(out: Path, config: Config | None = None, quiet: bool = False) -> DemoResult:
    """Embed → cluster (BGMM) → evaluate against period labels.

    The folder is created, or reused when an earlier demo made it (the store then resumes and
    the derived files are rewritten). A non-empty folder the demo did not make is refused.
    """
    from .cluster import StyleClustering
    from .data.discovery import discover_images
    from .features.embedder import embed_images
    from .store import load_store

    config = config or Config()
    out = check_writable(out, folder=True)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise InputError(f"{out} exists and was not made by the demo; choose another --out")
    save_atomic(out / MARKER, "made by stylecluster demo; its files are rewritten by the next demo run\n")

    sample = sample_dir()
    report = embed_images(discover_images(sample / "images"), sample, out / "store", config, quiet=quiet)
    store = load_store(out / "store")
    clustering = StyleClustering(config.cluster, config.fuse).fit(store)
    clustering.write(out / "clusters.csv")
    evaluation = evaluate_clusters(clustering.to_frame(), read_labels(sample / "labels.csv", "period"), "period")
    save_atomic(out / "evaluation.json", json.dumps(evaluation, indent=2))
    return DemoResult(out, report.summary_lines(), evaluation)
