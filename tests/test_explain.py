import json
import logging

import numpy as np
import pytest

from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.cli import main
from textrnn.explain import explain, format_text, highlight, to_html

FAST = dict(
    embedding_dim=16,
    hidden_size=16,
    epochs=20,
    max_length=400,  # the long-text tests below need it: "auto" would fit these short texts
    batch_size=8,
    learning_rate=0.02,
    schedule="constant",
    min_freq=1,
    dropout=0.0,
    embedding_dropout=0.0,
    early_stopping_patience=None,
)


@pytest.fixture(scope="module")
def clf():
    texts, labels = tiny_sentiment()
    return TextClassifier(**FAST).fit(texts, labels, progress=False)


@pytest.fixture(scope="module")
def model_dir(clf, tmp_path_factory):
    return str(clf.save(tmp_path_factory.mktemp("explain") / "model"))


def test_explanation_matches_the_prediction_and_finds_the_word(clf):
    e = explain(clf, "Truly, a GOOD film")
    assert e["tokens"] == clf.tokenizer_("Truly, a GOOD film") == ["truly", ",", "a", "good", "film"]
    assert len(e["scores"]) == len(e["seen"]) == len(e["unknown"]) == 5 and all(e["seen"]) and not e["truncated"]
    proba = clf.predict_proba(["Truly, a GOOD film"])[0]
    assert e["label"] == "pos" == clf.predict(["Truly, a GOOD film"])[0]
    assert e["probability"] == pytest.approx(proba.max(), abs=1e-6)
    assert e["probabilities"] == pytest.approx({"neg": proba[0], "pos": proba[1]}, abs=1e-6)
    assert int(np.argmax(e["scores"])) == 3  # "good" carries the label
    json.dumps(e)  # plain JSON types


def test_score_is_the_probability_drop_when_the_token_is_unknown(clf):
    e = explain(clf, "i loved it, great music")
    k = clf.classes_.index(e["label"])
    for j, tok in enumerate(e["tokens"]):
        occluded = " ".join("qqqzzz" if i == j else t for i, t in enumerate(e["tokens"]))  # an unknown word
        expected = e["probability"] - clf.predict_proba([occluded])[0][k]
        assert e["scores"][j] == pytest.approx(expected, abs=1e-5), tok


def test_unknown_words_score_zero(clf):
    e = explain(clf, "a zzqq film")
    assert e["unknown"] == [False, True, False] and e["scores"][1] == 0.0


def test_all_variants_run_in_one_forward_pass(clf, monkeypatch):
    import textrnn.explain as E

    calls = []
    forward = E.forward  # inference.forward: the kernel or PyTorch's path, whichever applies
    monkeypatch.setattr(E, "forward", lambda model, ids, lengths: calls.append(tuple(ids.shape)) or forward(model, ids, lengths))
    text = " ".join(["good film with great music and bad plot"] * 38)[:]  # 304 tokens
    e = explain(clf, text)
    assert len(e["tokens"]) == 304
    assert calls == [(305, 304)]  # the text and its 304 occluded variants, one batch


def test_tokens_cut_by_truncation_are_marked_not_seen(tmp_path):
    texts, labels = tiny_sentiment()
    small = TextClassifier(**{**FAST, "epochs": 2, "max_length": 4, "truncating": "head_tail", "head_fraction": 0.5}).fit(
        texts, labels, progress=False
    )
    e = explain(small, "one two three four five six")
    assert e["truncated"] and e["seen"] == [True, True, False, False, True, True]
    assert e["scores"][2] == e["scores"][3] == 0.0
    assert "not seen" in format_text(e) and "unseen" in highlight(e)


@pytest.mark.parametrize("text", ["", "   ", "!"])
def test_empty_and_punctuation_only_texts(clf, text):
    e = explain(clf, text)
    assert e["label"] in clf.classes_ and len(e["tokens"]) == len(e["scores"])
    assert e["probability"] == pytest.approx(clf.predict_proba([text])[0].max(), abs=1e-6)


def test_html_page_is_self_contained_and_escaped(clf):
    page = to_html(explain(clf, "a good film & a < b"))
    assert page.startswith("<!doctype html>") and "http" not in page.lower().replace("http-equiv", "")
    assert "&amp;" in page and "&lt;" in page and "< b" not in page
    assert page.count('class="tok') == 7 and "data-score=" in page


def test_cli_explain_text_json_and_html(model_dir, tmp_path, capsys):
    out = tmp_path / "e.html"
    assert main(["explain", model_dir, "a good film", "--html", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "label: pos" in printed and "good" in printed and out.read_text().startswith("<!doctype html>")
    assert main(["explain", model_dir, "a bad film", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "neg"
    assert main(["explain", model_dir, "truly a good film", "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].endswith("good")


def test_cli_predict_over_a_file_with_progress(model_dir, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="textrnn")
    (tmp_path / "in.txt").write_text("a good film\na bad film\n" * 30)
    assert main(["predict", model_dir, "--input", str(tmp_path / "in.txt"), "--batch-size", "8"]) == 0
    labels = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["pos", "neg"] * 30
    assert any("predicted 60 texts" in r.getMessage() for r in caplog.records)
    caplog.clear()
    assert main(["predict", model_dir, "--input", str(tmp_path / "in.txt"), "--batch-size", "8", "--quiet"]) == 0
    assert not any("predicted" in r.getMessage() for r in caplog.records)
