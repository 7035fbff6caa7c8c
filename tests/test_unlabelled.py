"""Texts without labels (data.unlabelled) and entropy minimisation (train.entropy_min): the entropy
and its gradient, what a step does with such texts (never the supervised loss), and runs with them:
reproducible, side by side, resumed, under two processes, refused without vat or entropy_min."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_sentiment
from test_distributed import FLAGS, env, failure, reviews, torchrun, write_csv
from textrnn import TextClassifier, models, pieces, trainer
from textrnn.cli import main
from textrnn.config import Config, DataConfig, ModelConfig, TrainConfig
from textrnn.errors import ConfigError, TextRNNError
from textrnn.models import entropy, loss_fn
from textrnn.pieces import Step, Unlabelled
from textrnn.pipeline import portable_config

UNLABELLED = [
    "good music and great acting",
    "awful plot, bad acting",
    "i loved the great music",
    "truly bad and awful",
    "a great good film",
    "hated it, bad film",
    "great fun",
    "awful music and a bad plot",
]


# ------------------------------------------------------------------------------ the entropy


@pytest.mark.parametrize("shape,multilabel", [((5, 1), False), ((5, 4), False), ((5, 3), True), ((2, 5, 4), False)])
def test_the_entropy_gradient_matches_finite_differences(shape, multilabel):
    logits = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: entropy(x, multilabel), (logits,))
    assert torch.autograd.gradgradcheck(lambda x: entropy(x, multilabel), (logits,))


def test_the_entropy_of_known_distributions():
    log = torch.log
    torch.testing.assert_close(entropy(torch.zeros(3, 4)), log(torch.tensor(4.0)))  # uniform softmax
    torch.testing.assert_close(entropy(torch.zeros(3, 1)), log(torch.tensor(2.0)))  # a coin
    torch.testing.assert_close(entropy(torch.zeros(3, 5), multilabel=True), 5 * log(torch.tensor(2.0)))  # five coins
    assert entropy(torch.tensor([[40.0, -40.0]])) < 1e-6 and entropy(torch.tensor([[-40.0]])) < 1e-6  # certain
    # an ensemble: each member's own entropy, averaged, not the entropy of their mean
    members = torch.tensor([[[20.0, -20.0]], [[-20.0, 20.0]]])
    assert entropy(members) < 1e-6 < entropy(members.mean(0)) - 0.6


def _toy(dtype=torch.float32, members: int = 1):
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=8, hidden_size=8, dropout=0.0, embedding_dropout=0.0, members=members)
    model = models.build_model(config, 30, 3).to(dtype)
    return model, torch.randint(1, 30, (6, 7)), torch.full((6,), 7)


def test_the_entropy_of_a_toy_model_has_the_gradient_of_finite_differences():
    model, ids, lengths = _toy(torch.float64)
    names = ["head.weight", "rnn.weight_hh_l0"]
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters() if n in names}

    def term(*values):
        return entropy(torch.func.functional_call(model, dict(zip(names, values)), (ids, lengths)))

    assert torch.autograd.gradcheck(term, tuple(params[n] for n in names))


@pytest.mark.parametrize("members", [1, 2])
def test_the_pieces_of_texts_without_labels_add_up_to_the_weighted_mean_entropy(members):
    model, ids, lengths = _toy(members=members)
    step = Step(model, model, torch.device("cpu"), torch.float32, None, 0.0, entropy_min=0.5)
    texts = Unlabelled(ids, lengths, [slice(0, 2), slice(2, 6)])
    for rows in texts.pieces:
        step.unlabelled_piece(texts, rows, multilabel=False, all_rows=12).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (0.5 * entropy(model(ids, lengths))).backward()
    for g, p in zip(got, model.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_a_step_adds_the_entropy_of_its_unlabelled_rows_to_the_supervised_loss_of_its_labelled_ones():
    """The step's loss: cross-entropy on the labelled rows (mean over them, in whatever pieces) plus
    entropy_min times the unlabelled rows' mean entropy; the unlabelled rows have no labels to use."""
    model, ids, lengths = _toy()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    u_ids, u_lengths = torch.randint(1, 30, (4, 5)), torch.full((4,), 5)
    step = Step(model, model, torch.device("cpu"), torch.float32, None, 0.0, entropy_min=0.3)
    loss, logits = step.one_after_another(
        ids, lengths, y, [slice(0, 4), slice(4, 6)], trainer.distributed.Context(), Unlabelled(u_ids, u_lengths, [slice(0, 4)])
    )
    with torch.no_grad():
        expected = loss_fn(model(ids, lengths), y) + 0.3 * entropy(model(u_ids, u_lengths))
    torch.testing.assert_close(loss, expected)
    assert torch.cat(logits).shape == (6, 3)  # the accuracy's logits: the labelled rows only
    # without unlabelled rows, entropy minimisation is on the labelled rows
    loss, _ = step.one_after_another(ids, lengths, y, [slice(0, 6)], trainer.distributed.Context())
    with torch.no_grad():
        torch.testing.assert_close(loss, loss_fn(model(ids, lengths), y) + 0.3 * entropy(model(ids, lengths)))


