"""Exploration speed: the style map and the HTML report for ~10k images (target: < 2 min together),
and the views of issue 16: the image atlas and the timeline (target: each built in < 2 min, drawn
in the browser in < 5 s).

Collections measured:

* ``synthetic-10k`` — 10,000 generated 96x72 images in 12 groups with 64-d vectors
  (:mod:`stylecluster.viz.synthetic`); runs anywhere;
* ``wikiart`` — a real store, when one is given with ``--store`` (e.g. the 9,521-image wikiart
  store at /work/stores/wikiart-exp.store) with the labels in ``--labels``; it is clustered once
  (k-means, not timed) before the timed run.

Every run starts cold: a fresh visualisation cache (UMAP fit and all thumbnails), in a new
process so numba compiles UMAP as a user's first ``stylecluster plot`` would. The report reuses
what the map cached, as it does when both are made. When Chromium is installed the map is also
opened headless to time how long until its 10k WebGL points are drawn (``browser_ready_s``), and
then how long the images mode takes from the click until the atlas is drawn (``images_drawn_s``).
``map_s`` includes building the atlas; ``atlas_s`` times that step alone (thumbnails cached),
``timeline_s`` the timeline page (timeline + decade shares), ``timeline_ready_s`` its first draw.

    python benchmarks/viz_speed.py
    python benchmarks/viz_speed.py --store /work/stores/wikiart-exp.store --labels ../shared/data/wikiart-styles/labels.csv

Prints a table; writes ``benchmarks/out/viz_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import chromium, print_table, write_json

COLUMNS = ["collection", "images", "load_s", "map_s", "report_s", "total_s", "map_mb", "index_mb", "pages", "shown", "atlas_s", "atlas_mb",
           "timeline_s", "browser_ready_s", "images_drawn_s", "timeline_ready_s"]


def _timed_run(store: Path, clusters: Path, labels: Path | None, label_column: str | None, work: Path) -> dict:
    """Map + report in this process, from a cold cache; returns the timings and sizes."""
    from stylecluster.store import load_store
    from stylecluster.viz import load_explorer, write_map, write_report, write_timeline

    cache = work / "cache"
    start = time.perf_counter()
    explorer = load_explorer(load_store(store), clusters, labels, label_column)
    loaded = time.perf_counter()
    result = write_map(explorer, work / "map.html", cache=cache)
    mapped = time.perf_counter()
    report = write_report(explorer, work / "report", cache=cache)
    done = time.perf_counter()
    atlas_s, atlas_mb = _time_atlas(explorer, cache)
    start_timeline = time.perf_counter()
    write_timeline(explorer, work / "timeline.html")
    timeline_s = time.perf_counter() - start_timeline
    return {
        "images": len(explorer.points),
        "load_s": loaded - start,
        "map_s": mapped - loaded,
        "report_s": done - mapped,
        "total_s": done - start,
        "map_mb": result.html.stat().st_size / 1e6,
        "map_self_contained": result.self_contained,
        "index_mb": report.index.stat().st_size / 1e6,
        "pages": len(report.pages),
        "shown": report.n_shown,
        "atlas_s": atlas_s,
        "atlas_mb": atlas_mb,
        "timeline_s": timeline_s,
    }


def _time_atlas(explorer, cache: Path) -> tuple[float, float]:
    from stylecluster.viz.atlas import build_atlas
    from stylecluster.viz.thumbs import ensure_thumbnails
    from stylecluster.viz.umap_map import thumbnail_order

    points = explorer.points
    thumbs = ensure_thumbnails(explorer.images_root, zip(points["path"], points["sha256"]), cache)
    start = time.perf_counter()
    atlas = build_atlas([thumbs[sha] for sha in thumbnail_order(thumbs)])
    return time.perf_counter() - start, len(atlas.script_text()) / 1e6


def _browser_times(html: Path, timeline: Path) -> dict:
    """Seconds from navigation until every point of the WebGL map is drawn, from the click until
    the images are drawn, and from navigation until the timeline page is drawn; empty without Chromium."""
    with chromium() as driver:
        if driver is None:
            return {}
        from selenium.webdriver.support.ui import WebDriverWait

        start = time.perf_counter()
        driver.get(html.resolve().as_uri())
        WebDriverWait(driver, 120).until(lambda d: d.execute_script(
            "var gd = document.getElementById('sc-map');"
            "return !!(window.styleMap && gd._fullData && gd.querySelector('canvas')) && gd._fullData.reduce((s, t) => s + t.x.length, 0);"
        ))
        ready = time.perf_counter() - start
        start = time.perf_counter()
        driver.execute_script("window.styleMap.showImages(true);")
        WebDriverWait(driver, 120).until(lambda d: d.execute_script("return !!window.styleMap.atlasDrawn;"))
        images = time.perf_counter() - start
        start = time.perf_counter()
        driver.get(timeline.resolve().as_uri())
        WebDriverWait(driver, 120).until(lambda d: d.execute_script(
            "var t = document.getElementById('sc-timeline'), s = document.getElementById('sc-decades');"
            "return !!(t && t._fullData && t.querySelector('canvas') && s && s._fullData);"
        ))
        return {"browser_ready_s": ready, "images_drawn_s": images, "timeline_ready_s": time.perf_counter() - start}


def _cluster_once(store: Path, work: Path, k: int) -> Path:
    from stylecluster.cluster import model_path_for
    from stylecluster.cluster import StyleClustering
    from stylecluster.config import ClusterConfig
    from stylecluster.store import load_store

    clusters = work / "clusters.csv"
    clustering = StyleClustering(ClusterConfig(method="kmeans", k=k)).fit(load_store(store))
    clustering.to_frame().to_csv(clusters, index=False)
    clustering.save(model_path_for(clusters))
    return clusters


def _child(args: argparse.Namespace) -> None:
    """The timed part, in its own process (cold numba and caches)."""
    row = _timed_run(Path(args.store), Path(args.clusters), Path(args.labels) if args.labels else None, args.label_column, Path(args.work))
    print(json.dumps(row))


def _measure(name: str, store: Path, clusters: Path, labels: Path | None, label_column: str | None, work: Path) -> dict:
    command = [sys.executable, __file__, "--child", "--store", str(store), "--clusters", str(clusters), "--work", str(work)]
    if labels is not None:
        command += ["--labels", str(labels), "--label-column", label_column]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    row = {"collection": name, **json.loads(output.strip().splitlines()[-1])}
    row.update(_browser_times(work / "map.html", work / "timeline.html"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="size of the synthetic collection (default 10,000)")
    parser.add_argument("--store", help="also measure this real store")
    parser.add_argument("--labels", help="labels CSV for --store")
    parser.add_argument("--label-column", default="style")
    parser.add_argument("--clusters", help=argparse.SUPPRESS)
    parser.add_argument("--work", help="working folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)

    from stylecluster.viz.synthetic import make_collection

    work = Path(args.work or tempfile.mkdtemp(prefix="viz-speed-"))
    rows = []
    try:
        start = time.perf_counter()
        synthetic = make_collection(work / "synthetic", n=args.images, n_clusters=12, dim=64)
        print(f"generated {args.images} synthetic images and their store in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        rows.append(_measure(f"synthetic-{args.images // 1000}k", synthetic.store, synthetic.clusters, synthetic.labels, "style", work / "synthetic-run"))
        if args.store:
            real = work / "real"
            real.mkdir()
            clusters = _cluster_once(Path(args.store), real, k=11)
            labels = Path(args.labels) if args.labels else None
            rows.append(_measure(Path(args.store).stem, Path(args.store), clusters, labels, args.label_column if labels else None, real / "run"))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, COLUMNS)
    targets = {"target_total_s": 120, "target_atlas_s": 120, "target_timeline_s": 120, "target_first_draw_s": 5}
    print(f"wrote {write_json('viz_speed.json', {**targets, 'results': rows})}")


if __name__ == "__main__":
    main()
