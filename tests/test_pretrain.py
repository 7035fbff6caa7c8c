"""Language-model pretraining of the encoder (pretrain.py), its transfer into the classifier, the
cache, the CLI command and the recipe path through train_run. Tiny data, one thread: seconds."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_sentiment
from test_cli import write_csv
from textrnn.cli import main
from textrnn.config import Config
from textrnn.errors import ConfigError
from textrnn.pretrain import LanguageModel, chunks, load_encoder, pretrain_texts, pretrained_encoder, readings

WORDS = "the a film movie good bad great awful plot acting music was is and it loved hated cast story end".split()
SMALL = {
    "model.embedding_dim": 12,
    "model.hidden_size": 12,
    "pretrain.bptt": 8,
    "pretrain.batch_size": 8,
    "pretrain.learning_rate": 0.02,
    "text.min_freq": 1,
    "runtime.num_threads": 1,
    "runtime.device": "cpu",
}
FLAGS = [x for k, v in SMALL.items() for x in ("--set", f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}")]


def cycle_texts(n: int = 200, seed: int = 0) -> list[str]:
    """Unlabelled texts with a learnable pattern: each word is followed by the next word of WORDS."""
    rng = np.random.default_rng(seed)
    return [" ".join(WORDS[(start + k) % len(WORDS)] for k in range(int(rng.integers(4, 12)))) for start in rng.integers(0, len(WORDS), n)]


def unlabelled(tmp_path, texts) -> str:
    path = tmp_path / "unsup.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A bidirectional LSTM encoder pretrained on cycle texts plus the sentiment texts."""
    out = tmp_path_factory.mktemp("enc") / "encoder"
    config = Config().override({**SMALL, "pretrain.epochs": 3})
    return pretrain_texts(cycle_texts() + tiny_sentiment(20)[0], config, out, progress=False), config


def test_language_model_loss_and_perplexity_fall(encoder):
    path, _ = encoder
    history = load_encoder(path).meta["history"]
    assert len(history) == 3
    assert history[-1]["loss"] < history[0]["loss"] - 0.5
    assert history[-1]["val_perplexity"] < history[0]["val_perplexity"]
    assert all(np.isfinite(r["val_perplexity"]) for r in history)