# ------------------------------------------------------------------------------ runs


def _kw(**extra):
    settings = dict(
        embedding_dim=16,
        hidden_size=16,
        epochs=3,
        batch_size=8,
        min_freq=1,
        learning_rate=0.02,
        early_stopping_patience=None,
        validation_split=0.0,
        precision="float32",
        adversarial=0.0,
        members=1,
    )
    return {**settings, **extra}


def _fit(unlabelled=None, fit=None, **settings):
    texts, labels = tiny_sentiment()
    return TextClassifier(**_kw(**settings)).fit(texts, labels, progress=False, unlabelled=unlabelled, **(fit or {}))


def _same(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.model_.state_dict().values(), b.model_.state_dict().values()))


@pytest.mark.parametrize(
    "settings",
    [{"vat": 1.0}, {"entropy_min": 0.5}, {"vat": 1.0, "entropy_min": 0.5, "adversarial": 1.0}, {"vat": 1.0, "members": 2}],
    ids=["vat", "entropy", "all-three", "ensemble"],
)
def test_texts_without_labels_change_training_and_a_run_with_them_is_reproducible(settings):
    a, b = _fit(UNLABELLED, **settings), _fit(UNLABELLED, **settings)
    assert _same(a, b)
    assert not _same(a, _fit(**settings))  # they were trained on
    assert a.predict(["a great film", "an awful film"]) == ["pos", "neg"]


def test_texts_from_data_unlabelled_are_read_by_fit(tmp_path):
    path = tmp_path / "u.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text",), *[(t,) for t in UNLABELLED]])
    texts, labels = tiny_sentiment()
    from_config = TextClassifier(**_kw(unlabelled=str(path), vat=1.0)).fit(texts, labels, progress=False)
    assert from_config.config_.data.unlabelled == [str(path)]
    assert _same(from_config, _fit(UNLABELLED, vat=1.0))


def test_copies_of_validation_texts_are_dropped_and_a_pool_of_copies_feeds_nothing(caplog):
    texts, labels = tiny_sentiment()
    with caplog.at_level(logging.INFO, logger="textrnn"):
        copies = _fit(["a good film", "a bad film"], fit={"validation_data": (texts[:4], labels[:4])}, vat=1.0)
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unlabelled:")]
    assert line == [
        "unlabelled: 0 of 2 texts train beside the labelled ones (vat, entropy_min); "
        "2 identical to a validation or test text dropped: none to train on"
    ]
    assert _same(copies, _fit(fit={"validation_data": (texts[:4], labels[:4])}, vat=1.0))  # as if none were given


