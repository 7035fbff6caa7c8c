"""Settings left at "auto" are decided from the training data; explicit ones always win."""

import json
import logging

import numpy as np
import pytest
import torch

from textrnn import Config, TextClassifier, adaptive
from textrnn.config import AUTO, ModelConfig, TrainConfig
from textrnn.errors import ConfigError
from textrnn.models import build_model
from textrnn.optim import make_optimizer
from textrnn.trainer import fit as fit_model


def _counts(n_types: int, seen_once: int) -> np.ndarray:
    return np.array([5] * (n_types - seen_once) + [1] * seen_once)


def test_the_defaults_are_auto_and_auto_reads_from_toml_and_set(tmp_path):
    c = Config()
    assert (c.text.max_length, c.train.epochs) == (AUTO, AUTO)
    path = tmp_path / "c.toml"
    path.write_text('[text]\nmax_length = "auto"\n[train]\nepochs = "AUTO"\n')
    c = Config.from_toml(path)
    assert (c.text.max_length, c.train.epochs) == (AUTO, AUTO)
    c = c.override(["train.epochs=7", "text.max_length=auto"])
    assert (c.train.epochs, c.text.max_length) == (7, AUTO)


@pytest.mark.parametrize("value", ["many", "3.5", "true"])
def test_a_word_other_than_auto_is_one_clear_error(value):
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer or 'auto'"):
        Config().override([f"train.epochs={value}"])


def test_a_zero_or_negative_epoch_count_is_still_refused():
    with pytest.raises(ConfigError, match="epochs must be greater than 0"):
        Config().override(["train.epochs=0"])


def test_short_texts_get_a_short_length_covering_99_percent():
    lengths = np.r_[np.full(990, 10), np.full(10, 200)]
    config, decisions, summary = adaptive.decide(Config(), lengths, _counts(500, 100))
    # the 99th percentile, rounded up to a multiple of 8
    assert config.text.max_length == 8 * int(np.ceil(np.quantile(lengths, 0.99) / 8))
    assert config.text.max_length >= np.quantile(lengths, 0.99)
    assert summary["texts"] == 1000


def test_long_texts_are_capped_for_speed():
    lengths = np.full(100, 3000)
    config, decisions, _ = adaptive.decide(Config(), lengths, _counts(500, 100))
    assert config.text.max_length == adaptive.MAX_LENGTH
    reason = next(d.reason for d in decisions if d.key == "text.max_length")
    assert "capped" in reason


def test_the_epoch_ceiling_follows_the_number_of_steps():
    few, _, _ = adaptive.decide(Config(), np.full(2000, 10), _counts(100, 0))
    many, _, _ = adaptive.decide(Config(), np.full(100_000, 10), _counts(100, 0))
    assert adaptive.MIN_EPOCHS <= many.train.epochs < few.train.epochs <= adaptive.MAX_EPOCHS
    assert many.train.epochs == adaptive.MIN_EPOCHS
    # under torchrun each process takes a share of the steps: more epochs for the same steps
    two, _, _ = adaptive.decide(Config(), np.full(20_000, 10), _counts(100, 0), world_size=2)
    one, _, _ = adaptive.decide(Config(), np.full(20_000, 10), _counts(100, 0))
    assert two.train.epochs >= one.train.epochs


def test_explicit_settings_win_and_are_not_reported_as_decided():
    explicit = ["text.max_length=33", "train.epochs=2", "train.early_stopping_patience=1", "model.members=1", "train.adversarial=0.5"]
    explicit.append("train.learning_rate=0.01")
    config = Config().override(explicit)
    decided, decisions, _ = adaptive.decide(config, np.full(50, 10), _counts(100, 50))
    assert decisions == []
    assert (decided.text.max_length, decided.train.epochs) == (33, 2)


def _data(n=120):
    rng = np.random.default_rng(0)
    good, bad = ["great", "fine", "superb", "lovely"], ["awful", "dull", "poor", "bad"]
    texts, labels = [], []
    for i in range(n):
        words = list(rng.choice(good if i % 2 else bad, 3)) + list(rng.choice(["the", "a", "film", "plot"], 4))
        texts.append(" ".join(words))
        labels.append("pos" if i % 2 else "neg")
    return texts, labels


