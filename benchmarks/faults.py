"""Fault cases of issue 13, run through the real command line: what each should do and what it did.

Cases: pickle payloads at every path the tool reads; two writers into one store; a deleted and a
corrupt chunk; ``kill -9`` during embed; an unwritable output, a file in the way and a full disk
(the last two need root and ``unshare -m`` for a private read-only mount and a 1 MB tmpfs);
degenerate collections; a hostile file name; the memory and time one huge image costs; and the
cost of saving rows every 64 images.

Embedding runs use the default model on small generated images (64 x 48 px noise), one decoding
worker. Every command runs in a new process, as a user's would.

    python benchmarks/faults.py

Prints a table (case | expected | observed | ok); writes ``benchmarks/out/faults.json``.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, print_table, write_json

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-m", "stylecluster"]


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[0] if len(lines) == 1 and "Traceback" not in result.stderr else f"{len(lines)} lines: {result.stderr.strip()[-200:]!r}"


def rows(store: Path) -> int:
    from stylecluster.store import load_store

    return len(load_store(store))


def make_images(folder: Path, n: int, start: int = 0) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + n):
        pixels = np.random.default_rng(i).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:04d}.png")
        names.append(f"img{i:04d}.png")
    return names


# ----------------------------------------------------------------------------- cases


def pickles(work: Path, store: Path, images: Path) -> list[dict]:
    marker = work / "code-ran"
    csv = work / "c.csv"
    run("cluster", store, "--method", "kmeans", "--k", "3", "--out", csv, "-q")
    model = work / "c.model.npz"
    saved = model.read_bytes()

    def payload(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(Payload(marker)))

    run("plot", store, "--clusters", csv, "--out", work / "first.html", "-q")  # fills STORE/_viz/ with the layout cache
    out = []
    payload(model)
    for name, argv in (("assign MODEL (a pickle)", ["assign", model, store, "--out", work / "a.csv"]),
                       ("plot --clusters C.csv (pickle as C.model.npz)", ["plot", store, "--clusters", csv, "--out", work / "m.html"])):
        result = run(*argv)
        out.append({"case": f"1. {name}", "expected": "one line, exit 2, nothing runs",
                    "observed": f"exit {result.returncode}: {one_line(result)}; code ran: {marker.exists()}",
                    "ok": result.returncode == 2 and "Traceback" not in result.stderr and not marker.exists()})
    model.unlink()
    payload(work / "c.model.joblib")
    result = run("assign", work / "c.model.joblib", store, "--out", work / "a.csv")
    out.append({"case": "1. assign C.model.joblib (old pickle)", "expected": "one line saying to re-run cluster",
                "observed": f"exit {result.returncode}: {one_line(result)}; code ran: {marker.exists()}",
                "ok": result.returncode == 2 and "re-run" in result.stderr and not marker.exists()})
    model.write_bytes(saved)
    for old in (store / "_viz").glob("umap-*"):
        payload(old.with_suffix(".joblib"))
        payload(old.with_suffix(".npy"))
    result = run("plot", store, "--clusters", csv, "--out", work / "m2.html", "--overwrite", "-q")
    out.append({"case": "1. plot with pickles as STORE/_viz/umap-*.{joblib,npy}", "expected": "map drawn, caches ignored, nothing runs",
                "observed": f"exit {result.returncode}; code ran: {marker.exists()}",
                "ok": result.returncode == 0 and not marker.exists()})
    payload(work / "payload.pt")
    for flag in ("--local-model", "--weights"):
        result = run("embed", images, "--out", work / f"x{flag}.store", flag, work / "payload.pt")
        out.append({"case": f"1. embed {flag} PICKLE", "expected": "one line, exit 2, nothing runs",
                    "observed": f"exit {result.returncode}: {one_line(result)[:120]}; code ran: {marker.exists()}",
                    "ok": result.returncode == 2 and "Traceback" not in result.stderr and not marker.exists()})
    return out


def concurrent(work: Path, images: Path, names: list[str]) -> dict:
    store = work / "both.store"
    (work / "a.txt").write_text("\n".join(names[: len(names) // 2]))
    (work / "b.txt").write_text("\n".join(names[len(names) // 2 :]))
    procs = [subprocess.Popen([*CLI, "embed", str(images), "--list", str(work / f"{h}.txt"), "--out", str(store), "--workers", "1", "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for h in "ab"]
    codes = [p.wait(timeout=1800) for p in procs]
    waited = sum("waiting" in p.stderr.read() for p in procs)
    n = rows(store)
    return {"case": f"2. two embeds, disjoint --list halves of {len(names)}", "expected": f"both exit 0, {len(names)} rows",
            "observed": f"exits {codes}, {n} rows, {waited} waited for the other", "ok": codes == [0, 0] and n == len(names)}


def damaged_chunks(work: Path, images: Path, base: Path, n: int) -> list[dict]:
    out = []
    for damage in ("deleted", "corrupt"):
        store = work / f"{damage}.store"
        shutil.copytree(base, store)
        chunk = sorted(store.glob("part-*.parquet"))[2]
        if damage == "deleted":
            chunk.unlink()
        else:
            chunk.write_bytes(chunk.read_bytes()[:200])
        before = rows(store)
        after = []
        for _ in range(2):
            result = run("embed", images, "--out", store, "--workers", "1", "--config", work / "chunk64.yaml", "-q")
            after.append(rows(store))
        aside = len(list((store / "_corrupt").glob("*"))) if (store / "_corrupt").exists() else 0
        out.append({"case": f"3. one 64-row chunk of {n} {damage}, embed twice", "expected": f"{n} rows after the first rerun, and stay",
                    "observed": f"{before} -> {after[0]} -> {after[1]} rows; {aside} chunk set aside; exit {result.returncode}",
                    "ok": after == [n, n] and result.returncode == 0})
    return out


def kill_9(work: Path, images: Path, n: int) -> dict:
    store = work / "killed.store"
    proc = subprocess.Popen([*CLI, "embed", str(images), "--out", str(store), "--workers", "1", "-q"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(store.glob("part-*.parquet"))) >= 6:  # 384 images saved
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = rows(store)
    result = run("embed", images, "--out", store, "--workers", "1", "-q")
    return {"case": f"4. kill -9 about 400 images into {n} (defaults)", "expected": "at most 64 images or 30 s lost; rerun completes",
            "observed": f"{kept} rows kept; rerun exit {result.returncode}, {rows(store)} rows",
            "ok": kept >= 384 and rows(store) == n}


def checkpoint_cost(embed_ms: float, n: int = 20_000) -> dict:
    """Seconds per image to save rows of the default store's shape, every 64 rows vs every 512."""
    from stylecluster.store import StoreWriter, load_store

    rng = np.random.default_rng(0)
    vectors = {"global": rng.normal(size=(n, 64)).astype(np.float32), "local": rng.normal(size=(n, 32)).astype(np.float32)}
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        for every in (64, 512):
            path = Path(tmp) / f"s{every}"
            start = time.perf_counter()
            writer = StoreWriter(path, {"global": {"m": 1}, "local": {"m": 1}}, {"global": 64, "local": 32},
                                 {"global": {"style": (0, 64)}, "local": {"local": (0, 32)}}, checkpoint_rows=every, chunk_size=512)
            for i in range(n):
                writer.add(f"img{i}.png", f"{i:064d}", 64, 48, {k: v[i] for k, v in vectors.items()})
            writer.close()
            timings[every] = (time.perf_counter() - start) / n
            start = time.perf_counter()
            load_store(path)
            timings[f"read{every}"] = time.perf_counter() - start
    extra_ms = (timings[64] - timings[512]) * 1000
    return {"case": f"4. saving every 64 rows vs every 512 ({n:,} rows, merged at the end)", "expected": f"negligible beside {embed_ms:.0f} ms to embed an image here",
            "observed": f"{timings[64] * 1000:.3f} vs {timings[512] * 1000:.3f} ms per image (+{extra_ms:.3f} ms, merge included); "
                        f"reading {timings['read64']:.2f} vs {timings['read512']:.2f} s",
            "ok": extra_ms < 1.0, "ms_per_image_64": timings[64] * 1000, "ms_per_image_512": timings[512] * 1000}


