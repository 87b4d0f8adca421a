"""``import``: embeddings made elsewhere in, a store out."""
from __future__ import annotations

import argparse

from ._common import add_verbosity_options


def add_parsers(sub) -> None:
    p = sub.add_parser("import", help="make a store of embeddings computed elsewhere (Parquet path + vector columns, or .npy + paths)")
    p.add_argument("vectors", metavar="VECTORS",
                   help="a Parquet file with a 'path' column and a 'vector' column (a list of floats per row), or a .npy matrix (rows x dimensions)")
    p.add_argument("--out", required=True, metavar="STORE", help="store folder to create")
    p.add_argument("--paths", metavar="FILE", help="with a .npy: the image path of each row, one per line")
    p.add_argument("--images-root", metavar="DIR", help="folder the paths are relative to; maps and reports then show thumbnails (optional)")
    p.add_argument("--dtype", choices=["auto", "float32", "float16"], default="auto",
                   help="how the store keeps the vectors: float16 halves its size and reading time (auto: float16 from a million rows)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at STORE")
    add_verbosity_options(p)
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from ..importer import import_vectors

    report = import_vectors(args.vectors, args.out, paths=args.paths, overwrite=args.overwrite, images_root=args.images_root, quiet=args.quiet, dtype=args.dtype)
    print("\n".join(report.summary_lines()))
    return 0
