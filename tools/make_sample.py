"""Build the package's built-in sample from ../shared/data/aic-cc0 (CC0 paintings).

Downscales every painting to at most MAX_SIDE pixels (JPEG, quality QUALITY) into
stylecluster/sample/images/ and writes stylecluster/sample/labels.csv with period and artist.
Run from the repository root: ``python tools/make_sample.py [SOURCE_DIR]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps

MAX_SIDE = 512
QUALITY = 85


def main(source: Path = Path("../shared/data/aic-cc0"), dest: Path = Path("stylecluster/sample")) -> None:
    labels = pd.read_csv(source / "labels.csv")
    (dest / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for row in labels.itertuples(index=False):
        with Image.open(source / row.path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            name = f"images/{Path(row.path).stem}.jpg"
            img.save(dest / name, quality=QUALITY, optimize=True)
        rows.append({"path": name, "period": row.period, "artist": row.artist, "title": row.title, "license": row.license})
    pd.DataFrame(rows).to_csv(dest / "labels.csv", index=False)
    total = sum(f.stat().st_size for f in (dest / "images").glob("*.jpg"))
    print(f"{len(rows)} images, {total / 1e6:.1f} MB in {dest}")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:3]))