def outputs(work: Path, store: Path) -> list[dict]:
    out = []
    (work / "file").write_text("in the way")
    result = run("cluster", store, "--out", work / "file" / "c.csv")
    out.append({"case": "5. cluster --out FILE/c.csv", "expected": "one line naming the path, before clustering",
                "observed": f"exit {result.returncode}: {one_line(result)}", "ok": result.returncode == 2 and "file is a file" in result.stderr})
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return out + [{"case": "5. read-only folder / full disk", "expected": "", "observed": "skipped: needs root and unshare -m", "ok": None}]
    ro, disk = work / "ro", work / "disk"
    ro.mkdir()
    disk.mkdir()
    csv = work / "outputs.csv"
    run("cluster", store, "--method", "kmeans", "--k", "3", "--out", csv, "-q")
    q = shlex.quote
    cli = " ".join(map(q, CLI))
    plot = f"{cli} plot {q(str(store))} --clusters {q(str(csv))} --out {q(str(disk / 'map.html'))} -q"
    script = "; ".join([
        f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}",
        f"start=$(date +%s%N); {cli} cluster {q(str(store))} --out {q(str(ro / 'c.csv'))} 2> {work}/ro.err; echo $? > {work}/ro.rc; "
        f"echo $(( ($(date +%s%N) - start) / 1000000 )) > {work}/ro.ms",
        f"mount -t tmpfs -o size=1m tmpfs {disk}",
        f"{plot} 2> {work}/full.err; echo $? > {work}/full.rc",
        f"ls -A {disk} > {work}/left.txt",
        f"mount -o remount,size=64m {disk}",
        f"{plot} 2> {work}/rerun.err; echo $? > {work}/rerun.rc",
    ])
    subprocess.run(["unshare", "-m", "sh", "-c", script], env=ENV, timeout=1800)
    read = lambda name: (work / name).read_text().strip()  # noqa: E731
    out.append({"case": "5. cluster --out READ-ONLY/c.csv", "expected": "one line naming the path, before clustering",
                "observed": f"exit {read('ro.rc')} after {int(read('ro.ms')) / 1000:.1f} s (the process included): {read('ro.err')}",
                "ok": read("ro.rc") == "2" and len(read("ro.err").splitlines()) == 1})
    out.append({"case": "5. plot --out on a full 1 MB disk, then with room", "expected": "one line; nothing partial; rerun without --overwrite",
                "observed": f"exit {read('full.rc')}: {read('full.err')}; left: {read('left.txt') or 'nothing'}; rerun exit {read('rerun.rc')}",
                "ok": read("full.rc") == "2" and not read("left.txt") and read("rerun.rc") == "0"})
    return out


