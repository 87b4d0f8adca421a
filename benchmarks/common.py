"""Shared pieces of the benchmark scripts: data selection, tables, JSON output, machine facts."""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WIKIART = SHARED / "wikiart-styles"
OUT = ROOT / "benchmarks" / "out"
ARTIST_LABELLED = ("wikiart-styles", "wikiart-more", "aic-cc0")  # the shared sets with artist names
GENERALISATION_WORK = OUT / "generalisation_work"  # generalisation.py's raw stores, one folder per backbone


def stratified_labels(labels_csv: Path, column: str, per_label: int | None, seed: int = 0) -> pd.DataFrame:
    """All rows, or ``per_label`` rows of each label (fewer where a label has fewer)."""
    labels = pd.read_csv(labels_csv)
    if not per_label:
        return labels
    return labels.sample(frac=1, random_state=seed).groupby(column).head(per_label).sort_index()


def artist_labelled(datasets: tuple[str, ...], column: str | None) -> pd.DataFrame:
    """Every image with an artist in the shared ``datasets``: its dataset, path (in the set's
    folder), ``artist`` as :func:`~stylecluster.data.splits.artist_key` (one spelling across
    sets) and the label ``column`` (rows without one dropped; None: no label)."""
    from stylecluster.data.labels import read_labels
    from stylecluster.data.splits import artist_key

    tables = []
    for name in datasets:
        labels = read_labels(SHARED / name / "labels.csv", column, keep=["artist"]).dropna(subset=["artist"])
        tables.append(labels.assign(dataset=name, artist=labels["artist"].map(artist_key)))
    return pd.concat(tables, ignore_index=True)


def stored_vectors(folder: Path, table: pd.DataFrame) -> tuple[np.ndarray, dict, np.ndarray]:
    """The global vectors of ``table``'s images (columns dataset, path) from the stores
    ``folder/<dataset>.store``: (vectors, their parts, the table rows they belong to — rows whose
    image a store lacks are left out)."""
    from stylecluster.store import load_store

    matrices, found, parts = [], [], None
    for name, rows in table.groupby("dataset", sort=False).groups.items():
        store = load_store(folder / f"{name}.store")
        position = {p: i for i, p in enumerate(store.paths)}
        have = [r for r in rows if table.at[r, "path"] in position]
        matrices.append(store.vectors("global")[[position[table.at[r, "path"]] for r in have]])
        found.extend(table.index.get_indexer(have))
        if parts is not None and store.parts("global") != parts:
            raise ValueError(f"{folder}: {name}.store's global vector differs from the other stores'")
        parts = store.parts("global")
    found = np.asarray(found, dtype=int)
    order = np.argsort(found, kind="stable")
    return np.vstack(matrices)[order], parts, found[order]


def wikiart_sample(images: int) -> list[Path] | None:
    """``images`` wikiart-styles files, the styles equally represented (None: no shared data)."""
    if not (WIKIART / "labels.csv").is_file():
        print(f"shared data not found at {WIKIART}")
        return None
    labels = stratified_labels(WIKIART / "labels.csv", "style", -(-images // 11))[:images]
    return [WIKIART / p for p in labels["path"]]


def machine() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def wait_measured(process, timeout: float):
    """(exit status, resource usage) of a child process, killed after ``timeout`` seconds; the
    usage's ``ru_maxrss`` is that process's own peak RSS (os.wait4), not the caller's."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.monotonic() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            return status, usage
        time.sleep(0.2)


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


#: Headless Chromium without a network: no background services, SwiftShader for WebGL.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader", "--window-size=1400,1000")


@contextmanager
def chromium():
    """A Selenium driver of Debian's headless Chromium, or None when it is not installed."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        yield None
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp()
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(300)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
