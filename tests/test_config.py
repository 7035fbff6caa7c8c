import pytest

from textrnn.config import Config, ModelConfig
from textrnn.errors import ConfigError


def test_json_and_toml_roundtrip(tmp_path):
    c = Config().override(["model.cell=gru", "train.epochs=5", "text.max_length=123", "data.test=none"])
    assert Config.from_dict(c.to_dict()) == c
    (tmp_path / "c.toml").write_text(c.to_toml())
    assert Config.from_toml(tmp_path / "c.toml") == c


def test_override_parses_types():
    c = Config().override(["model.bidirectional=false", "train.learning_rate=0.01", "model.pooling=max"])
    assert c.model.bidirectional is False and c.train.learning_rate == 0.01 and c.model.pooling == "max"


@pytest.mark.parametrize("assignment,message", [
    ("model.cel=gru", "Did you mean 'cell'"),
    ("model.cell=lstmx", "Received: cell='lstmx'"),
    ("model.dropout=1.5", "dropout must be in"),
    ("model.hidden_size=-4", "hidden_size must be greater than 0"),
    ("train.epochs=0", "epochs must be greater than 0"),
    ("modle.cell=gru", "Did you mean 'model'"),
    ("train.epochs=two", "epochs must be an integer"),
    ("model.pooling=max+avg", "pooling"),
])
def test_bad_settings_name_the_problem(assignment, message):
    with pytest.raises(ConfigError, match=message):
        Config().override([assignment])


def test_unknown_key_in_toml_suggests(tmp_path):
    (tmp_path / "c.toml").write_text("[train]\nepoks = 3\n")
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        Config.from_toml(tmp_path / "c.toml")


def test_concat_pooling_alias():
    assert ModelConfig(pooling="concat").poolings == ["last", "max", "mean"]


def test_repo_configs_load():
    from pathlib import Path

    for path in (Path(__file__).parents[1] / "configs").glob("*.toml"):
        Config.from_toml(path)
