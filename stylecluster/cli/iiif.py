"""``fetch`` and ``export-iiif``: museum collections in through IIIF, clusters back out as IIIF."""
from __future__ import annotations

import argparse
import sys

from ..io import check_not_input
from ._common import add_verbosity_options, check_output, inputs_of


def add_parsers(sub) -> None:
    _add_fetch(sub)
    _add_export(sub)


def _add_fetch(sub) -> None:
    p = sub.add_parser("fetch", help="download the paintings of a IIIF collection or manifest (Presentation 2.1 or 3.0) with their metadata as labels.csv")
    p.add_argument("source", metavar="SOURCE", help="a IIIF manifest or collection: an http(s) URL or a local JSON file")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for images/, labels.csv and _skipped.csv; an earlier fetch there is resumed")
    p.add_argument("--size", type=int, default=1024, metavar="N",
                   help="longer side requested from the Image API, in pixels (default 1024; a level-0 server gives the nearest size it has)")
    p.add_argument("--concurrency", type=int, default=4, metavar="K", help="requests at a time (default 4; be polite to museum servers)")
    p.add_argument("--max-depth", type=int, default=5, metavar="D", help="how deep to follow collections inside collections (default 5)")
    p.add_argument("--max-items", type=int, metavar="M", help="fetch at most M canvases, in the collection's order (default: all)")
    p.add_argument("--refresh", action="store_true",
                   help="read the collections and manifests from the servers again (a rerun otherwise uses the copies kept in DIR/_iiif/)")
    add_verbosity_options(p)
    p.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from ..data.fetch import FetchOptions, fetch_iiif, local_source

    check_not_input(args.out, [local_source(args.source)], folder=True)
    options = FetchOptions(size=args.size, concurrency=args.concurrency, max_depth=args.max_depth, max_items=args.max_items, refresh=args.refresh)
    report = fetch_iiif(args.source, args.out, options, quiet=args.quiet)
    print("\n".join(report.summary_lines()))
    if report.complete == 0:
        print("stylecluster: error: no image could be fetched", file=sys.stderr)
        return 1
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export-iiif", help="write the clusters as a IIIF Presentation 3.0 Collection: one Manifest per cluster, for Mirador or the Universal Viewer")
    p.add_argument("clusters", metavar="CLUSTERS.csv", help="output of `stylecluster cluster` on images fetched by `stylecluster fetch`")
    p.add_argument("--labels", required=True, metavar="LABELS.csv", help="the labels.csv written by `stylecluster fetch`")
    p.add_argument("--out", required=True, metavar="clusters.json", help="the Collection to write")
    p.add_argument("--names", metavar="NAMES.json", help='cluster names overriding those made from the data, e.g. {"3": "Venetian colour"}')
    p.add_argument("--label-column", help="label column the clusters are named from, as in `report` (default: the first column of LABELS.csv, artist)")
    p.add_argument("--base-url", metavar="URL", help="http(s) address of the folder where clusters.json will be published: the ids of the collection and its manifests (default: the file: URL of the folder it is written to)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_verbosity_options(p)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..viz.iiif_export import write_cluster_collection

    out = check_output(args.out, args.overwrite, inputs_of(args, "clusters", "labels", "names"))
    collection = write_cluster_collection(args.clusters, args.labels, out, args.base_url, args.label_column, args.names)
    works = sum(len(m["items"]) for m in collection["items"])
    print(f"wrote {out}: {len(collection['items'])} cluster manifests, {works} works")
    return 0
