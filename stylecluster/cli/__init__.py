"""Command-line interface: parses arguments, calls the Python API, prints. Nothing else lives here.

One module per command group; each adds its parsers with ``set_defaults(func=run_...)``, and
:data:`GROUPS` is the one list of them. Nothing but ``__main__`` imports this package.

Errors: a :class:`~stylecluster.errors.StyleclusterError` (and an ``OSError`` on a file the
command reads or writes — the environment, not a bug) is one line, exit status 2, with the
traceback under ``-v``. Any other exception is a bug and surfaces with its traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Sequence

from .._version import __version__
from ..errors import StyleclusterError
from ..io import printable
from . import classify, cluster, embed, explore, iiif, importer, train

GROUPS = (embed, importer, iiif, cluster, train, explore, classify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylecluster",
        description="Find the style structure of an art collection: embed, cluster, evaluate, explore.",
    )
    parser.add_argument("--version", action="version", version=f"stylecluster {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


class _LineHandler(logging.Handler):
    """One escaped line per message (a file name with a newline or a terminal escape stays on its
    line and inert), written through tqdm so that it never glues onto a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(printable(self.format(record)), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _setup_logging(args: argparse.Namespace) -> None:
    verbose = getattr(args, "verbose", False)
    level = logging.DEBUG if verbose else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", handlers=[_LineHandler()])
    logging.getLogger("stylecluster").setLevel(level)
    # Libraries' warnings (scikit-learn, numpy, hdbscan) speak of their internals, not of the
    # user's images: shown with -v only, as log lines.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)


def _error(message: str, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"stylecluster: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    verbose = getattr(args, "verbose", False)
    try:
        return args.func(args)
    except StyleclusterError as exc:
        return _error(printable(exc), verbose)
    except OSError as exc:  # a file that cannot be read or written: one line naming it
        where = f"{printable(exc.filename)}: " if exc.filename else ""
        return _error(f"{where}{printable(exc.strerror or exc)}", verbose)
    except KeyboardInterrupt:
        print("stylecluster: interrupted; what was saved is kept — run the same command again to resume", file=sys.stderr)
        return 130
