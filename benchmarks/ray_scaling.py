"""Embedding on Ray Data with 1 and 2 local actors, beside the local engine, in one run.

    python benchmarks/ray_scaling.py                  # 400 wikiart images, both branches
    python benchmarks/ray_scaling.py --images 200 --no-local

The same images are embedded into a fresh store by: the local engine (DataLoader workers decode,
this process encodes), then Ray with 1 actor and with 2 actors on a local Ray of 2 CPUs (one
model and one torch thread per actor). Each time is the whole ``embed_images`` call, as a user
waits for it (actor start-up and model loading included), the seconds to the first batch and
the images/s after it (the pool at work). Printed: images/s, each row over Ray with one actor,
and the machine's load average before and after — the scaling goal
(2 actors >= 1.6 x 1 actor) only means something when the machine is otherwise idle.
Writes benchmarks/out/ray_scaling.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import WIKIART, print_table, wikiart_sample, write_json

from stylecluster import Config
from stylecluster.features.embedder import LocalEngine, build_branches, embed_images
from stylecluster.features.ray_engine import RayEngine


class Timed:
    """An engine that notes when each batch of results arrives."""

    def __init__(self, engine):
        self.engine, self.arrivals = engine, []

    @property
    def config(self):
        return self.engine.config

    @config.setter
    def config(self, config):
        self.engine.config = config

    def __enter__(self):
        self.engine.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.engine.__exit__(*exc_info)

    def run(self, items, known_sha256, quiet):
        for rows, others in self.engine.run(items, known_sha256, quiet):
            self.arrivals.append((time.perf_counter(), len(rows) + len(others)))
            yield rows, others


def run(paths: list[Path], root: Path, config: Config, engine) -> dict:
    """Whole seconds, seconds to the first batch (start-up: Ray's actors load their models), and
    images/s after the first batch (the pool at work)."""
    out = Path(tempfile.mkdtemp()) / "scaling.store"
    timed = Timed(engine)
    try:
        start = time.perf_counter()
        report = embed_images(paths, root, out, config, quiet=True, engine=timed)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(out.parent)
    if report.embedded != len(paths):
        raise RuntimeError(f"embedded {report.embedded} of {len(paths)} images")
    (first, n_first), (last, _) = timed.arrivals[0], timed.arrivals[-1]
    steady = (len(paths) - n_first) / (last - first) if last > first else float("nan")
    return {"seconds": seconds, "first_batch_s": first - start, "steady_images_per_s": steady}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-local", action="store_true", help="the global branch alone")
    args = parser.parse_args(argv)
    paths = wikiart_sample(args.images)
    if paths is None:
        return 2
    import ray

    config = Config()
    config.local.enabled = not args.no_local
    config.embed.batch_size = args.batch_size
    load_before = os.getloadavg()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        rows = [{"engine": "local (2 decoding workers)", **run(paths, WIKIART, config, LocalEngine(config, torch.device("cpu"), build_branches(config, torch.device("cpu"))))}]
        for actors in (1, 2):
            rows.append({"engine": f"ray, {actors} actor{'s' * (actors > 1)}", **run(paths, WIKIART, config, RayEngine(config, actors=actors))})
    finally:
        ray.shutdown()
    load_after = os.getloadavg()
    one_actor = rows[1]
    for row in rows:
        row.update(images=len(paths), images_per_s=len(paths) / row["seconds"], speed_over_ray_1=one_actor["seconds"] / row["seconds"],
                   steady_over_ray_1=row["steady_images_per_s"] / one_actor["steady_images_per_s"])
    print_table(rows, ["engine", "images", "seconds", "images_per_s", "speed_over_ray_1", "first_batch_s", "steady_images_per_s", "steady_over_ray_1"])
    busy = max(load_before[0], load_after[0]) > 0.5
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}: the machine was "
          + ("BUSY with other work — the ratios are not the idle machine's" if busy else "otherwise idle"))
    path = write_json("ray_scaling.json", {"rows": rows, "load_before": load_before, "load_after": load_after, "busy": busy,
                                           "branches": "global+local" if config.local.enabled else "global"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
