"""Streaming prediction: ``textrnn predict MODEL --input BIG --output OUT.{jsonl,parquet}``.

Every input format in chunks, the same predictions as the in-memory path, and an interrupted run
(stopped between writing a chunk and committing it, with a half-written tail) continued to the
very bytes of an uninterrupted one without predicting its finished chunks again.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import textrnn.streaming as S
from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.cli import main

N = 230  # rows: chunks of 40 make five full chunks and a short one
CHUNK = ["--chunk-size", "40", "--quiet"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    texts, labels = tiny_sentiment()
    clf = TextClassifier(
        embedding_dim=8,
        hidden_size=8,
        epochs=10,
        batch_size=8,
        learning_rate=0.02,
        schedule="constant",
        min_freq=1,
        early_stopping_patience=None,
    ).fit(texts, labels, progress=False)
    return str(clf.save(tmp_path_factory.mktemp("m") / "model"))


def texts_for_test() -> list[str]:
    words = ["good", "great", "awful", "bad", "film", "music", "plot", "fun", "acting", "truly", "zzunknown"]
    rng = np.random.default_rng(0)
    out = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(N)]
    out[3], out[7] = "", 'a, "quoted" text; with, commas'  # empty, and a CSV-hostile one
    out[11] = "unicode: café ✓ \u2028 inside"  # a line separator splitlines would cut at
    return out


def write_input(path, texts: list[str]):
    kind = S.input_kind(path)
    if kind == "txt":
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    elif kind in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if kind == "tsv" else ",")
            w.writerow(["id", "review"])
            w.writerows(enumerate(texts))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "review": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    else:
        pq.write_table(pa.table({"id": list(range(len(texts))), "review": texts}), path, row_group_size=57)
    return path


def read_output(path) -> list[dict]:
    if str(path).endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = pq.read_table(path).to_pylist()
    return [
        {
            "text": r["text"],
            "label": r["label"],
            "probabilities": {k[len("probability_") :]: v for k, v in r.items() if k.startswith("probability_")},
        }
        for r in rows
    ]


@pytest.mark.parametrize("out_suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("in_suffix", [".txt", ".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_streams_to_the_in_memory_predictions(model, tmp_path, in_suffix, out_suffix):
    texts = texts_for_test()
    source = write_input(tmp_path / f"in{in_suffix}", texts)
    out = tmp_path / f"out{out_suffix}"
    column = [] if in_suffix == ".txt" else ["--text-column", "review"]
    assert main(["predict", model, "--input", str(source), "--output", str(out), *column, *CHUNK]) == 0
    rows = read_output(out)
    assert [r["text"] for r in rows] == texts  # in order; in a .txt the separator inside text 11 stays in it
    clf = TextClassifier.load(model)
    proba = clf.predict_proba(texts)
    assert [r["label"] for r in rows] == [clf.classes_[i] for i in proba.argmax(1)]
    got = np.array([[r["probabilities"][str(c)] for c in clf.classes_] for r in rows])
    np.testing.assert_allclose(got, proba, atol=1e-5)
    assert not S.progress_path(out).exists() and not S.parts_path(out).exists()  # complete: no leftovers
    if out_suffix == ".parquet":
        assert pq.ParquetFile(out).metadata.num_row_groups == 6  # one per chunk


@pytest.mark.parametrize("out_suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("in_suffix", [".csv", ".jsonl", ".parquet"])
def test_an_interrupted_run_continues_to_the_same_output(model, tmp_path, monkeypatch, in_suffix, out_suffix):
    texts = texts_for_test()
    source = write_input(tmp_path / f"in{in_suffix}", texts)
    argv = ["predict", model, "--input", str(source), "--text-column", "review", *CHUNK]
    reference = tmp_path / f"ref{out_suffix}"
    assert main([*argv, "--output", str(reference)]) == 0

    out = tmp_path / f"out{out_suffix}"
    real_commit, commits = S.commit, []

    def killed_on_the_fourth_chunk(path, state):
        if state["chunks_done"] == 3:  # chunk 3 is on disk, not yet committed
            if out_suffix == ".jsonl":
                with open(out, "ab") as f:
                    f.write(b'{"text": "half a li')  # and a kill left half of the next line
            raise KeyboardInterrupt
        commits.append(state["rows_done"])
        real_commit(path, state)

    monkeypatch.setattr(S, "commit", killed_on_the_fourth_chunk)
    assert main([*argv, "--output", str(out)]) == 130
    monkeypatch.setattr(S, "commit", real_commit)
    progress = json.loads(S.progress_path(out).read_text())
    assert progress["rows_done"] == 80 and progress["chunks_done"] == 2

    predicted = []
    real_predict = TextClassifier.predict_proba
    monkeypatch.setattr(
        TextClassifier, "predict_proba", lambda self, t, batch_size=512: predicted.append(len(t)) or real_predict(self, t, batch_size)
    )
    assert main([*argv, "--output", str(out)]) == 0  # the same command continues on its own
    assert sum(predicted) == N - 80  # finished chunks are not predicted again
    if out_suffix == ".jsonl":
        assert out.read_bytes() == reference.read_bytes()
    else:
        assert pq.read_table(out).equals(pq.read_table(reference))
    assert not S.progress_path(out).exists()


def test_resume_and_overwrite_flags_and_their_errors(model, tmp_path, capsys, monkeypatch):
    texts = texts_for_test()
    source = write_input(tmp_path / "in.txt", texts)
    out = tmp_path / "out.jsonl"
    base = ["predict", model, "--input", str(source), "--output", str(out), *CHUNK]

    def fails(argv, needle):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err

    fails([*base, "--resume"], "Nothing to resume")
    assert main(base) == 0
    fails(base, "already exists; pass --overwrite")
    assert main([*base, "--overwrite"]) == 0
    fails(["predict", model, "--input", str(source), "--output", str(tmp_path / "out.csv")], "must end in .jsonl or .parquet")
    fails(["predict", model, "x", "--output", str(out)], "give it with --input")
    fails(["predict", model, "--input", str(source), "--output", str(source)], "must end in")
    fails(["predict", model, "--input", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "o.jsonl")], "not found")
    fails(["predict", model, "x", "--resume"], "only apply with --output")

    # a stopped run, then its input changes: its progress no longer applies
    real_commit = S.commit

    def stopped_at_the_third_chunk(path, state):
        if state["chunks_done"] == 2:
            raise KeyboardInterrupt
        real_commit(path, state)

    monkeypatch.setattr(S, "commit", stopped_at_the_third_chunk)
    out2 = tmp_path / "stopped.jsonl"
    assert main(["predict", model, "--input", str(source), "--output", str(out2), *CHUNK]) == 130
    monkeypatch.setattr(S, "commit", real_commit)
    capsys.readouterr()
    write_input(source, texts + ["one more"])
    fails(["predict", model, "--input", str(source), "--output", str(out2), *CHUNK], "has changed since")
    assert main(["predict", model, "--input", str(source), "--output", str(out2), "--overwrite", *CHUNK]) == 0
    assert len(read_output(out2)) == N + 1


def test_progress_lines_and_quiet(model, tmp_path, capsys, caplog, monkeypatch):
    source = write_input(tmp_path / "in.csv", texts_for_test())
    monkeypatch.setattr(S.Progress, "__init__", _every_chunk(S.Progress.__init__))
    with caplog.at_level("INFO", logger="textrnn"):
        assert (
            main(
                [
                    "predict",
                    model,
                    "--input",
                    str(source),
                    "--text-column",
                    "review",
                    "--output",
                    str(tmp_path / "a.jsonl"),
                    "--chunk-size",
                    "50",
                ]
            )
            == 0
        )
    lines = [r.getMessage() for r in caplog.records]
    assert any(l.startswith("predict: 100 rows done (") and l.endswith(" rows/s)") for l in lines), lines
    assert any(l.startswith(f"predicted {N} rows in ") for l in lines), lines
    assert "\r" not in capsys.readouterr().err  # not a terminal: plain lines, no bar
    caplog.clear()
    assert (
        main(["predict", model, "--input", str(source), "--text-column", "review", "--output", str(tmp_path / "b.jsonl"), "--quiet"]) == 0
    )
    assert not [r for r in caplog.records if r.levelname == "INFO"] and capsys.readouterr().err == ""


def _every_chunk(init):
    def patched(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "every": 0.0})  # a line after every chunk

    return patched


def test_reading_resumes_at_byte_offsets_and_row_numbers(tmp_path):
    texts = texts_for_test()
    for suffix in (".csv", ".jsonl", ".txt", ".parquet"):
        path = write_input(tmp_path / f"in{suffix}", texts)
        column = "text" if suffix == ".txt" else "review"
        chunks = list(S.read_chunks(path, column, 40))
        assert [t for c, _ in chunks for t in c] == texts
        # from any chunk boundary, the rest is read as it was
        for k, (_, position) in enumerate(chunks[:-1]):
            rest = [t for c, _ in S.read_chunks(path, column, 40, position) for t in c]
            assert rest == texts[40 * (k + 1) :], (suffix, k)


def test_bad_inputs_are_one_line_errors(model, tmp_path, capsys):
    cases = {
        "bad.jsonl": b'{"review": "ok"}\nnot json\n',
        "nocol.csv": b"id,body\n1,hello\n",
        "latin.csv": b"review\ncaf\xe9\n",
        "list.jsonl": b"[1, 2]\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        code = main(
            [
                "predict",
                model,
                "--input",
                str(tmp_path / name),
                "--text-column",
                "review",
                "--output",
                str(tmp_path / f"{name}.out.jsonl"),
                "--quiet",
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (name, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)  # nothing to continue: nothing left
