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


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("model.cel=gru", "Did you mean 'cell'"),
        ("model.cell=lstmx", "Received: cell='lstmx'"),
        ("model.dropout=1.5", "dropout must be in"),
        ("model.hidden_size=-4", "hidden_size must be greater than 0"),
        ("train.epochs=0", "epochs must be greater than 0"),
        ("modle.cell=gru", "Did you mean 'model'"),
        ("train.epochs=two", "epochs must be an integer"),
        ("model.pooling=max+avg", "pooling"),
    ],
)
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


def test_settings_of_their_old_sections_still_work_with_one_notice(tmp_path, caplog):
    """[pretrain] and [runtime] took settings from [model] and [train] (2026-11-29): TOML files,
    --set keys and flat keywords of before keep working; a file or --set says so once per key, a
    saved artifact silently."""
    from textrnn import TextClassifier
    from textrnn import config as C

    C._noticed.clear()
    path = tmp_path / "old.toml"
    path.write_text(
        '[model]\npretrain_epochs = 2\nword2vec_data = "imdb:unsup"\n[train]\nprecision = "float32"\ndevice = "cpu"\nepochs = 4\n'
    )
    with caplog.at_level("WARNING", logger="textrnn"):
        c = Config.from_toml(path)
        Config.from_toml(path)
    assert (c.pretrain.epochs, c.pretrain.word2vec_data, c.runtime.precision, c.runtime.device, c.train.epochs) == (
        2,
        "imdb:unsup",
        "float32",
        "cpu",
        4,
    )
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 4 and any("model.pretrain_epochs is now pretrain.epochs" in n for n in notices)
    assert Config().override(["model.pretrained_encoder=enc", "train.micro_batch_tokens=100"]).pretrain.encoder == "enc"
    caplog.clear()
    with caplog.at_level("WARNING", logger="textrnn"):
        saved = Config.from_dict({"model": {"pretrain_bf16": True}, "train": {"num_threads": 2}}, notify=False)
    assert saved.pretrain.bf16_softmax and saved.runtime.num_threads == 2 and not caplog.records
    clf = TextClassifier(precision="float32", pretrain_epochs=3, pretrained_encoder="enc", word2vec_epochs=7)
    resolved = clf._resolved_config()
    assert (resolved.runtime.precision, resolved.pretrain.epochs, resolved.pretrain.encoder, resolved.pretrain.word2vec_epochs) == (
        "float32",
        3,
        "enc",
        7,
    )
    with pytest.raises(ConfigError, match="unknown setting pretrain.epoch. Did you mean 'epochs'"):
        Config.from_dict({"pretrain": {"epoch": 1}})