def test_fit_decides_logs_one_block_and_saves_the_decided_values(tmp_path, caplog):
    texts, labels = _data()
    clf = TextClassifier(embedding_dim=8, hidden_size=8, batch_size=32, early_stopping_patience=None)
    with caplog.at_level(logging.INFO, logger="textrnn"):
        clf.fit(texts, labels, validation_split=0.2, progress=False)
    block = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decided from the data")]
    assert len(block) == 1
    assert "train.epochs" in block[0] and "text.max_length" in block[0]
    c = clf.config_
    assert c.text.max_length == 8 and isinstance(c.train.epochs, int)
    assert len(clf.history_) == c.train.epochs  # no early stopping here: the whole ceiling ran
    assert clf.config.train.epochs == AUTO  # the estimator's own settings are untouched (scikit-learn's rule)
    clf.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["train"]["epochs"] == c.train.epochs
    assert meta["decided"]["settings"]["text.max_length"]["value"] == 8
    again = TextClassifier.load(tmp_path / "m")
    assert again.config_.text.max_length == 8
    assert again.predict(texts[:4]) == clf.predict(texts[:4])


def test_the_trainer_alone_decides_an_auto_epoch_count():
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding_dim=4, hidden_size=4), 10, 2)
    x = [np.array([2, 3, 4], dtype=np.int32)] * 40
    y = np.array([0, 1] * 20)
    history = fit_model(model, x, y, TrainConfig(batch_size=8, early_stopping_patience=None), progress=False)
    assert len(history) == adaptive.epochs_for(40, 8).value


def test_patience_follows_the_epochs_and_an_explicit_one_wins():
    lengths, counts = np.full(20_000, 10), _counts(100, 0)
    config, _, _ = adaptive.decide(Config().override(["train.epochs=10"]), lengths, counts)
    assert config.train.early_stopping_patience == 4
    config, _, _ = adaptive.decide(Config().override(["train.epochs=3"]), lengths, counts)
    assert config.train.early_stopping_patience == 2
    config, decisions, _ = adaptive.decide(Config().override(["train.early_stopping_patience=none"]), lengths, counts)
    assert config.train.early_stopping_patience is None
    assert "train.early_stopping_patience" not in {d.key for d in decisions}


def test_fit_holds_out_a_validation_split_of_enough_texts_as_the_cli_does(caplog):
    texts, labels = _data(600)
    clf = TextClassifier(embedding_dim=4, hidden_size=4, epochs=1, batch_size=64)
    clf.fit(texts, labels, progress=False)
    assert "val_accuracy" in clf.history_[0]  # 10% held out: 600 texts are enough
    small = TextClassifier(embedding_dim=4, hidden_size=4, epochs=1).fit(texts[:100], labels[:100], progress=False)
    assert "val_accuracy" not in small.history_[0]  # too few: every text trains
    every = TextClassifier(embedding_dim=4, hidden_size=4, epochs=1).fit(texts, labels, validation_split=0, progress=False)
    assert "val_accuracy" not in every.history_[0]
    with pytest.raises(Exception, match="validation_split must be a fraction in \\(0, 1\\) or 'auto'"):
        TextClassifier(epochs=1).fit(texts, labels, validation_split="some")


def test_small_data_gets_an_ensemble_large_data_and_tiny_data_one_model():
    counts = _counts(100, 0)
    small, _, _ = adaptive.decide(Config(), np.full(8_000, 20), counts)
    assert small.model.members == adaptive.ENSEMBLE_MEMBERS
    assert small.model.cells == ["lstm"] * adaptive.ENSEMBLE_MEMBERS
    imdb = np.r_[np.full(18_000, 180), np.full(4_500, 900)]  # IMDB's size: 22,500 texts, a long tail
    large, decisions, _ = adaptive.decide(Config(), imdb, counts)
    assert large.model.members == 1 and large.train.epochs == 3 and large.text.max_length == 400
    assert "tokens over 3 epochs" in next(d.reason for d in decisions if d.key == "model.members")
    tiny, _, _ = adaptive.decide(Config(), np.full(500, 20), counts)
    assert tiny.model.members == 1
    mlp, _, _ = adaptive.decide(Config().override(["model.arch=mlp"]), np.full(8_000, 20), counts)
    assert mlp.model.members == 1
    given, _, _ = adaptive.decide(Config().override(["model.members=2", "model.cell=lstm+gru"]), np.full(8_000, 20), counts)
    assert given.model.cells == ["lstm", "gru", "lstm", "gru"]


def test_fit_trains_the_decided_ensemble_and_it_saves_and_loads(tmp_path):
    texts, labels = _data(1_200)  # 1,080 after the validation split
    clf = TextClassifier(embedding_dim=4, hidden_size=4, epochs=1).fit(texts, labels, progress=False)
    assert clf.config_.model.members == adaptive.ENSEMBLE_MEMBERS and len(clf.model_.members) == adaptive.ENSEMBLE_MEMBERS
    clf.save(tmp_path / "m")
    again = TextClassifier.load(tmp_path / "m")
    assert np.allclose(again.predict_proba(texts[:8]), clf.predict_proba(texts[:8]), atol=1e-6)