@pytest.mark.parametrize("model", [{"model.cell": "lstm"}, {"model.cell": "gru"}, {"model.bidirectional": False, "model.num_layers": 2}])
def test_the_transfer_is_exact(model, tmp_path, monkeypatch):
    """After initialisation the classifier's embedding and rnn are the encoder's, tensor for
    tensor, its vocabulary is the encoder's, and it computes the LM's very states."""
    import textrnn.classifier as C
    from textrnn.classifier import TextClassifier

    config = Config().override({**SMALL, **model, "pretrain.epochs": 1})
    path = pretrain_texts(cycle_texts(60) + tiny_sentiment(4)[0], config, tmp_path / "enc", progress=False)
    enc = load_encoder(path)
    monkeypatch.setattr(C, "fit_model", lambda *a, **k: [])  # initialise only
    texts, labels = tiny_sentiment(6)
    clf = TextClassifier(config.override({"pretrain.encoder": str(path)})).fit(texts, labels)
    assert clf.vocab_.tokens == enc.vocab.tokens
    state = clf.model_.state_dict()
    assert set(enc.state) == {k for k in state if k.split(".")[0] in ("embedding", "rnn")}
    for k, v in enc.state.items():
        assert torch.equal(state[k], v), k

    lm = LanguageModel(config.model, len(enc.vocab)).eval()
    lm.load_state_dict(enc.state, strict=False)
    ids = torch.tensor([enc.vocab.encode("the film was good and the plot was great".split())])  # (1, T)
    out, _ = clf.model_.encode(ids, torch.tensor([ids.size(1)]))  # (1, T, dirs*H)
    H = config.model.hidden_size
    x = lm.embedding(ids)
    torch.testing.assert_close(out[..., :H], lm.run(0, x)[0], rtol=0, atol=1e-6)
    if config.model.bidirectional:  # the _reverse weights are the backward LM, reading the text reversed
        torch.testing.assert_close(out[..., H:], lm.run(1, x.flip(1))[0].flip(1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell,bidirectional", [("lstm", True), ("gru", False)])
def test_no_direction_sees_the_token_it_predicts(cell, bidirectional):
    torch.manual_seed(0)
    config = Config().override({**SMALL, "model.cell": cell, "model.bidirectional": bidirectional}).model
    lm = LanguageModel(config, 30).eval()
    ids = torch.randint(2, 30, (2, 12))  # (B, T)
    t = 6
    later, earlier = ids.clone(), ids.clone()
    later[:, t + 1 :] = torch.randint(2, 30, (2, 12 - t - 1))  # what the forward LM predicts from t
    earlier[:, :t] = torch.randint(2, 30, (2, t))  # what the backward LM predicts from t
    base = lm.log_probs(ids)
    assert torch.equal(lm.log_probs(later)[0][:, : t + 1], base[0][:, : t + 1])
    assert not torch.equal(lm.log_probs(earlier)[0][:, t], base[0][:, t])  # it does read the past
    if bidirectional:
        assert torch.equal(lm.log_probs(earlier)[1][:, t:], base[1][:, t:])
        assert not torch.equal(lm.log_probs(later)[1][:, t], base[1][:, t])


def test_the_backward_reading_targets_the_previous_token():
    data = torch.arange(40, dtype=torch.int32).view(2, 20)  # two streams of increasing ids
    forward, backward = readings(data, 2)
    for x, y in chunks(forward, 7):
        assert torch.equal(y, x + 1)  # the next token
    for x, y in chunks(backward, 7):
        assert torch.equal(y, x - 1)  # the previous token in text order


def test_bidirectional_with_two_layers_is_refused(tmp_path, capsys):
    message = "bidirectional model needs num_layers=1"
    with pytest.raises(ConfigError, match=message):
        Config().override({"pretrain.data": "imdb:unsup", "model.num_layers": 2})
    with pytest.raises(ConfigError, match=message):
        LanguageModel(Config().override({"model.num_layers": 2}).model, 10)
    with pytest.raises(ConfigError, match="needs model.arch='rnn', a single model.cell"):
        Config().override({"pretrain.data": "imdb:unsup", "model.arch": "mlp"})
    with pytest.raises(ConfigError, match="both initialise the embedding"):
        Config().override({"pretrain.data": "imdb:unsup", "pretrain.word2vec_data": "imdb:unsup"})
    data = unlabelled(tmp_path, cycle_texts(20))
    assert main(["pretrain", data, "--output", str(tmp_path / "e"), "--set", "model.num_layers=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not (tmp_path / "e").exists()


def test_an_encoder_of_another_shape_is_a_clear_error(encoder):
    from textrnn.classifier import TextClassifier

    path, config = encoder
    texts, labels = tiny_sentiment(4)
    clf = TextClassifier(config.override({"pretrain.encoder": str(path), "model.hidden_size": 8}))
    with pytest.raises(ConfigError, match=r"its rnn.weight_ih_l0 has shape \(48, 12\), the model's \(32, 12\).*hidden_size=12"):
        clf.fit(texts, labels)
    clf = TextClassifier(config.override({"pretrain.encoder": str(path), "text.lower": False}))
    with pytest.raises(ConfigError, match="was trained with text.lower=True"):
        clf.fit(texts, labels)
    clf = TextClassifier(config.override({"pretrain.encoder": str(path), "model.arch": "mlp"}))
    with pytest.raises(ConfigError, match="initialises one recurrent model"):
        clf.fit(texts, labels)


def test_missing_damaged_or_foreign_encoder_folders(encoder, tmp_path):
    import shutil

    from textrnn.errors import ArtifactError, DataError

    with pytest.raises(ArtifactError, match="Pretrained encoder folder not found"):
        load_encoder(tmp_path / "nope")
    bad = shutil.copytree(encoder[0], tmp_path / "bad")
    (bad / "vocab.txt").unlink()
    with pytest.raises(ArtifactError, match="not a complete textrnn encoder: missing vocab.txt"):
        load_encoder(bad)
    foreign = shutil.copytree(encoder[0], tmp_path / "foreign")
    (foreign / "config.json").write_text(json.dumps({"format": "textrnn-model"}))
    with pytest.raises(ArtifactError, match="is not a textrnn encoder"):
        load_encoder(foreign)
    (foreign / "config.json").write_text(json.dumps({"format": "textrnn-encoder", "format_version": 99}))
    with pytest.raises(ArtifactError, match="newer textrnn"):
        load_encoder(foreign)
    with pytest.raises(DataError, match="Too few tokens to pretrain"):
        pretrain_texts([""], encoder[1], tmp_path / "empty", progress=False)
    assert not (tmp_path / "empty").exists()


def test_the_cache_is_reused(tmp_path, caplog, monkeypatch):
    import textrnn.pretrain as P

    config = Config().override({**SMALL, "pretrain.data": unlabelled(tmp_path, cycle_texts(40))})
    texts = tiny_sentiment(4)[0]
    first = pretrained_encoder(config, texts, progress=False)
    monkeypatch.setattr(P, "fit_language_model", lambda *a, **k: pytest.fail("retrained"))
    caplog.set_level("INFO", logger="textrnn")
    assert pretrained_encoder(config, texts, progress=False) == first
    assert any("reusing" in r.getMessage() for r in caplog.records)
    assert not list(first.parent.glob(".*tmp*"))  # nothing half-written beside it


def test_cli_pretrain_then_train_save_load_predict(tmp_path, capsys):
    from textrnn.classifier import TextClassifier

    texts, labels = tiny_sentiment(20)
    data = unlabelled(tmp_path, cycle_texts(100) + texts)
    enc = tmp_path / "encoder"
    assert main(["pretrain", data, "--output", str(enc), *FLAGS, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"pretrain.encoder={enc}" in out and (enc / "weights.safetensors").is_file()
    assert main(["pretrain", data, "--output", str(enc), *FLAGS, "--quiet"]) == 2  # never over an encoder unasked
    assert "already exists" in capsys.readouterr().err

    train = write_csv(tmp_path / "train.csv", texts, labels, "text", "label")
    assert (
        main(
            [
                "train",
                "--train",
                str(train),
                "--output",
                str(tmp_path / "run"),
                *FLAGS,
                "--quiet",
                "--set",
                f"pretrain.encoder={enc}",
                "--set",
                "train.epochs=12",
                "--set",
                "train.batch_size=8",
                "--set",
                "train.encoder_lr_multiplier=0.5",
                "--set",
                "train.freeze_encoder_epochs=1",
                "--set",
                "train.learning_rate=0.02",
                "--set",
                "train.early_stopping_patience=0",
                "--set",
                "data.validation_split=0.2",
            ]
        )
        == 0
    )
    clf = TextClassifier.load(tmp_path / "run" / "model")
    before = clf.predict_proba(["a good film", "truly awful acting"])
    assert clf.predict(["a good film", "truly awful acting"]) == ["pos", "neg"]
    import shutil

    shutil.rmtree(enc)  # the model holds its own vocabulary and weights: the encoder is not needed any more
    np.testing.assert_array_equal(
        TextClassifier.load(tmp_path / "run" / "model").predict_proba(["a good film", "truly awful acting"]), before
    )


def test_pretrain_data_in_a_config_runs_end_to_end(tmp_path):
    from textrnn.pipeline import train_run

    texts, labels = tiny_sentiment(20)
    train = write_csv(tmp_path / "train.csv", texts, labels, "text", "label")
    config = Config().override(
        {
            **SMALL,
            "data.train": str(train),
            "data.test": None,
            "data.validation_split": 0.2,
            "pretrain.data": unlabelled(tmp_path, cycle_texts(100) + texts),
            "train.epochs": 10,
            "train.batch_size": 8,
            "train.learning_rate": 0.02,
            "train.early_stopping_patience": 0,
        }
    )
    report = train_run(config, tmp_path / "run", progress=False)
    assert report["config"]["pretrain"]["encoder"]
    assert 0 < report["timings"]["pretrain_seconds"] <= report["timings"]["data_seconds"]
    assert report["validation"]["accuracy"] >= 0.75
    saved = Config.from_toml(tmp_path / "run" / "config.toml")  # a rerun reuses the encoder, not retrains it
    assert saved.pretrain.encoder == report["config"]["pretrain"]["encoder"]


def test_discriminative_rates_and_a_frozen_first_epoch():
    from textrnn.models import RNNClassifier
    from textrnn.optim import make_optimizer
    from textrnn.trainer import fit

    config = Config().override(
        {
            **SMALL,
            "train.encoder_lr_multiplier": 0.1,
            "train.freeze_encoder_epochs": 1,
            "train.epochs": 1,
            "train.schedule": "constant",
            "train.learning_rate": 0.01,
        }
    )
    model = RNNClassifier(config.model, 20, 2)
    assert [g["lr"] for g in make_optimizer(model, config.train).param_groups] == pytest.approx([0.001, 0.01])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = [np.array([2, 3, 4], dtype=np.int32), np.array([5, 6, 7], dtype=np.int32)] * 8
    fit(model, x, np.array([0, 1] * 8), config.train, progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.split(".")[0] in ("embedding", "rnn"))
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again for whatever comes next
