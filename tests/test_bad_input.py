"""The bad-input catalogue (docs/errors.md), through the CLI: every case ends in exit code 2 and
one line on stderr that names the problem and what was received, with no traceback, and the
command leaves the file system exactly as it found it (nothing half-written)."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import textrnn
from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.cli import main

TINY = [
    "--set",
    "model.embedding_dim=8",
    "--set",
    "model.hidden_size=8",
    "--set",
    "model.bidirectional=false",
    "--set",
    "train.epochs=1",
    "--set",
    "train.batch_size=8",
    "--set",
    "text.min_freq=1",
    "--set",
    "data.validation_split=0",
    "--quiet",
]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def good_csv(path: Path, n_each: int = 6, text_col: str = "text", label_col: str = "label") -> Path:
    texts, labels = tiny_sentiment(n_each)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([text_col, label_col])
        w.writerows(zip(texts, labels))
    return path


def train(t: Path, data, *extra) -> list:
    return ["train", "--train", data, "-o", t / "out", *TINY, *extra]


def toml(t: Path, text: str | bytes) -> Path:
    return write(t / "c.toml", text)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    texts, labels = tiny_sentiment(6)
    clf = TextClassifier(embedding_dim=8, hidden_size=8, epochs=2, batch_size=8, min_freq=1).fit(texts, labels, progress=False)
    return clf.save(tmp_path_factory.mktemp("trained") / "model")


# ----------------------------------------------------------------------------- model damage


def _edit_json(name: str, change):
    def damage(m: Path) -> None:
        meta = json.loads((m / name).read_text())
        meta = change(meta) or meta
        (m / name).write_text(json.dumps(meta))

    return damage


def _truncate(m: Path) -> None:
    data = (m / "weights.safetensors").read_bytes()
    (m / "weights.safetensors").write_bytes(data[: len(data) // 2])


DAMAGE = {
    "missing-file": lambda m: (m / "vocab.txt").unlink(),
    "truncated-weights": _truncate,
    "wrong-shape": _edit_json("config.json", lambda d: d["config"]["model"].update(hidden_size=7)),
    "newer-format": _edit_json("config.json", lambda d: d.update(format_version=99)),
    "foreign-config": lambda m: (m / "config.json").write_text('{"architectures": ["BertModel"]}'),
    "config-not-json": lambda m: (m / "config.json").write_text("{'format': 'textrnn-model',"),
    "unknown-setting": _edit_json("config.json", lambda d: d["config"]["model"].update(attention=True)),
    "vocab-not-utf8": lambda m: (m / "vocab.txt").write_bytes(b"<pad>\n<unk>\n\xff\xfe\n"),
    "vocab-no-specials": lambda m: (m / "vocab.txt").write_text("good\nbad\n"),
    "labels-duplicate": lambda m: (m / "labels.json").write_text('["pos", "pos"]'),
    "labels-not-a-list": lambda m: (m / "labels.json").write_text('{"0": "neg"}'),
}


# ------------------------------------------------------------------------------ the cases
# id -> (build(tmp, model_dir) -> argv, pattern the one stderr line must match)

CASES = {
    # data files
    "empty-file": (lambda t, m: train(t, write(t / "d.csv", b"")), r"Data file 'd.csv' is empty"),
    "whitespace-only-file": (lambda t, m: train(t, write(t / "d.csv", " \n\n")), r"'d.csv' is empty"),
    "header-only": (lambda t, m: train(t, write(t / "d.tsv", "text\tlabel\n")), r"header but no data rows"),
    "misspelled-text-column": (
        lambda t, m: train(t, good_csv(t / "d.csv", text_col="review"), "--text-column", "reveiw"),
        r"no text column 'reveiw'; columns found: \['review', 'label'\]\. Did you mean 'review'\?",
    ),
    "misspelled-label-column": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--label-column", "lable"),
        r"no label column 'lable'.*Did you mean 'label'\?",
    ),
    "missing-labels-csv": (
        lambda t, m: train(t, write(t / "d.csv", "text,label\na,pos\nb,\nc,neg\nd,NaN\n")),
        r"2 of 4 rows have no label in column 'label' \(data rows 2, 4;",
    ),
    "nan-labels-jsonl": (
        lambda t, m: train(t, write(t / "d.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": NaN}\n{"text": "c"}\n')),
        r"2 of 3 rows have no label.*rows 2, 3",
    ),
    "multilabel-empty-set": (
        lambda t, m: train(t, write(t / "d.jsonl", '{"text": "a", "label": ["x"]}\n{"text": "b", "label": []}\n')),
        r"d.jsonl: data row 2 has an empty label set in column 'label' \(\[\]\); give every text at least one label",
    ),
    "multilabel-list-and-scalar": (
        lambda t, m: train(t, write(t / "d.jsonl", '{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": "x"}\n')),
        r"d.jsonl: column 'label' mixes label lists \(data row 1\) and single labels \(data row 2: 'x'\)",
    ),
    "label-separator-leaves-nothing": (
        lambda t, m: train(t, write(t / "d.csv", 'text,label\na,x|y\nb,"|"\n'), "--label-separator", "|"),
        r"d.csv: data row 2 has an empty label set in column 'label' \('\|'\)",
    ),
    "label-columns-not-0-or-1": (
        lambda t, m: train(t, write(t / "d.csv", "text,x,y\na,1,0\nb,0,maybe\n"), "--label-columns", "x,y"),
        r"d.csv: label column 'y' must hold 0 or 1; data row 2 holds 'maybe'",
    ),
    "single-class": (
        lambda t, m: train(t, write(t / "d.csv", "text,label\na,pos\nb,pos\nc,pos\n")),
        r"at least two classes. Received only: \['pos'\]",
    ),
    "too-few-rows": (
        lambda t, m: train(t, write(t / "d.csv", "text,label\na,pos\n"), "--set", "data.validation_split=0.1"),
        r"Too few rows to split off a validation set: 1 rows",
    ),
    "not-utf8": (
        lambda t, m: train(t, write(t / "d.csv", b"text,label\ngood,pos\n\xe9t\xe9 bad,neg\n")),
        r"d.csv: line 3 is not valid utf-8 \(byte 0xe9\); .*--encoding latin-1",
    ),
    "unknown-encoding": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--encoding", "utf-9"),
        r"Unknown text encoding. Received: encoding='utf-9'",
    ),
    "unknown-file-type": (lambda t, m: train(t, write(t / "d.json", "[]")), r"Unknown data file type '.json'.*Did you mean '.jsonl'\?"),
    "data-not-found": (lambda t, m: train(t, t / "nope.csv"), r"Data file not found: '.*nope.csv' does not exist"),
    "jsonl-invalid-line": (
        lambda t, m: train(t, write(t / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n')),
        r"d.jsonl: line 2 is not valid JSON",
    ),
    "jsonl-not-an-object": (lambda t, m: train(t, write(t / "d.jsonl", '["a", 1]\n')), r"line 1 is not a JSON object"),
    "jsonl-huge-number": (
        lambda t, m: train(t, write(t / "d.jsonl", '{"text": "a", "label": ' + "9" * 5000 + "}\n")),
        r"d.jsonl: line 1 is not valid JSON",
    ),
    "not-parquet": (lambda t, m: train(t, write(t / "d.parquet", "text,label\na,1\n")), r"Cannot read 'd.parquet' as Parquet"),
    "folder-without-classes": (
        lambda t, m: train(t, (t / "data" / "empty").mkdir(parents=True) or t / "data"),
        r"No .txt files in the class sub-folders",
    ),
    "test-labels-unseen": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--test", write(t / "test.csv", "text,label\na,pos\nb,meh\n")),
        r"test.csv: Labels the model was not trained on: 'meh'",
    ),
    # evaluation
    "evaluate-unseen-labels": (
        lambda t, m: ["evaluate", m, "--data", write(t / "e.csv", "text,label\ngood,pos\nok,meh\n")],
        r"Labels the model was not trained on: 'meh'. The model knows: 'neg', 'pos'",
    ),
    "evaluate-no-label-column": (
        lambda t, m: ["evaluate", m, "--data", write(t / "e.csv", "text,y\ngood,pos\n")],
        r"no label column 'label'; columns found: \['text', 'y'\]",
    ),
    # configs
    "config-unknown-key": (
        lambda t, m: ["train", "--config", toml(t, "[train]\nepoks = 3\n"), "-o", t / "out"],
        r"unknown setting train.epoks. Did you mean 'epochs'\?",
    ),
    "config-unknown-section": (
        lambda t, m: ["train", "--config", toml(t, "[trian]\nepochs = 3\n"), "-o", t / "out"],
        r"unknown section 'trian'.*Did you mean 'train'\?",
    ),
    "config-toml-syntax": (
        lambda t, m: ["train", "--config", toml(t, "[train]\nepochs = \n"), "-o", t / "out"],
        r"c.toml: not valid TOML \(Invalid value \(at line 2",
    ),
    "config-not-utf8": (lambda t, m: ["train", "--config", toml(t, b"[train]\n# \xff\n"), "-o", t / "out"], r"c.toml: not valid TOML"),
    "config-wrong-type": (
        lambda t, m: ["train", "--config", toml(t, '[train]\nbatch_size = "3"\n'), "-o", t / "out"],
        r"c.toml: train.batch_size must be an integer. Received: train.batch_size='3'",
    ),
    "config-epochs-a-word": (
        lambda t, m: ["train", "--config", toml(t, '[train]\nepochs = "many"\n'), "-o", t / "out"],
        r"c.toml: train.epochs must be an integer or 'auto'. Received: train.epochs='many'",
    ),
    "config-not-found": (lambda t, m: ["train", "--config", t / "none.toml", "-o", t / "out"], r"Config file not found: '.*none.toml'"),
    "set-negative-size": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "model.hidden_size=-4"),
        r"hidden_size must be greater than 0. Received: hidden_size=-4",
    ),
    "set-dropout-1.5": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "model.dropout=1.5"),
        r"dropout must be in \[0, 1\). Received: dropout=1.5",
    ),
    "set-zero-epochs": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "train.epochs=0"),
        r"epochs must be greater than 0. Received: epochs=0",
    ),
    "set-not-a-number": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "train.learning_rate=fast"),
        r"train.learning_rate must be a number or 'auto'. Received: train.learning_rate='fast'",
    ),
    "set-bad-choice": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "model.cell=lstmx"),
        r"Expected one of \{'gru', 'lstm', 'rnn'\}, or several '\+'-joined for an ensemble \(e.g. 'lstm\+gru'\). "
        r"Received: cell='lstmx'. Did you mean 'lstm'\?",
    ),
    "set-unknown-key": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "model.cel=gru"),
        r"unknown setting model.cel. Did you mean 'cell'\?",
    ),
    "set-unknown-section": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "modle.cell=gru"),
        r"Received: 'modle.cell'. Did you mean 'model'\?",
    ),
    "set-without-equals": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "train.epochs"),
        r"Overrides look like section.key=value. Received: 'train.epochs'",
    ),
    "set-checkpoint-every-zero": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--set", "runtime.checkpoint_every=0"),
        r"checkpoint_every must be greater than 0. Received: checkpoint_every=0",
    ),
    "limit-zero": (lambda t, m: train(t, good_csv(t / "d.csv"), "--limit", "0"), r"limit must be greater than 0. Received: limit=0"),
    "unlabelled-without-vat": (
        lambda t, m: train(t, good_csv(t / "d.csv"), "--unlabelled", "imdb:unsup"),
        r"data.unlabelled feeds train.vat and train.entropy_min; set one. Received: data.unlabelled=\['imdb:unsup'\] with "
        r"train.vat=0.0 and train.entropy_min=0.0",
    ),
    # command-line arguments
    "unknown-command": (lambda t, m: ["trian"], r"invalid choice: 'trian'"),
    "unknown-flag": (lambda t, m: ["train", "--epochs", "3"], r"unrecognized arguments: --epochs 3"),
    "train-without-output": (lambda t, m: ["train", "--train", good_csv(t / "d.csv")], r"train needs --output DIR"),
    "output-holds-a-model": (
        lambda t, m: train(t, good_csv(t / "d.csv")) if shutil.copytree(m, t / "out" / "model") else 0,
        r"'.*out/model' already holds a model; pass --overwrite",
    ),
    "output-is-a-file": (
        lambda t, m: ["train", "--train", good_csv(t / "d.csv"), "-o", write(t / "out", "x"), *TINY],
        r"--output must be a directory. Received: '.*out' \(a file\)",
    ),
    "output-holds-unfinished-run": (
        lambda t, m: train(t, good_csv(t / "d.csv")) if write(t / "out/checkpoint/state.json", "{}") else 0,
        r"holds the checkpoint of an unfinished run; continue it with 'textrnn train --resume",
    ),
    "compare-output-holds-a-model": (
        lambda t, m: (
            ["compare", "--train", good_csv(t / "d.csv"), "-o", t / "cmp", *TINY] if shutil.copytree(m, t / "cmp" / "mlp" / "model") else 0
        ),
        r"'.*cmp/mlp/model' already holds a model",
    ),
    "resume-missing-dir": (lambda t, m: ["train", "--resume", t / "nowhere"], r"Run directory not found: '.*nowhere'"),
    "resume-without-checkpoint": (
        lambda t, m: ["train", "--resume", (t / "run").mkdir() or t / "run"],
        r"No checkpoint to resume in '.*run': '.*state.json' does not exist",
    ),
    "resume-with-settings": (
        lambda t, m: ["train", "--resume", t, "--set", "train.epochs=5"],
        r"--resume continues a run with the config saved in it; drop --set",
    ),
    "predict-batch-size-zero": (
        lambda t, m: ["predict", m, "x", "--batch-size", "0"],
        r"argument --batch-size: must be a positive integer. Received: '0'",
    ),
    "inspect-negative-length": (
        lambda t, m: ["inspect", "x", "--max-length", "-3"],
        r"argument --max-length: must be a positive integer. Received: '-3'",
    ),
    "predict-texts-and-input": (
        lambda t, m: ["predict", m, "x", "--input", write(t / "in.txt", "y\n")],
        r"Give texts as arguments or with --input, not both",
    ),
    "predict-input-missing": (lambda t, m: ["predict", m, "--input", t / "in.txt"], r"Input file not found: '.*in.txt'"),
    "predict-input-wrong-column": (
        lambda t, m: ["predict", m, "--input", good_csv(t / "in.csv"), "--text-column", "txt"],
        r"no text column 'txt'.*Did you mean 'text'\?",
    ),
    # model folders
    "model-not-found": (lambda t, m: ["predict", t / "no-model", "x"], r"Model directory not found: '.*no-model'"),
    "model-is-a-file": (lambda t, m: ["predict", write(t / "m.bin", b"\0"), "x"], r"Model directory not found: '.*m.bin'"),
    "model-missing-file": ("missing-file", r"is not a complete textrnn model: missing vocab.txt"),
    "model-truncated-weights": ("truncated-weights", r"weights.safetensors' is damaged or not a safetensors file"),
    "model-wrong-shape": ("wrong-shape", r"weights do not match the config: rnn.weight_ih_l0 has shape \(32, 8\), expected \(28, 8\)"),
    "model-newer-format": ("newer-format", r"was written by a newer textrnn \(format_version=99"),
    "model-foreign-config": ("foreign-config", r"is not a textrnn model \(config.json has format=None\)"),
    "model-config-not-json": ("config-not-json", r"config.json or labels.json is not valid JSON"),
    "model-unknown-setting": ("unknown-setting", r"config.json: unknown setting model.attention"),
    "model-vocab-not-utf8": ("vocab-not-utf8", r"vocab.txt' is damaged: not UTF-8"),
    "model-vocab-no-specials": ("vocab-no-specials", r"vocab.txt' is damaged: A vocabulary must start with '<pad>' and '<unk>'"),
    "model-labels-duplicate": ("labels-duplicate", r"labels.json must list at least two distinct labels.*Received: \['pos', 'pos'\]"),
    "model-labels-not-a-list": ("labels-not-a-list", r"labels.json must list at least two distinct labels"),
}


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def run_cli(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, pattern: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_cli_rejects(case, tmp_path, trained, capsys):
    build, pattern = CASES[case]
    model = shutil.copytree(trained, tmp_path / "model")
    if isinstance(build, str):
        DAMAGE[build](model)
        argv = ["predict", model, "a good film"]
    else:
        argv = build(tmp_path, model)
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, argv)
    line = assert_one_line(code, err, pattern)
    assert line.startswith("textrnn"), line
    assert snapshot(tmp_path) == before  # nothing written, nothing half-written, nothing changed


def test_catalogue_lists_every_case():
    """docs/errors.md keeps a row for each case here."""
    doc = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [case for case in CASES if f"`{case}`" not in doc]
    assert not missing, missing


def test_existing_model_is_refused_before_any_work(tmp_path, trained, capsys, monkeypatch):
    import textrnn.classifier
    import textrnn.pipeline

    def never(*args, **kwargs):
        raise AssertionError("data was loaded or training started")

    monkeypatch.setattr(textrnn.pipeline, "prepare_data", never)
    monkeypatch.setattr(textrnn.classifier, "fit_model", never)
    shutil.copytree(trained, tmp_path / "out" / "model")
    code, err = run_cli(capsys, train(tmp_path, tmp_path / "does-not-matter.csv"))
    assert_one_line(code, err, r"already holds a model")


def test_full_disk_while_saving_keeps_the_old_model(tmp_path, trained, capsys, monkeypatch):
    import textrnn.io

    shutil.copytree(trained, tmp_path / "out" / "model")
    before = snapshot(tmp_path / "out" / "model")
    real = textrnn.io.save_file

    def full_disk(tensors, filename, metadata=None):
        if str(filename).endswith("weights.safetensors"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(textrnn.io, "save_file", full_disk)
    code, err = run_cli(capsys, train(tmp_path, good_csv(tmp_path / "d.csv"), "--overwrite"))
    assert_one_line(code, err, r"No space left on device: '.*weights.safetensors'")
    assert snapshot(tmp_path / "out" / "model") == before
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary folders


# ------------------------------------------------------------------------- accepted input


def test_excel_csv_with_bom_crlf_and_quoted_newlines_trains(tmp_path, capsys):
    rows = "".join(f'"{t}\r\nsecond line, with a comma",{l}\r\n' for t, l in zip(*tiny_sentiment(4)))
    data = write(tmp_path / "excel.csv", "\ufefftext,label\r\n".encode("utf-8") + rows.encode("utf-8"))
    code, err = run_cli(capsys, train(tmp_path, data))
    assert code == 0, err
    assert textrnn.load(tmp_path / "out" / "model").classes_ == ["neg", "pos"]


def test_latin1_file_trains_with_encoding(tmp_path, capsys):
    texts, labels = tiny_sentiment(4)
    content = "text,label\n" + "".join(f"{t} été,{l}\n" for t, l in zip(texts, labels))
    data = write(tmp_path / "d.csv", content.encode("latin-1"))
    code, err = run_cli(capsys, train(tmp_path, data, "--encoding", "latin-1"))
    assert code == 0, err
    assert "été" in textrnn.load(tmp_path / "out" / "model").vocab_


def test_empty_and_whitespace_texts_are_trained_on_and_predicted(tmp_path, trained, capsys):
    texts, labels = tiny_sentiment(4)
    data = write(
        tmp_path / "d.jsonl",
        "".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(texts + ["", "   "], labels + ["pos", "neg"])),
    )
    code, err = run_cli(capsys, train(tmp_path, data))
    assert code == 0, err
    assert main(["predict", str(trained), "", "   ", "\t\n", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and rows[0]["probabilities"] == rows[1]["probabilities"] == rows[2]["probabilities"]


def test_tokenizer_is_linear_on_hostile_long_texts():
    """No pattern that makes a regex backtrack quadratically: 8x the text costs about 8x the time."""
    from textrnn.text import Tokenizer

    tok = Tokenizer()
    for unit in ("<" * 7 + "a", "a-" * 4, "don't ", "&amp;" * 2, "\u00a0 \t", "x" * 8):
        times = []
        for n in (20_000, 160_000):
            text = unit * (n // len(unit))
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                tok(text)
                best = min(best, time.perf_counter() - t0)
            times.append(best)
        assert times[1] < 25 * max(times[0], 1e-4), (unit, times)  # linear: ~8x; quadratic: ~64x


@pytest.mark.slow
def test_a_50_mb_text_trains_and_predicts(tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = np.array(["good", "bad", "film", "plot", "great", "awful", "<br />", "don't", "well-made", "!"])
    huge = " ".join(words[rng.integers(0, len(words), 9_000_000)])
    assert len(huge) > 50_000_000
    texts, labels = tiny_sentiment(4)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip([huge] + texts, ["pos"] + labels)), encoding="utf-8")
    t0 = time.perf_counter()
    code, err = run_cli(capsys, train(tmp_path, data, "--set", "text.max_length=50"))
    assert code == 0, err
    write(tmp_path / "in.txt", huge + "\n")
    assert main(["predict", str(tmp_path / "out" / "model"), "--input", str(tmp_path / "in.txt")]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("neg", "pos")
    assert time.perf_counter() - t0 < 300
