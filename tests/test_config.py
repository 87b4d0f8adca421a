import re
from pathlib import Path

import pytest
import yaml

from stylecluster.config import Config, config_from_dict, load_config
from stylecluster.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_spells_out_the_dataclass_defaults():
    assert yaml.safe_load((ROOT / "configs" / "default.yaml").read_text()) == Config().to_dict()
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def test_partial_yaml_keeps_other_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("global:\n  gram_levels: [1]\ncluster:\n  method: kmeans\n  k: 5\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.global_.gram_levels == (1,) and config.cluster.k == 5
    assert config.embed.batch_size == Config().embed.batch_size


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'batchsize'"):
        config_from_dict({"embed": {"batchsize": 3}})
    (tmp_path / "bad.yaml").write_text("embed: [1, 2]\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("key, value, expected", [
    ("embed.batch_size", "32", "embed.batch_size: expected int, got '32'"),
    ("global.gram_levels", "12", "global.gram_levels: expected a list of ints, got '12'"),
    ("local.enabled", "yes", "local.enabled: expected bool, got 'yes'"),
    ("fuse.local_weight", None, None),
    ("cluster.k", 2.5, "cluster.k: expected int or str or null, got 2.5"),
])
def test_values_are_checked_against_their_annotations(tmp_path, key, value, expected):
    section, name = key.split(".")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({section: {name: value}}))
    if expected is None:  # fuse.local_weight: null is not a float either
        expected = "fuse.local_weight: expected float, got None"
    with pytest.raises(ConfigError, match=re.escape(f"c.yaml: {expected}")):
        load_config(tmp_path / "c.yaml")


def test_values_keep_their_type_and_lists_become_tuples():
    config = config_from_dict({"global": {"gram_levels": [1, 3]}, "fuse": {"local_weight": 1}, "cluster": {"k": "auto"}})
    assert config.global_.gram_levels == (1, 3)
    assert config.fuse.local_weight == 1 and type(config.fuse.local_weight) is int  # checked, not converted
    assert config.cluster.k == "auto"


def test_overrides_are_dotted_keys_checked_like_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("embed:\n  batch_size: 8\n")
    config = load_config(tmp_path / "c.yaml", {"embed.workers": 0, "cluster.params.min_cluster_size": 20})
    assert (config.embed.batch_size, config.embed.workers, config.cluster.params) == (8, 0, {"min_cluster_size": 20})
    with pytest.raises(ConfigError, match="embed.workers: expected int"):
        load_config(None, {"embed.workers": "two"})
