"""The one error type: what the command line prints as one line and what it lets through."""
import argparse

import numpy as np
import pytest

from stylecluster import cli
from stylecluster.cluster import StyleClustering
from stylecluster.errors import ConfigError, NotFittedError, StyleclusterError
from stylecluster.registry import Registry


def _patch_embed(monkeypatch, exc):
    def run(args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setattr(cli.embed, "run_embed", run)


def test_a_stylecluster_error_is_one_line_with_the_traceback_under_verbose(monkeypatch, tmp_path, capsys):
    _patch_embed(monkeypatch, ConfigError("c.yaml: embed.batch_size: expected int, got '32'"))
    assert cli.main(["embed", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == "stylecluster: error: c.yaml: embed.batch_size: expected int, got '32'\n"
    assert cli.main(["embed", str(tmp_path), "--out", str(tmp_path / "s"), "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("stylecluster: error: c.yaml: embed.batch_size: expected int, got '32'\n")


def test_any_other_value_error_is_a_bug_and_surfaces(monkeypatch, tmp_path):
    _patch_embed(monkeypatch, ValueError("operands could not be broadcast together"))
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["embed", str(tmp_path), "--out", str(tmp_path / "s")])


def test_set_overrides_the_named_flags_and_is_type_checked(tmp_path, capsys):
    assert cli.main(["embed", str(tmp_path), "--out", str(tmp_path / "s"), "--batch-size", "8", "--set", "embed.batch_size=x"]) == 2
    assert "embed.batch_size: expected int, got 'x'" in capsys.readouterr().err


def test_an_unfitted_clustering_says_to_fit_first():
    clustering = StyleClustering()
    for use in (clustering.to_frame, clustering.summary, lambda: clustering.predict_store(None)):
        with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
            use()
    assert issubclass(NotFittedError, StyleclusterError) and issubclass(NotFittedError, AttributeError)


def test_registry_refuses_duplicates_and_names_the_choices():
    registry = Registry("widget")

    @registry.register("b")
    def b():
        return "b"

    registry.register("a", np.zeros)
    assert registry.names() == ["a", "b"] and registry.get("b") is b and "a" in registry
    with pytest.raises(ValueError, match="widget 'a' registered twice"):
        registry.register("a", np.ones)
    with pytest.raises(ConfigError, match="unknown widget 'c'; choose from a, b"):
        registry.get("c")
