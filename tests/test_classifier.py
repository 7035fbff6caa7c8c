import json

import numpy as np
import pytest
import torch

import textrnn
from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.errors import ArtifactError, ConfigError, DataError, NotFittedError

FAST = dict(
    embedding_dim=16,
    hidden_size=16,
    epochs=25,
    batch_size=8,
    learning_rate=0.02,
    schedule="constant",
    min_freq=1,
    dropout=0.0,
    embedding_dropout=0.0,
    early_stopping_patience=None,
)


@pytest.fixture(scope="module")
def fitted():
    texts, labels = tiny_sentiment()
    return TextClassifier(**FAST).fit(texts, labels, progress=False), texts, labels


def test_overfit_then_reload_predicts_the_same(fitted, tmp_path):
    clf, texts, labels = fitted
    assert clf.history_[-1]["loss"] < 0.05
    m = clf.evaluate(texts, labels)
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0 and m["roc_auc"] == 1.0
    proba = clf.predict_proba(texts)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    clf.save(tmp_path / "model")
    again = textrnn.load(tmp_path / "model")
    assert again.predict(texts) == clf.predict(texts) == labels
    np.testing.assert_allclose(again.predict_proba(texts), proba, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "labels.json", "vocab.txt", "weights.safetensors"]


def test_batched_equals_single(fitted):
    clf, texts, _ = fitted
    batch = clf.predict_proba(texts + ["a much longer text about a good film with great music and fun"])
    singles = np.concatenate([clf.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(batch[: len(texts)], singles, atol=1e-5)


def test_empty_and_whitespace_are_predicted(fitted):
    clf, _, _ = fitted
    proba = clf.predict_proba(["", "   ", "\n"])
    assert proba.shape == (3, 2) and np.allclose(proba[0], proba[1]) and np.isfinite(proba).all()


def test_multiclass_with_int_labels_and_softmax(tmp_path):
    texts = ["red apple", "green leaf", "blue sky", "red fire", "green grass", "blue sea"] * 6
    labels = [0, 1, 2, 0, 1, 2] * 6
    clf = TextClassifier(**FAST).fit(texts, labels, progress=False)
    assert clf.classes_ == [0, 1, 2]
    assert clf.predict(["red", "green", "blue"]) == [0, 1, 2]
    assert clf.model_.head.out_features == 3
    assert clf.evaluate(texts, [str(l) for l in labels])["accuracy"] == 1.0  # "1" from a CSV is label 1
    clf.save(tmp_path / "m")
    assert textrnn.load(tmp_path / "m").classes_ == [0, 1, 2]


def test_validation_split_and_history(fitted):
    texts, labels = tiny_sentiment(20)
    clf = TextClassifier(**{**FAST, "epochs": 3}).fit(texts, labels, validation_split=0.25, progress=False)
    assert len(clf.history_) == 3 and "val_accuracy" in clf.history_[0]


def test_does_not_mutate_inputs():
    texts, labels = tiny_sentiment()
    t0, l0 = list(texts), list(labels)
    TextClassifier(**{**FAST, "epochs": 1}).fit(texts, labels, validation_split=0.2, progress=False)
    assert texts == t0 and labels == l0


def test_seeded_cpu_runs_repeat():
    texts, labels = tiny_sentiment()
    a = TextClassifier(**{**FAST, "epochs": 3}).fit(texts, labels, progress=False)
    b = TextClassifier(**{**FAST, "epochs": 3}).fit(texts, labels, progress=False)
    for (k, va), vb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize(
    "texts,labels,message",
    [
        (["a", "b"], ["x", "x"], "at least two classes"),
        (["a", "b", "c"], ["x", "y"], "same length"),
        ("a text", ["x"], "not a single string"),
        (["a", "b"], ["x", None], "missing"),
    ],
)
def test_fit_validates_input(texts, labels, message):
    with pytest.raises(DataError, match=message):
        TextClassifier(epochs=1).fit(texts, labels, progress=False)


def test_unknown_setting_and_unfitted():
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        TextClassifier(epoch=3)
    with pytest.raises(NotFittedError):
        TextClassifier().predict(["x"])


def test_evaluate_rejects_unseen_labels(fitted):
    clf, _, _ = fitted
    with pytest.raises(DataError, match="not trained on: 'meh'"):
        clf.evaluate(["a film"], ["meh"])


def test_save_refuses_existing_unless_overwrite(fitted, tmp_path):
    clf, _, _ = fitted
    clf.save(tmp_path / "m")
    with pytest.raises(ArtifactError, match="already exists"):
        clf.save(tmp_path / "m")
    clf.save(tmp_path / "m", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def _damage(path, how):
    if how == "missing":
        (path / "vocab.txt").unlink()
    elif how == "truncated":
        data = (path / "weights.safetensors").read_bytes()
        (path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "newer":
        meta = json.loads((path / "config.json").read_text())
        meta["format_version"] = 99
        (path / "config.json").write_text(json.dumps(meta))
    elif how == "foreign":
        (path / "config.json").write_text('{"architectures": ["BertModel"]}')
    elif how == "shape":
        meta = json.loads((path / "config.json").read_text())
        meta["config"]["model"]["hidden_size"] = 7
        (path / "config.json").write_text(json.dumps(meta))
    elif how == "pickle":
        import pickle

        class Boom:
            def __reduce__(self):
                return (open, (str(path / "PWNED"), "w"))

        (path / "weights.safetensors").write_bytes(pickle.dumps({"x": Boom()}))


@pytest.mark.parametrize(
    "how,message",
    [
        ("missing", "missing vocab.txt"),
        ("truncated", "damaged"),
        ("newer", "newer textrnn"),
        ("foreign", "not a textrnn model"),
        ("shape", "do not match"),
        ("pickle", "damaged"),
    ],
)
def test_damaged_or_foreign_model_dirs(fitted, tmp_path, how, message):
    clf, _, _ = fitted
    path = clf.save(tmp_path / "m")
    _damage(path, how)
    with pytest.raises(ArtifactError, match=message):
        textrnn.load(path)
    assert not (path / "PWNED").exists()  # a planted pickle is refused, never run


def test_pretrained_embeddings_are_loaded_and_frozen(tmp_path):
    from textrnn.embeddings import write_vectors

    words = ["good", "bad", "film", "great", "awful"]
    vectors = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    write_vectors(tmp_path / "v.txt", words, vectors, format="glove")
    texts, labels = tiny_sentiment()
    clf = TextClassifier(**{**FAST, "epochs": 2}, pretrained_embeddings=str(tmp_path / "v.txt"), freeze_embeddings=True).fit(
        texts, labels, progress=False
    )
    assert 0 < clf.embedding_coverage_ < 1
    row = clf.model_.embedding.weight[clf.vocab_.index["good"]].detach().numpy()
    np.testing.assert_allclose(row, vectors[0], atol=1e-6)
    with pytest.raises(ConfigError, match="embedding_dim"):
        TextClassifier(**{**FAST, "epochs": 1, "embedding_dim": 8}, pretrained_embeddings=str(tmp_path / "v.txt")).fit(
            texts, labels, progress=False
        )
