"""``stylecluster fetch`` of a 1,000-canvas IIIF collection from a local server, then the rerun.

The server (``tests/iiif_site.py``, 127.0.0.1, an ephemeral port) runs in this process; the fetch
runs as the command a user types, in its own process (start-up included). The collection is a
3.0 Collection of one-canvas Manifests, each image behind a level-2 Image API service: three
requests a canvas (manifest, ``info.json``, the ``!N,N`` image), the shape of a museum's
collection. The images are 1024 x 768 JPEGs (20 distinct bodies, ~100 KB each) and every one is
decoded by the fetch's image check. ``--latency`` adds a delay to every answer, as a remote
server would.

    python benchmarks/iiif_fetch.py [--canvases 1000 --concurrency 4 --latency 0]

Prints a table; writes ``benchmarks/out/iiif_fetch.json``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, print_table, write_json

sys.path.insert(0, str(ROOT / "tests"))
from iiif_site import Site, collection3, jpeg, manifest  # noqa: E402


def build(site: Site, canvases: int, size: int, latency: float) -> str:
    bodies = [jpeg(1024, 768, seed=i) for i in range(20)]
    members = []
    for i in range(canvases):
        service = f"/iiif/{i}"
        site.add(f"{service}/info.json", {"@context": "http://iiif.io/api/image/3/context.json", "id": site.url(service), "type": "ImageService3",
                                          "protocol": "http://iiif.io/api/image", "profile": "level2", "width": 4096, "height": 3072}, delay=latency)
        site.add(f"{service}/full/!{size},{size}/0/default.jpg", bodies[i % len(bodies)], content_type="image/jpeg", delay=latency)
        url = manifest(site, f"/m/{i}.json", f"work {i}", [{"image": site.url(f"{service}/full/max/0/default.jpg"), "service": (site.url(service), "ImageService3", "level2")}],
                        metadata=[("Artist", f"artist {i % 37}"), ("Date", f"c. {1500 + i % 400}")])
        site.routes[f"/m/{i}.json"].delay = latency
        members.append((url, "Manifest"))
    return collection3(site, "/collection.json", members)


def run(source: str, out: Path, concurrency: int, size: int, site: Site) -> dict:
    site.hits.clear()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stylecluster", "fetch", source, "--out", str(out), "--concurrency", str(concurrency),
                    "--size", str(size), "-q"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "requests": sum(site.hits.values()), "downloads": site.image_hits()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canvases", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    args = parser.parse_args()
    with Site() as site, tempfile.TemporaryDirectory(prefix="iiif-fetch-") as folder:
        source = build(site, args.canvases, args.size, args.latency)
        out = Path(folder) / "fetched"
        rows = [{"run": "first", **run(source, out, args.concurrency, args.size, site)},
                {"run": "rerun", **run(source, out, args.concurrency, args.size, site)}]
        images = len(list((out / "images").rglob("*.jpg")))
    for row in rows:
        row.update(canvases=args.canvases, concurrency=args.concurrency, latency_s=args.latency, images_on_disk=images)
    print_table(rows, ["run", "canvases", "concurrency", "latency_s", "seconds", "requests", "downloads", "images_on_disk"])
    write_json("iiif_fetch.json", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