def degenerate(work: Path) -> list[dict]:
    from stylecluster.store import StoreWriter

    out = []
    rng = np.random.default_rng(0)
    for name, X, extra in (("1 image", rng.normal(size=(1, 64)), []), ("2 images", rng.normal(size=(2, 64)), []),
                           ("20 identical images", np.repeat(rng.normal(size=(1, 64)), 20, axis=0), []),
                           ("5 images, --k 10", rng.normal(size=(5, 64)), ["--k", "10"])):
        path = work / f"{name}.store"
        writer = StoreWriter(path, {"global": {"b": 1}}, {"global": 64}, {"global": {"style": (0, 64)}})
        for i, row in enumerate(X.astype(np.float32)):
            writer.add(f"{i}.png", str(i), 64, 64, {"global": row})
        writer.close()
        for method in ("bgmm", "kmeans", "hdbscan", "agglomerative", "dec"):
            csv = work / f"{name}-{method}.csv"
            result = run("cluster", path, "--method", method, "--out", csv, *(extra if method != "hdbscan" else []))
            printed = result.stdout.splitlines()[0] if result.returncode == 0 else one_line(result)
            clean = "Traceback" not in result.stderr and "Warning" not in result.stderr
            if result.returncode == 0:
                import pandas as pd

                frame = pd.read_csv(csv)
                in_csv = frame.loc[frame["cluster"] >= 0, "cluster"].nunique()
                ok = clean and printed.startswith(f"{method}: {in_csv} cluster")
                observed = f"{printed} | CSV: {in_csv}" + (f" | {result.stderr.strip()}" if result.stderr.strip() else "")
            else:
                ok, observed = clean and result.returncode == 2, f"exit 2: {printed}"
            out.append({"case": f"6. {name}, {method}", "expected": "one line, or printed count = CSV's", "observed": observed, "ok": ok})
    return out


