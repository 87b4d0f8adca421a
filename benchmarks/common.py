"""Shared pieces of the benchmark scripts: data selection, tables, JSON output, machine facts."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WIKIART = SHARED / "wikiart-styles"
OUT = ROOT / "benchmarks" / "out"


def stratified_labels(labels_csv: Path, column: str, per_label: int | None, seed: int = 0) -> pd.DataFrame:
    """All rows, or ``per_label`` rows of each label (fewer where a label has fewer)."""
    labels = pd.read_csv(labels_csv)
    if not per_label:
        return labels
    return labels.sample(frac=1, random_state=seed).groupby(column).head(per_label).sort_index()


def machine() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def write_json(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