def test_entropy_minimisation_without_texts_without_labels_is_on_the_labelled_ones():
    assert not _same(_fit(entropy_min=0.5), _fit())
    multilabel = TextClassifier(**_kw(entropy_min=0.5)).fit(
        ["a b", "b c", "c a", "a"] * 4, [["x"], ["x", "y"], ["y"], ["x"]] * 4, progress=False
    )
    assert multilabel.multilabel_ and np.isfinite(multilabel.history_[-1]["loss"])


def test_pieces_side_by_side_train_as_the_whole_batch_and_reproducibly(monkeypatch):
    """Two one-core workers, each with its piece of the labelled and of the unlabelled rows."""
    settings = dict(entropy_min=0.5, dropout=0.0, embedding_dropout=0.0, micro_batch_tokens=None, batch_size=16)
    whole = _fit(UNLABELLED * 2, num_threads=1, **settings)
    monkeypatch.setattr(pieces, "workers", lambda *a: 2)
    side_by_side = _fit(UNLABELLED * 2, **settings)
    for (name, p), q in zip(whole.model_.state_dict().items(), side_by_side.model_.state_dict().values()):
        torch.testing.assert_close(p, q, atol=2e-5, rtol=1e-4, msg=name)
    a, b = _fit(UNLABELLED * 2, vat=1.0, entropy_min=0.5), _fit(UNLABELLED * 2, vat=1.0, entropy_min=0.5)
    assert _same(a, b)


def test_a_run_with_them_resumes_bit_for_bit(monkeypatch, tmp_path):
    settings = dict(vat=1.0, entropy_min=0.5, checkpoint_every=2, epochs=3, num_threads=1)
    whole = _fit(UNLABELLED, **settings)
    real, calls = trainer.collate, {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:  # mid-epoch 2 (each step collates its labelled and its unlabelled rows)
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "collate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(UNLABELLED, fit={"checkpoint_dir": tmp_path}, **settings)
    monkeypatch.setattr(trainer, "collate", real)
    assert _same(whole, _fit(UNLABELLED, fit={"checkpoint_dir": tmp_path, "resume": True}, **settings))
    with pytest.raises(TextRNNError, match="other training data"):  # other unlabelled texts: another run
        _fit(UNLABELLED[:4], fit={"checkpoint_dir": tmp_path, "resume": True}, **settings)


# ------------------------------------------------------------------------------ through the CLI

CLI = [
    "--set",
    "model.embedding_dim=8",
    "--set",
    "model.hidden_size=8",
    "--set",
    "model.members=1",
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.adversarial=0",
    "--set",
    "text.min_freq=1",
    "--set",
    "data.validation_split=0",
    "--set",
    "runtime.num_threads=1",
    "--quiet",
]


def _csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _weights(run: Path) -> dict:
    return load_file(run / "model" / "weights.safetensors")


def test_labels_beside_unlabelled_texts_are_never_read_and_copies_of_test_texts_are_dropped(tmp_path, caplog):
    texts, labels = tiny_sentiment()
    train = _csv(tmp_path / "train.csv", zip(texts, labels))
    test = _csv(tmp_path / "test.csv", [("a great film", "pos"), ("an awful film", "neg")])
    one = _csv(tmp_path / "one.csv", [(t, "pos") for t in UNLABELLED])
    other = _csv(tmp_path / "other.csv", [(t, "not a class") for t in UNLABELLED])
    data = ["--train", str(train), "--test", str(test), "--set", "train.vat=1.0"]
    for name, source in (("one", one), ("other", other)):
        assert main(["train", *data, "--unlabelled", str(source), "-o", str(tmp_path / name), *CLI]) == 0
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "other")
    assert all(torch.equal(a[k], b[k]) for k in a)
    copies = _csv(tmp_path / "copies.csv", [("a great film",), ("an awful film",)], header=("text",))
    with caplog.at_level(logging.INFO, logger="textrnn"):
        assert main(["train", *data, "--unlabelled", str(copies), "--unlabelled", str(copies), "-o", str(tmp_path / "copies"), *CLI]) == 0
    assert any("0 of 4 texts train" in r.getMessage() and "4 identical" in r.getMessage() for r in caplog.records)
    assert main(["train", *data, "-o", str(tmp_path / "none"), *CLI]) == 0
    c, d = _weights(tmp_path / "copies"), _weights(tmp_path / "none")
    assert all(torch.equal(c[k], d[k]) for k in c)
    saved = json.loads((tmp_path / "copies" / "metrics.json").read_text())["config"]["data"]["unlabelled"]
    assert saved == [str(copies), str(copies)]