def hostile_name(work: Path) -> dict:
    images = work / "hostile"
    make_images(images, 3)
    (images / "bad\nname\x1b[2J.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
    result = run("embed", images, "--out", work / "hostile.store", "--workers", "0", "--no-local")
    skipped = [s for line in result.stderr.split("\n") for s in line.split("\r") if "skipped" in s]
    return {"case": "7. a corrupt file named 'bad\\nname\\x1b[2J.png'", "expected": "one escaped line, apart from the progress bar",
            "observed": repr(skipped[0]) if len(skipped) == 1 else f"{len(skipped)} lines", "ok": len(skipped) == 1 and "\x1b" not in result.stderr
            and skipped[0].startswith("skipped ")}


MEASURE = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from stylecluster.config import Config
from stylecluster.data.dataset import ImageDataset, WorkItem
from stylecluster.data.decode import hash_file
from stylecluster.features.embedder import build_branches
config = Config()
branches = build_branches(config, torch.device("cpu"))
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
path = Path(sys.argv[1])
dataset = ImageDataset([WorkItem(0, path, hash_file(path).sha256)], branches, config.ingest.max_pixels, config.ingest.min_side)
open("/proc/self/clear_refs", "w").write("5")  # resets the peak to the current RSS
base, start = status("VmRSS"), time.perf_counter()
sample = dataset[0]
print(status("VmHWM") - base, time.perf_counter() - start, sample.get("error", ""))
"""


def memory(work: Path) -> list[dict]:
    from PIL import Image

    files = {"14,000 x 14,000 one-bit PNG (41 KB)": ("bitonal.png", lambda p: Image.new("1", (14_000, 14_000)).save(p, optimize=True)),
             "9,100 x 9,100 colour PNG": ("rgb.png", lambda p: Image.new("RGB", (9_100, 9_100), (120, 60, 30)).save(p)),
             "12,000 x 12,000 16-bit grey TIFF": ("gray16.tif", lambda p: Image.fromarray(np.full((12_000, 12_000), 30_000, np.uint16)).save(p)),
             "14,000 x 10,000 colour JPEG": ("rgb.jpg", lambda p: Image.new("RGB", (14_000, 10_000), (120, 60, 30)).save(p)),
             "6,000 x 4,000 colour PNG (not reduced)": ("rgb6000.png", lambda p: Image.new("RGB", (6_000, 4_000), (120, 60, 30)).save(p))}
    script = work / "measure.py"
    script.write_text(MEASURE)
    out = []
    for name, (file, make) in files.items():
        path = work / file
        make(path)
        result = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, env=ENV, timeout=600)
        mb, seconds, *error = result.stdout.split(maxsplit=2) if result.returncode == 0 else ("nan", "nan", result.stderr[-200:])
        out.append({"case": f"8. {name}", "expected": "< 500 MB above the process's RSS",
                    "observed": f"{float(mb):.0f} MB, {float(seconds):.1f} s" + (f", {error[0].strip()}" if error and error[0].strip() else ""),
                    "ok": float(mb) < 500, "mb": float(mb), "seconds": float(seconds)})
        path.unlink()
    return out


def _write_parquet(path: Path, paths: list[str], vectors) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": pa.array(paths, pa.string()), "vector": pa.array([list(map(float, v)) for v in vectors])}), path)
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def audit(work: Path, images: Path) -> list[dict]:
    """Issue 21: the outside audit's cases on the newest surfaces (import, similar, Ray, outputs
    that are inputs, bounds), each through the command line in a new process."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    rng = np.random.default_rng(0)
    names = sorted(f.name for f in images.glob("*.png"))[:60]

    store = work / "s.store"
    run("import", _write_parquet(work / "v.parquet", names, rng.normal(size=(60, 8))), "--out", store, "--images-root", images, "-q")
    inside = shutil.copyfile(work / "v.parquet", store / "vectors.parquet")
    shutil.copytree(images, store / "images", ignore=lambda d, files: [f for f in files if f not in names[:5]])
    before = _tree(store)
    r = run("import", inside, "--out", store, "--images-root", store / "images", "--overwrite")
    out.append({"case": "9.1 import STORE/vectors.parquet --out STORE --images-root STORE/images --overwrite",
                "expected": "refused, one line; nothing deleted", "observed": f"exit {r.returncode}, {one_line(r)}; files kept: {_tree(store) == before}",
                "ok": r.returncode == 2 and _tree(store) == before})
    user_files = {k: v for k, v in before.items() if k.startswith("images") or k == "vectors.parquet"}
    r = run("import", _write_parquet(work / "w.parquet", names[:10], rng.normal(size=(10, 4))), "--out", store, "--overwrite", "-q")
    after = _tree(store)
    kept = all(after.get(k) == v for k, v in user_files.items())
    out.append({"case": "9.1 import OTHER.parquet --out STORE --overwrite, user files in STORE", "expected": "store replaced, user files kept",
                "observed": f"exit {r.returncode}, {rows(store)} rows, {len(user_files)} user files kept: {kept}", "ok": r.returncode == 0 and kept and rows(store) == 10})

    secret = work / "secret.png"
    shutil.copyfile(images / names[0], secret)
    os.mkfifo(images / "fifo.png")
    hostile = ["../secret.png", str(secret), "a\x00b.png", "fifo.png", names[1]]
    escaped = work / "e.store"
    r = run("import", _write_parquet(work / "e.parquet", hostile, rng.normal(size=(5, 8))), "--out", escaped, "--images-root", images, "-q")
    kept_paths = rows(escaped) if r.returncode == 0 else None
    out.append({"case": "9.2 import paths '..', absolute, NUL, a FIFO (+1 good)", "expected": "4 skipped one line each, listed in _skipped.csv",
                "observed": f"exit {r.returncode}, {kept_paths} row kept, {len(r.stderr.strip().splitlines())} warning lines",
                "ok": r.returncode == 0 and kept_paths == 1 and len(r.stderr.strip().splitlines()) == 4})
    (images / "fifo.png").unlink()

    csv = work / "c.csv"
    run("cluster", store, "--method", "kmeans", "--k", "2", "--out", csv, "-q")
    chunk = next(store.glob("part-*.parquet"))
    before = _tree(store)
    r = run("cluster", store, "--out", chunk, "--overwrite", "-q")
    out.append({"case": "9.6 cluster STORE --out STORE/part-000000.parquet --overwrite", "expected": "refused, store intact",
                "observed": f"exit {r.returncode}, {one_line(r)}", "ok": r.returncode == 2 and _tree(store) == before})
    model = work / "c.model.npz"
    data = model.read_bytes()
    r = run("assign", model, store, "--out", model, "--overwrite", "-q")
    out.append({"case": "9.6 assign M.npz STORE --out M.npz --overwrite", "expected": "refused, model intact",
                "observed": f"exit {r.returncode}, {one_line(r)}", "ok": r.returncode == 2 and model.read_bytes() == data})

    try:
        import ray  # noqa: F401
    except ImportError:
        out.append({"case": "9.4 embed --engine ray --address 127.0.0.1:1", "expected": "", "observed": "skipped: no ray", "ok": None})
    else:
        for address in ("127.0.0.1:1", "not a host::"):
            start = time.perf_counter()
            r = run("embed", images, "--out", work / "r.store", "--engine", "ray", "--address", address, "-q", timeout=300)
            seconds = time.perf_counter() - start
            out.append({"case": f"9.4 embed --engine ray --address {address!r}", "expected": "one line within 30 s, no store",
                        "observed": f"exit {r.returncode} after {seconds:.1f} s, {one_line(r)}; store made: {(work / 'r.store').exists()}",
                        "ok": r.returncode == 2 and seconds < 30 and not (work / "r.store").exists()})

    for argv in (["--version"], ["--help"]):
        start = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", *CLI, *argv], capture_output=True, text=True, env=ENV)
        seconds, mb = time.perf_counter() - start, int(r.stderr.strip().splitlines()[-1]) / 1024
        out.append({"case": f"9.7 stylecluster {argv[0]}", "expected": "< 1 s, < 150 MB (before: 11.0 s, 1,002 MB)",
                    "observed": f"{seconds:.2f} s, {mb:.0f} MB", "ok": seconds < 1 and mb < 150})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="images of the embedding cases (default 400)")
    parser.add_argument("--only", choices=["audit"], help="only issue 21's audit cases (no embedding; a minute)")
    args = parser.parse_args()
    if args.only == "audit":
        with tempfile.TemporaryDirectory() as tmp:
            make_images(Path(tmp) / "images", 60)
            results = audit(Path(tmp) / "audit", Path(tmp) / "images")
        print_table(results, ["case", "expected", "observed", "ok"])
        print(f"wrote {write_json('faults-audit.json', {'results': results})}")
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = work / "images"
        names = make_images(images, args.images)
        (work / "chunk64.yaml").write_text("embed:\n  chunk_size: 64\n")
        base = work / "base.store"
        start = time.perf_counter()
        made = run("embed", images, "--out", base, "--workers", "1", "--config", work / "chunk64.yaml", "-q")
        assert made.returncode == 0, made.stderr
        embed_ms = (time.perf_counter() - start) * 1000 / args.images
        print(f"embedded {args.images} images: {embed_ms:.0f} ms an image, the process's start included", flush=True)
        (work / "p").mkdir()
        more = work / "more"
        make_images(more, 2 * args.images)
        for case in (lambda: pickles(work / "p", base, images), lambda: [concurrent(work, images, names)],
                     lambda: damaged_chunks(work, images, base, args.images), lambda: [kill_9(work, more, 2 * args.images)],
                     lambda: [checkpoint_cost(embed_ms)], lambda: outputs(work, base), lambda: degenerate(work), lambda: [hostile_name(work)],
                     lambda: memory(work), lambda: audit(work / "audit", images)):
            found = case()
            results += found
            print_table(found, ["case", "ok"])
    print()
    print_table(results, ["case", "expected", "observed", "ok"])
    print(f"wrote {write_json('faults.json', {'images': args.images, 'results': results})}")


if __name__ == "__main__":
    main()