def test_small_data_gets_adversarial_training_large_data_none_and_an_explicit_norm_wins():
    counts = _counts(100, 0)
    small, decisions, _ = adaptive.decide(Config(), np.full(8_000, 20), counts)
    assert small.train.adversarial == adaptive.ADVERSARIAL_NORM
    assert "train.adversarial" in adaptive.describe(decisions, adaptive.data_summary(np.full(8_000, 20), counts))
    imdb = np.r_[np.full(18_000, 180), np.full(4_500, 900)]
    large, decisions, _ = adaptive.decide(Config(), imdb, counts)
    assert large.train.adversarial == 0.0 and "texts" in next(d.reason for d in decisions if d.key == "train.adversarial")
    many_short, _, _ = adaptive.decide(Config(), np.full(60_000, 9), counts)  # SST-2's phrases: too many texts
    assert many_short.train.adversarial == 0.0
    given, decisions, _ = adaptive.decide(Config().override(["train.adversarial=0"]), np.full(8_000, 20), counts)
    assert given.train.adversarial == 0.0 and "train.adversarial" not in {d.key for d in decisions}
    # the trainer alone, without the texts' lengths, leaves it off
    assert adaptive.resolve_train(TrainConfig(), 8_000).adversarial == 0.0


def test_large_data_gets_a_higher_peak_rate_small_data_the_mlp_and_an_explicit_rate_keep_theirs():
    counts, imdb, small = _counts(100, 0), np.r_[np.full(18_000, 180), np.full(4_500, 900)], np.full(8_000, 20)
    large, decisions, _ = adaptive.decide(Config(), imdb, counts)
    assert large.train.learning_rate == adaptive.LARGE_DATA_LEARNING_RATE == 6e-3
    assert "large data" in adaptive.describe(decisions, adaptive.data_summary(imdb, counts))
    assert adaptive.decide(Config(), small, counts)[0].train.learning_rate == adaptive.LEARNING_RATE == 3e-3
    assert adaptive.decide(Config().override(["model.arch=mlp"]), imdb, counts)[0].train.learning_rate == 3e-3
    given, decisions, _ = adaptive.decide(Config().override(["train.learning_rate=0.001"]), imdb, counts)
    assert given.train.learning_rate == 0.001 and "train.learning_rate" not in {d.key for d in decisions}
    # the trainer alone, without the model, takes the rate for any model; the optimizer never sees "auto"
    assert adaptive.resolve_train(TrainConfig(), 30_000).learning_rate == 3e-3
    with pytest.raises(ConfigError, match="not decided"):
        make_optimizer(torch.nn.Linear(2, 1), TrainConfig())


def test_a_tie_in_validation_accuracy_keeps_the_epoch_of_lower_validation_loss(monkeypatch):
    from textrnn.trainer import Trainer

    scripted = iter([(0.50, 0.80), (0.40, 0.85), (0.35, 0.85), (0.45, 0.85), (0.30, 0.84)])
    monkeypatch.setattr(Trainer, "_validate", lambda self: next(scripted))
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding_dim=4, hidden_size=4), 10, 2)
    x = [np.array([2, 3, 4], dtype=np.int32)] * 16
    y = np.array([0, 1] * 8)
    cfg = TrainConfig(batch_size=8, epochs=5, early_stopping_patience=None)
    history = fit_model(model, x, y, cfg, val_x=x[:4], val_y=y[:4], progress=False)
    # epoch 3 ties epoch 2 at 0.85 with a lower loss and wins; epoch 4 ties with a higher one and loses
    assert [row["best"] for row in history] == [False, False, True, False, False]


def test_the_seed_recipe_is_the_course_model_on_any_data():
    """configs/seed.toml is the course's one LSTM trained on the texts alone: on a few thousand
    short texts, where "auto" averages models and adds adversarial training, it decides neither."""
    from pathlib import Path

    seed = Config.from_toml(Path(__file__).resolve().parents[1] / "configs" / "seed.toml")
    decided, decisions, _ = adaptive.decide(seed, np.full(8_000, 20), _counts(100, 0))
    assert decided.model.members == 1 and decided.train.adversarial == 0.0 and decided.train.epochs == 3
    assert {d.key for d in decisions} == set()
