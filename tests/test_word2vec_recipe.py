import json

import pytest

pytest.importorskip("gensim")

from conftest import tiny_sentiment
from test_cli import TINY, write_csv
from textrnn.cli import main


def test_word2vec_pretraining_on_unlabelled_texts_feeds_the_embedding(tmp_path, caplog):
    texts, labels = tiny_sentiment(20)
    write_csv(tmp_path / "train.csv", texts, labels, "text", "label")
    (tmp_path / "unsup.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts * 3))
    argv = [
        "train",
        "--train",
        str(tmp_path / "train.csv"),
        *TINY,
        "--set",
        f"pretrain.word2vec_data='{tmp_path / 'unsup.jsonl'}'",
        "--set",
        "pretrain.word2vec_epochs=2",
    ]
    assert main([*argv, "--output", str(tmp_path / "a")]) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["embedding_coverage"] > 0.5
    assert metrics["config"]["model"]["pretrained_embeddings"].endswith(".txt")
    caplog.clear()
    caplog.set_level("INFO", logger="textrnn")
    assert main([*argv, "--output", str(tmp_path / "b")]) == 0  # the second run reuses the cached vectors
    assert any("reusing" in r.getMessage() for r in caplog.records)


def test_word2vec_command_writes_vectors_a_model_can_use(tmp_path, capsys):
    from textrnn.embeddings import read_vectors

    texts, _ = tiny_sentiment(20)
    (tmp_path / "u.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert main(["word2vec", "--data", str(tmp_path / "u.jsonl"), "--output", str(tmp_path / "v.txt"), "--dim", "8", "--epochs", "2"]) == 0
    words, vectors = read_vectors(tmp_path / "v.txt")
    assert "good" in words and vectors.shape[1] == 8
    assert "model.pretrained_embeddings=" in capsys.readouterr().out