def test_config_errors(tmp_path, capsys):
    with pytest.raises(
        ConfigError, match=r"data.unlabelled feeds train.vat and train.entropy_min; set one. Received: data.unlabelled=\['imdb:unsup'\]"
    ):
        Config().override({"data.unlabelled": "imdb:unsup"})
    assert Config().override({"data.unlabelled": "imdb:unsup", "train.entropy_min": 0.1}).data.unlabelled == ["imdb:unsup"]
    assert DataConfig(unlabelled=[]).unlabelled is None and Config().override(["data.unlabelled=none"]).data.unlabelled is None
    for bad in ([""], 3, ["a", 4]):
        with pytest.raises(ConfigError, match="unlabelled must be a data source or a list of them"):
            DataConfig(unlabelled=bad)
    with pytest.raises(ConfigError, match="entropy_min must be at least 0. Received: entropy_min=-1"):
        TrainConfig(entropy_min=-1.0)
    with pytest.raises(ConfigError, match="set one. Received: unlabelled=2 texts"):
        _fit(["a", "b"])
    with pytest.raises(ConfigError, match="set one. Received: 2 texts without labels"):
        trainer.fit(
            models.build_model(ModelConfig(), 5, 2),
            [np.array([1, 2])] * 4,
            np.array([0, 1] * 2),
            TrainConfig(epochs=1, adversarial=0.0),
            unlabelled_x=[np.array([1])] * 2,
            progress=False,
        )
    # the flag goes with a --set that it needs; refused with --resume as the other data flags
    config = Config.from_toml(write_toml(tmp_path / "c.toml", "[train]\nvat = 1.0\n"))
    assert config.override({"data.unlabelled": ["u.csv"]}).data.unlabelled == ["u.csv"]
    assert main(["train", "--resume", str(tmp_path), "--unlabelled", "imdb:unsup"]) == 2
    assert "drop --unlabelled" in capsys.readouterr().err


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_unlabelled_files_are_saved_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "u.csv").write_text("text\nx\n", encoding="utf-8")
    config = Config().override({"data.unlabelled": ["u.csv", "imdb:unsup", "gone.csv"], "train.vat": 1.0})
    assert portable_config(config).data.unlabelled == [str(tmp_path / "u.csv"), "imdb:unsup", "gone.csv"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_texts_without_labels_train_under_two_processes(tmp_path):
    """Each process draws its own unlabelled rows; only a step's last pass goes through DDP's wrapper."""
    train, test = write_csv(tmp_path / "train.csv", reviews(400, 1)), write_csv(tmp_path / "test.csv", reviews(200, 2))
    unlabelled = write_csv(tmp_path / "u.csv", reviews(300, 3))
    extra = ["--unlabelled", str(unlabelled), "--set", "train.vat=1.0", "--set", "train.entropy_min=0.3", "--set", "train.batch_size=16"]
    done = subprocess.run(
        torchrun(["train", "--train", str(train), "--test", str(test), "-o", str(tmp_path / "run"), *FLAGS, *extra]),
        env=env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, failure(done.stderr)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["distributed"]["world_size"] == 2 and metrics["test_accuracy"] > 0.85
    assert metrics["config"]["train"]["entropy_min"] == 0.3 and metrics["config"]["data"]["unlabelled"] == [str(unlabelled)]
