"""Several labels per text: read from lists, a separator or 0/1 columns; one sigmoid per label;
thresholds chosen on validation; multi-label metrics; predictions as label sets everywhere."""

import csv
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from textrnn import TextClassifier, load
from textrnn.cli import main
from textrnn.datasets import read_table
from textrnn.errors import DataError
from textrnn.evaluation import best_thresholds, multilabel_metrics
from textrnn.models import loss_fn

WORDS = {"sport": ["goal", "match", "team"], "music": ["song", "band", "guitar"], "food": ["pizza", "cook", "taste"]}
FAST = [
    "--set",
    "model.embedding_dim=16",
    "--set",
    "model.hidden_size=16",
    "--set",
    "train.epochs=15",
    "--set",
    "train.learning_rate=0.01",
    "--quiet",
]


def corpus(n=300, seed=0):
    """Texts whose label set is carried by words of each label, among filler."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        ks = sorted(rng.sample(list(WORDS), rng.choice([1, 1, 2])))
        toks = [rng.choice(WORDS[k]) for k in ks for _ in range(2)] + [rng.choice(["the", "a", "today", "we"]) for _ in range(3)]
        rng.shuffle(toks)
        texts.append(" ".join(toks))
        labels.append(ks)
    return texts, labels


def write_jsonl(path, texts, labels):
    path.write_text("".join(json.dumps({"text": t, "tags": l}) + "\n" for t, l in zip(texts, labels)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clf():
    texts, labels = corpus()
    return TextClassifier(embedding_dim=16, hidden_size=16, epochs=15, learning_rate=0.01, precision="float32").fit(
        texts, labels, validation_split=0.2, progress=False
    )


def test_lists_train_one_sigmoid_per_label_and_predict_label_sets(clf):
    assert clf.multilabel_ and clf.classes_ == ["food", "music", "sport"] and clf.config_.data.task == "multilabel"
    assert len(clf.thresholds_) == 3 and all(0 < t < 1 for t in clf.thresholds_)
    proba = clf.predict_proba(["goal song today", "pizza taste"])
    assert proba.shape == (2, 3) and not np.allclose(proba.sum(1), 1.0)  # a sigmoid each, not a softmax
    assert clf.predict(["goal match song band", "pizza taste cook"]) == [["music", "sport"], ["food"]]
    m = clf.evaluate(*corpus(60, seed=1))
    assert m["multilabel"] and m["f1_micro"] > 0.8 and 0 <= m["hamming_loss"] < 0.2
    assert {"f1_macro", "precision_micro", "recall_macro", "support_food", "roc_auc_food"} <= set(m)


def test_saved_model_keeps_its_labels_and_thresholds(clf, tmp_path):
    clf.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.multilabel_ and again.thresholds_ == clf.thresholds_
    texts = ["goal song", "taste", "we"]
    assert again.predict(texts) == clf.predict(texts)
    assert np.allclose(again.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)


def test_loss_is_binary_cross_entropy_per_label():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert torch.allclose(loss_fn(logits, y), expected)


def test_thresholds_maximise_f1_on_validation_and_default_to_half_for_absent_labels():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    p = np.array([[0.3, 0.9], [0.35, 0.1], [0.2, 0.2], [0.1, 0.6]])
    t = best_thresholds(y, p)
    assert 0.2 < t[0] <= 0.3 and t[1] == 0.5
    m = multilabel_metrics(y, p, ["a", "b"], t)
    assert m["precision_a"] == 1.0 and m["recall_a"] == 1.0 and "roc_auc_b" not in m  # b never occurs


def test_a_separator_and_label_columns_read_as_label_sets(tmp_path):
    sep = tmp_path / "s.csv"
    sep.write_text('text,tags\n"goal song","sport|music"\n"pizza","food"\n"x"," music | sport "\n', encoding="utf-8")
    assert read_table(sep, label_column="tags", label_separator="|").labels == [("music", "sport"), ("food",), ("music", "sport")]
    cols = tmp_path / "c.csv"
    cols.write_text("text,sport,music\ngoal song,1,1\npizza,0,0\nband,0,true\n", encoding="utf-8")
    got = read_table(cols, label_columns=["sport", "music"]).labels
    assert got == [("music", "sport"), (), ("music",)]  # a row of zeros: a text with none of the labels


@pytest.mark.parametrize(
    "content,kwargs,message",
    [
        ('{"text": "a", "tags": ["x"]}\n{"text": "b", "tags": []}\n', {}, r"data row 2 has an empty label set in column 'tags'"),
        (
            '{"text": "a", "tags": ["x"]}\n{"text": "b", "tags": "y"}\n',
            {},
            r"mixes label lists \(data row 1\) and single labels \(data row 2",
        ),
    ],
)
def test_bad_label_lists_are_one_clear_line(tmp_path, content, kwargs, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_table(path, label_column="tags", **kwargs)


def test_a_separator_that_leaves_nothing_and_a_bad_flag_are_one_clear_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,tags\na,x|y\nb,"|"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"data row 2 has an empty label set in column 'tags' \('\|'\)"):
        read_table(path, label_column="tags", label_separator="|")
    path.write_text("text,a,b\nx,1,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"label column 'b' must hold 0 or 1; data row 1 holds 'maybe'"):
        read_table(path, label_columns=["a", "b"])


def test_lists_under_an_explicit_single_label_task_are_refused():
    texts, labels = corpus(20)
    with pytest.raises(DataError, match=r"labels are lists .* data.task='multiclass'"):
        TextClassifier(task="multiclass", epochs=1).fit(texts, labels, progress=False)


def test_cli_trains_predicts_streams_and_evaluates_a_multilabel_jsonl(tmp_path, capsys):
    texts, labels = corpus()
    train = write_jsonl(tmp_path / "train.jsonl", texts, labels)
    test = write_jsonl(tmp_path / "test.jsonl", *corpus(40, seed=2))
    run = tmp_path / "run"
    assert main(["train", "--train", str(train), "--test", str(test), "--label-column", "tags", "--output", str(run), *FAST]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["multilabel"] and metrics["test_accuracy"] == metrics["test"]["accuracy"]
    capsys.readouterr()
    assert main(["predict", str(run / "model"), "goal band", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["labels"] == ["music", "sport"] and set(row["probabilities"]) == {"food", "music", "sport"}
    inputs = tmp_path / "in.csv"
    with open(inputs, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text"], ["pizza cook"], ["song"]])
    for out in (tmp_path / "out.jsonl", tmp_path / "out.parquet"):
        assert main(["predict", str(run / "model"), "--input", str(inputs), "--output", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["labels"] for r in rows] == [["food"], ["music"]]
    assert pq.read_table(tmp_path / "out.parquet").column("labels").to_pylist() == [["food"], ["music"]]
    assert main(["evaluate", str(run / "model"), "--data", str(test), "--label-column", "tags", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["multilabel"]
    assert main(["report", str(run), "--output", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "hamming_loss" in page and "roc_auc" in page and "Misclassified test texts" in page


def test_server_answers_label_sets(clf, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from textrnn.serving import create_app

    clf.save(tmp_path / "m")
    with TestClient(create_app(str(tmp_path / "m"))) as client:
        one = client.post("/predict", json={"text": "goal song"}).json()
        assert one["labels"] == ["music", "sport"] and "label" not in one
        many = client.post("/predict", json={"texts": ["pizza", "band"]}).json()
        assert many["labels"] == [["food"], ["music"]]
        explained = client.post("/explain", json={"text": "goal song"}).json()
        assert explained["labels"] == ["music", "sport"]


def test_onnx_export_predicts_the_same_label_sets(clf, tmp_path):
    pytest.importorskip("onnxruntime")
    from textrnn.export import OnnxClassifier, export_onnx

    clf.save(tmp_path / "m")
    export_onnx(tmp_path / "m", tmp_path / "m" / "model.onnx")
    onnx = OnnxClassifier(tmp_path / "m")
    texts = ["goal song", "pizza", "we"]
    assert onnx.predict(texts) == clf.predict(texts)
    assert np.allclose(onnx.predict_proba(texts), clf.predict_proba(texts), atol=1e-4)
