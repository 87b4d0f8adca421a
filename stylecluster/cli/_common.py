"""What every command shares: the config options, the output check, the images folder."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

from ..config import Config, load_config
from ..errors import InputError
from ..io import check_not_input, check_writable, printable


class LazyChoices:
    """An argparse ``choices`` read from a registry only when a value is checked or the command's
    own help is shown, so that building the parser imports no torch: ``stylecluster --version``
    and ``--help`` took 11 s and 1 GB while the registries were read up front."""

    def __init__(self, names: Callable[[], list[str]]):
        self._names = names

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="more detail, including debug messages and the traceback of an error")
    noise.add_argument("-q", "--quiet", action="store_true", help="no progress bars; only warnings and errors")


def _parse_setting(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def add_config_options(parser: argparse.ArgumentParser, schema: str = "configs/default.yaml: sections ingest, global, local, embed, fuse, cluster") -> None:
    """``--config YAML`` and ``--set KEY=VALUE``; ``schema`` says which settings the file holds."""
    parser.add_argument("--config", metavar="YAML", help=f"configuration file ({schema}); flags override it")
    parser.add_argument("--set", dest="settings", action="append", type=_parse_setting, default=[], metavar="KEY=VALUE",
                        help="override one setting of the configuration, repeatable (e.g. --set embed.batch_size=16); "
                             "VALUE is YAML; each named flag is a shorthand for one of these")
    add_verbosity_options(parser)


def overrides(args: argparse.Namespace, flags: Mapping[str, str]) -> dict[str, Any]:
    """The dotted settings a command's flags set: ``flags`` maps a flag's attribute to its key;
    flags not given are left out, and ``--set`` comes last (it wins)."""
    values = {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag, None) is not None}
    values.update(dict(getattr(args, "settings", [])))
    return values


def config_for(args: argparse.Namespace, flags: Mapping[str, str] = {}) -> Config:
    """The configuration a command runs with: defaults, then ``--config``, then flags."""
    return load_config(args.config, overrides(args, flags))


def images_folder(path: str | Path) -> Path:
    """The images folder a command reads, or a one-line error when it is not one."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    return root


def check_output(path: str | Path, overwrite: bool, inputs=(), folder: bool = False) -> Path:
    """An output file (or ``folder``), checked before any work: refused when it exists (without
    --overwrite), cannot be written (a read-only folder, a file where a folder should be), or
    would destroy one of the command's ``inputs`` (:func:`~stylecluster.io.check_not_input`:
    the same path, a path inside a store it reads, or for a folder, one holding an input)."""
    path = Path(path)
    check_not_input(path, inputs, folder=folder)
    if path.exists() and not overwrite:
        raise InputError(f"{printable(path)} exists; pass --overwrite to replace it or choose another --out")
    check_writable(path, folder=folder)
    return path


def inputs_of(args: argparse.Namespace, *names: str) -> list[str]:
    """What a command reads, from its arguments: the named ones that were given, and --config."""
    return [value for value in (getattr(args, name, None) for name in (*names, "config")) if value]
