"""``plot``, ``report`` and ``similar``: exploring a clustered store."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..io import check_not_input, printable
from ._common import add_config_options, check_output, config_for, inputs_of


def add_parsers(sub) -> None:
    for add in (_add_plot, _add_report, _add_similar):
        add(sub)


def _add_explore_inputs(p: argparse.ArgumentParser, clusters_required: bool = True) -> None:
    p.add_argument("store", metavar="STORE", help="store folder made by `stylecluster embed`")
    p.add_argument("--clusters", required=clusters_required, metavar="CLUSTERS.csv",
                   help="output of `stylecluster cluster`; its fitted model beside it defines the style space")
    p.add_argument("--labels", metavar="LABELS.csv", help="CSV with a 'path' column and label columns (optional)")
    p.add_argument("--label-column", help="label column to show (default: --color-by if it names one, else the first label column)")


def _add_names_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--names", metavar="NAMES.json",
                   help='cluster names overriding those made from the data, e.g. {"3": "Venetian colour"}')


def _explore_inputs(args: argparse.Namespace) -> list:
    """What plot, report and similar read: the store, the clusters and their model, labels, names."""
    from ..cluster.persist import model_path_for

    return [*inputs_of(args, "store", "clusters", "labels", "names"), args.clusters and model_path_for(args.clusters)]


def _explorer(args: argparse.Namespace, label_column: str | None = None):
    from ..store import load_store
    from ..viz.data import load_explorer

    if label_column and not args.labels:
        raise InputError(f"{label_column!r} is a label column: pass --labels LABELS.csv")
    return load_explorer(load_store(args.store), args.clusters, args.labels, label_column or args.label_column, config_for(args).fuse)


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="interactive style map (UMAP, WebGL) of a store's images as HTML")
    _add_explore_inputs(p)
    p.add_argument("--color-by", default="cluster", metavar="COLUMN", help="'cluster' (default) or a label column of --labels")
    p.add_argument("--out", required=True, metavar="map.html", help="the HTML file to write")
    # the default is stated, not imported: reading viz.umap_map here would load plotly and UMAP for every --help
    p.add_argument("--embed-limit", type=int, metavar="N",
                   help="largest collection written as one self-contained file; larger ones get their points, text and thumbnails in <out>_files/, loaded on demand (default 2500)")
    _add_layout_options(p, "thumbnails", "replace an existing output file")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from ..viz.umap_map import EMBED_LIMIT, UmapParams, write_map

    out = check_output(args.out, args.overwrite, _explore_inputs(args))
    by_label = args.color_by != "cluster"
    explorer = _explorer(args, args.color_by if by_label else None)
    result = write_map(explorer, out, "label" if by_label else "cluster", EMBED_LIMIT if args.embed_limit is None else args.embed_limit, umap_params=UmapParams(seed=args.seed),
                       workers=args.workers, names=args.names)
    size = out.stat().st_size / 1e6
    where = "self-contained" if result.self_contained else f"thumbnails in {result.thumbs_dir}"
    print(f"wrote {out}: {result.n_points} images, {size:.1f} MB, {where}")
    return 0


def _add_layout_options(p: argparse.ArgumentParser, made_by_workers: str, overwrite_help: str) -> None:
    """The options a map and a report share: UMAP seed, cluster names, worker threads, overwrite, config."""
    p.add_argument("--seed", type=int, default=0, help="UMAP seed (default 0)")
    _add_names_option(p)
    p.add_argument("--workers", type=int, default=2, help=f"threads making {made_by_workers} (default 2)")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    add_config_options(p)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="static HTML explorer: the map, metrics, and one page per cluster")
    _add_explore_inputs(p)
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (open DIR/index.html)")
    p.add_argument("--per-section", type=int, default=12, help="images per section of a cluster page (default 12)")
    _add_layout_options(p, "thumbnails and patches", "replace a report made earlier in DIR")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ..viz.report import check_folder, write_report
    from ..viz.umap_map import UmapParams

    check_not_input(args.out, _explore_inputs(args), folder=True)
    check_folder(Path(args.out), args.overwrite)
    explorer = _explorer(args)
    result = write_report(explorer, Path(args.out), args.per_section, config_for(args), umap_params=UmapParams(seed=args.seed),
                          workers=args.workers, overwrite=args.overwrite, names=args.names)
    print(f"wrote {result.index}: {result.n_images} images, {len(result.pages)} cluster pages, {result.n_shown} images shown with their patches")
    return 0


def _add_similar(sub) -> None:
    p = sub.add_parser("similar", help="the paintings nearest in style to an image, inside or outside the store")
    _add_explore_inputs(p, clusters_required=False)
    p.add_argument("image", metavar="IMAGE", help="a stored path, or an image file (embedded with the store's branches if not in the store)")
    p.add_argument("--k", type=int, default=12, help="number of neighbours (default 12; an image of the store is its own first)")
    p.add_argument("--out", metavar="similar.html", help="also write a self-contained HTML page with thumbnails")
    p.add_argument("--device", help="for an outside image: auto (default), cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace an existing HTML file")
    add_config_options(p)
    p.set_defaults(func=run_similar)


def run_similar(args: argparse.Namespace) -> int:
    from ..viz.similar import find_similar, write_similar

    if args.out:
        check_output(Path(args.out), args.overwrite, [*_explore_inputs(args), args.image if Path(args.image).exists() else None])
    config = config_for(args)
    if args.device:
        config.embed.device = args.device
    explorer = _explorer(args)
    result = find_similar(explorer, args.image, args.k, config)
    print(f"nearest in style to {printable(result.query)}" + ("" if result.inside else " (outside the store)") + ":")
    for row in result.neighbours.itertuples(index=False):
        cluster = f"  cluster {row.cluster}" if explorer.has_clusters else ""
        label = f"  {row.label}" if explorer.has_labels else ""
        print(printable(f"{row.rank:>3}  {row.similarity:.3f}{cluster}  {row.path}{label}"))
    if args.out:
        print(f"wrote {write_similar(result, explorer, args.out)}")
    return 0
