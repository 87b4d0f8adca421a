from pathlib import Path

import pytest
import yaml

from stylecluster.config import Config, config_from_dict, load_config

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
