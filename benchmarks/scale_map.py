"""The style map at 100k, 1M and 10M points: build time, peak memory, size on disk, time to draw.

Synthetic collections (seeded): ``n`` fused 64-d vectors around 40 cluster centres (the
default fused dimension), each point in its centre's cluster, 2 % outliers (-1), made
:data:`BATCH` rows at a time into a memory-mapped ``.npy`` (as the Explorer maps it from 1M
images). Every point has a thumbnail: the cache's ``thumbs/<sha256>.jpg`` are hard links to a few
real JPEGs, so the map copies (links) one file per image as it would for a real collection; no
images are decoded. Above ``--distinct`` points (default 1M) the collection repeats its first
``--distinct`` images' sha256 (duplicates share a thumbnail): ten million links twice over would
measure the file system, and the thumbnails are per distinct image, not per point.

Per size, in a fresh process (peak RSS is that process's):

* ``layout_s`` — :func:`~stylecluster.viz.umap_map.umap_coordinates` from a cold cache: UMAP on
  a 20k sample above 20k points, the rest placed among their neighbours;
* ``map_s`` — :func:`~stylecluster.viz.write_map` with the layout cached: thumbnail links,
  arrays and text chunks, the page; ``rss_gb`` the process's peak RSS after both;
* ``*_cpu_s`` — the same steps in CPU seconds of the process: on a shared machine the wall
  clock measures the neighbours as much as the code;
* ``html_mb`` — the page; ``sidecar_mb`` — ``points.js`` (the typed arrays) and
  ``text_mb`` — the text chunks, beside it (thumbnails not counted: ~5 KB each);
* ``ready_s`` — headless Chromium, from navigation until the map is drawn (every point, or from
  :data:`~stylecluster.viz.umap_map.DENSITY_FROM` points the density raster and the sample;
  target < 10 s); ``hover_ms`` — from asking for a drawn point's panel until its text chunk is
  loaded and shown; ``zoom_ms`` — (density page) from zooming to 1/32 of the extent around that
  point until the tiles in view are drawn, ``zoom_points`` how many.

    python benchmarks/scale_map.py                   # 100k and 1M
    python benchmarks/scale_map.py --points 10000000 # one size (also --sizes N ...)

Prints a table; writes ``benchmarks/out/scale_map.json``. ``main(argv)`` returns the rows, for
``benchmarks/scale.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import chromium, print_table, write_json  # noqa: E402

COLUMNS = ["points", "layout_s", "layout_cpu_s", "map_s", "map_cpu_s", "rss_gb", "html_mb", "sidecar_mb", "tiles_mb", "text_mb",
           "ready_s", "hover_ms", "zoom_ms", "zoom_points"]
BATCH = 1_000_000
DISTINCT = 1_000_000
N_CLUSTERS = 40
DIM = 64
TARGET_READY_S = 10


def synthetic_explorer(n: int, work: Path, seed: int = 0, distinct: int = DISTINCT):
    """An :class:`~stylecluster.viz.data.Explorer` of ``n`` synthetic points, ``min(n, distinct)``
    distinct images with a thumbnail each; the fused matrix is memory-mapped, made in batches."""
    import pandas as pd
    from PIL import Image

    from stylecluster.viz.data import Explorer

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CLUSTERS, DIM)).astype(np.float32) * 2.0
    cluster = rng.integers(0, N_CLUSTERS, n)
    fused = np.lib.format.open_memmap(work / "fused.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    for start in range(0, n, BATCH):
        block = cluster[start : start + BATCH]
        fused[start : start + BATCH] = centres[block] + rng.normal(size=(len(block), DIM)).astype(np.float32)
    fused.flush()
    del fused
    fused = np.load(work / "fused.npy", mmap_mode="r")
    cluster[rng.uniform(size=n) < 0.02] = -1
    distinct = min(n, distinct)
    shas = np.array([f"{i:064x}" for i in range(distinct)], dtype=object)[np.arange(n) % distinct]
    points = pd.DataFrame({
        "row": np.arange(n), "path": [f"collection/{c % 100:02d}/painting_{i:08d}.jpg" for i, c in enumerate(rng.integers(0, 100, n))],
        "sha256": shas, "cluster": cluster, "probability": rng.uniform(0.3, 1.0, n),
        "year": np.where(rng.uniform(size=n) < 0.3, np.nan, rng.integers(1400, 2000, n).astype(float)),
        "title": [f"Work {i}" for i in range(n)], "artist": [f"Artist {a}" for a in rng.integers(0, 5000, n)],
    })
    thumbs = work / "cache" / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    sources = []
    for k in range(max(8, -(-distinct // 25_000))):  # ext4 allows 65,000 links to a file; the map adds one more per thumbnail
        source = work / f"source-{k}.jpg"
        Image.new("RGB", (128, 96), tuple(int(v) for v in rng.integers(0, 256, 3))).save(source, quality=75)
        sources.append(source)
    for i, sha in enumerate(shas[:distinct]):
        os.link(sources[i % len(sources)], thumbs / f"{sha}.jpg")
    store = SimpleNamespace(path=str(work / f"synthetic-{n}.store"), metadata={})
    return Explorer(store, points, fused, label_column=None, fusion=None, has_clusters=True)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def _folder_mb(folder: Path, pattern: str) -> float:
    return sum(f.stat().st_size for f in folder.glob(pattern)) / 1e6


def build(n: int, work: Path, distinct: int = DISTINCT) -> dict:
    """Layout and map of ``n`` synthetic points in this process: seconds, peak RSS, sizes."""
    from stylecluster.viz import write_map
    from stylecluster.viz.umap_map import umap_coordinates

    made = time.perf_counter()
    explorer = synthetic_explorer(n, work, distinct=distinct)
    made, rss_made = time.perf_counter() - made, _peak_rss_gb()
    cache = work / "cache"
    start, start_cpu = time.perf_counter(), time.process_time()
    umap_coordinates(explorer.fused, cache)
    laid_out, laid_out_cpu = time.perf_counter(), time.process_time()
    print(f"{n} points: made in {made:.0f} s, laid out in {laid_out - start:.0f} s ({laid_out_cpu - start_cpu:.0f} s CPU), "
          f"peak RSS {_peak_rss_gb():.2f} GB", file=sys.stderr, flush=True)
    result = write_map(explorer, work / "map.html", cache=cache, workers=2)
    done, done_cpu = time.perf_counter(), time.process_time()
    files = work / "map_files"
    return {
        "points": n, "layout_s": laid_out - start, "layout_cpu_s": laid_out_cpu - start_cpu, "map_s": done - laid_out,
        "map_cpu_s": done_cpu - laid_out_cpu, "rss_gb": _peak_rss_gb(), "synthetic_s": made, "synthetic_rss_gb": rss_made,
        "distinct_images": min(n, distinct), "html_mb": result.html.stat().st_size / 1e6, "sidecar_mb": _folder_mb(files, "points.js"),
        "tiles_mb": _folder_mb(files / "tiles", "*.js"), "text_mb": _folder_mb(files / "text", "*.js"),
    }


def browser_times(html: Path) -> dict:
    """Seconds from navigation until the map is drawn, and the first hover's milliseconds; empty without Chromium."""
    with chromium() as driver:
        if driver is None:
            return {}
        from selenium.webdriver.support.ui import WebDriverWait

        start = time.perf_counter()
        driver.get(html.resolve().as_uri())
        WebDriverWait(driver, 300, poll_frequency=0.05).until(lambda d: d.execute_script(
            "var gd = document.getElementById('sc-map');"
            "return !!(window.styleMap && window.styleMap.ready && gd.querySelector('canvas'));"
        ))
        ready = time.perf_counter() - start
        drawn = driver.execute_script("return document.getElementById('sc-map')._fullData.reduce((s, t) => s + t.x.length, 0);")
        # a drawn point (a density page has drawn only its sample), 77 % of the way through the largest trace
        pick = "var gd = document.getElementById('sc-map'), t = gd._fullData[0], k = Math.floor(t.customdata.length * 0.77);"
        hover_ms = driver.execute_async_script(
            "var done = arguments[arguments.length - 1], m = window.styleMap;" + pick + "var i = t.customdata[k], s = performance.now();"
            "m.show(i).then(function () { done(document.getElementById('sc-name').textContent === m.record(i).name ? performance.now() - s : -1); });"
        )
        row = {"ready_s": ready, "drawn_points": drawn, "hover_ms": hover_ms}
        if driver.execute_script("return !!window.styleMap.follow;"):
            row["zoom_ms"], row["zoom_points"] = driver.execute_async_script(
                "var done = arguments[arguments.length - 1];" + pick + "var x = t.x[k], y = t.y[k], e = window.styleMap.data.overview.extent;"
                "var w = (e[1] - e[0]) / 64, h = (e[3] - e[2]) / 64, s = performance.now();"
                "Plotly.relayout(gd, {'xaxis.range': [x - w, x + w], 'yaxis.range': [y - h, y + h]});"
                "(function wait() { if (window.styleMap.drawn !== 'sample') { done([performance.now() - s, gd._fullData.reduce((a, t) => a + t.x.length, 0)]); }"
                "  else if (performance.now() - s > 120000) { done([-1, 0]); } else { setTimeout(wait, 20); } })();"
            )
        return row


def measure(n: int, work: Path, distinct: int = DISTINCT) -> dict:
    """One size: the build in a child process (its own peak RSS), then the browser."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--child", str(n), "--work", str(work), "--distinct", str(distinct)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    row = json.loads(output.strip().splitlines()[-1])
    row.update(browser_times(work / "map.html"))
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", "--points", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--distinct", type=int, default=DISTINCT, help="distinct images (thumbnails) at most; the rest repeat them")
    parser.add_argument("--work", help="working folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(build(args.child, Path(args.work), args.distinct)))
        return []
    work = Path(args.work or tempfile.mkdtemp(prefix="scale-map-"))
    rows = []
    try:
        for n in args.sizes:
            rows.append(measure(n, work / str(n), args.distinct))
            print(f"{n} points: {json.dumps(rows[-1])}", file=sys.stderr)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, COLUMNS)
    name = "scale_map.json" if args.sizes == [100_000, 1_000_000] else f"scale_map-{'-'.join(map(str, args.sizes))}.json"
    print(f"wrote {write_json(name, {'target_ready_s': TARGET_READY_S, 'note': 'shared 2-core machine, busy', 'results': rows})}")
    return rows


if __name__ == "__main__":
    main()
