import csv
import json

import pytest

from conftest import SHARED_IMDB, tiny_sentiment
from textrnn.cli import COMMANDS, main

TINY = [
    "--set",
    "model.embedding_dim=16",
    "--set",
    "model.hidden_size=16",
    "--set",
    "train.epochs=15",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.learning_rate=0.02",
    "--set",
    "text.min_freq=1",
    "--set",
    "train.schedule='constant'",
    "--set",
    "data.validation_split=0.2",
    "--quiet",
]


def write_csv(path, texts, labels, text_col="review", label_col="stars"):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([text_col, label_col])
        w.writerows(zip(texts, labels))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    texts, labels = tiny_sentiment(20)
    train = write_csv(d / "train.csv", texts, labels)
    test = write_csv(d / "test.csv", texts[:8], labels[:8])
    code = main(
        [
            "train",
            "--train",
            str(train),
            "--test",
            str(test),
            "--text-column",
            "review",
            "--label-column",
            "stars",
            "--output",
            str(d / "run"),
            *TINY,
        ]
    )
    assert code == 0
    return d


def test_train_writes_the_run_directory(run):
    out = run / "run"
    assert (out / "model" / "weights.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == metrics["test"]["accuracy"] >= 0.75
    assert len(json.loads((out / "history.json").read_text())) >= 1
    assert (out / "config.toml").is_file()


def test_evaluate_on_a_file(run, capsys):
    assert (
        main(
            [
                "evaluate",
                str(run / "run" / "model"),
                "--data",
                str(run / "test.csv"),
                "--text-column",
                "review",
                "--label-column",
                "stars",
                "--format",
                "json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["n"] == 8


def test_predict_args_file_stdin_json(run, capsys, monkeypatch, tmp_path):
    model = str(run / "run" / "model")
    assert main(["predict", model, "a great film", "an awful film"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l.split("\t")[0] for l in lines] == ["pos", "neg"]
    (tmp_path / "in.txt").write_text("great music\nawful plot\n")
    assert main(["predict", model, "--input", str(tmp_path / "in.txt"), "--format", "json"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["pos", "neg"] and abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("good fun\n"))
    assert main(["predict", model]) == 0
    assert capsys.readouterr().out.startswith("pos\t")


def test_inspect_shows_every_step(run, capsys):
    assert main(["inspect", "A GOOD film<br />zzzunknown", "--model", str(run / "run" / "model"), "--max-length", "8"]) == 0
    out = capsys.readouterr().out
    for step in ("raw text", "cleaned", "tokens", "ids", "padded"):
        assert step in out
    assert "zzzunknown=1*" in out and "'a good film zzzunknown'" in out
    assert main(["inspect", "Just some text"]) == 0


def test_compare_runs_rnn_and_mlp(run, capsys, tmp_path):
    (tmp_path / "tinygru.toml").write_text(
        '[model]\ncell = "gru"\nembedding_dim = 8\nhidden_size = 8\n[text]\nmin_freq = 1\n[train]\nepochs = 2\nbatch_size = 8\n'
    )
    assert (
        main(
            [
                "compare",
                "--train",
                str(run / "train.csv"),
                "--text-column",
                "review",
                "--label-column",
                "stars",
                "--output",
                str(tmp_path / "cmp"),
                "--recipe",
                str(tmp_path / "tinygru.toml"),
                *TINY,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rnn" in out and "mlp" in out and "tinygru" in out
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(result["models"]) == {"rnn", "mlp", "tinygru"}
    assert result["models"]["tinygru"]["epochs"] == 2  # the recipe's own settings, on the same data


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_on_every_command(command, capsys):
    assert main([command, "--help"]) == 0
    assert "usage: textrnn " + command in capsys.readouterr().out


def test_errors_are_one_line_with_exit_2(run, capsys, tmp_path):
    cases = [
        ["train", "--train", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o")],
        ["train", "--train", str(run / "train.csv"), "--text-column", "reviw", "--output", str(tmp_path / "o")],
        ["train", "--set", "model.cell=lstmx", "--output", str(tmp_path / "o")],
        ["train", "--train", str(run / "train.csv"), "--output", str(run / "run"), "--text-column", "review", "--label-column", "stars"],
        ["predict", str(tmp_path / "no-model"), "x"],
        ["train"],
        ["evaluate", str(run / "run" / "model"), "--data", str(run / "train.csv"), "--label-column", "starz"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "o").exists()  # nothing half-written


@pytest.mark.skipif(not SHARED_IMDB.exists(), reason=f"the IMDB archive is not at {SHARED_IMDB}")
def test_end_to_end_on_a_real_imdb_sample(tmp_path, monkeypatch, capsys):
    """The whole pipeline once on real reviews: IMDB archive -> train -> evaluate -> predict."""
    from textrnn.datasets import load_imdb, sample

    monkeypatch.setenv("TEXTRNN_IMDB", str(SHARED_IMDB))
    test = sample(load_imdb("test", progress=False), 400, seed=0)
    write_csv(tmp_path / "test.csv", test.texts, test.labels, "text", "label")
    code = main(
        [
            "train",
            "--train",
            "imdb:train",
            "--limit",
            "2000",
            "--test",
            str(tmp_path / "test.csv"),
            "--set",
            "train.epochs=6",
            "--set",
            "text.max_length=150",
            "--output",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["train"] == 1800 and metrics["data"]["test"] == 400
    assert metrics["test_accuracy"] > 0.6  # 2,000 reviews, a few short epochs: well above chance
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run" / "model"), "A moving, beautifully acted film.", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("neg", "pos")


def test_output_to_a_file_is_plain_lines_without_other_libraries_chatter(run, tmp_path):
    """`textrnn train ... > log 2>&1`: no progress-bar redraws (carriage returns) and no stray lines
    from libraries (matplotlib builds its font cache on first use and says so at INFO)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}  # a fresh font cache: matplotlib's first run
    with open(tmp_path / "log", "w") as log:
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "textrnn",
                "train",
                "--train",
                str(run / "train.csv"),
                "--test",
                str(run / "test.csv"),
                "--text-column",
                "review",
                "--label-column",
                "stars",
                "--output",
                str(tmp_path / "run"),
                *[a for a in TINY if a != "--quiet"],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=300,
        ).returncode
    text = (tmp_path / "log").read_text()
    assert code == 0, text
    assert (tmp_path / "run" / "learning_curves.png").is_file()  # matplotlib did run
    assert "\r" not in text and "\x1b[" not in text
    assert "fontManager" not in text and "epoch" in text.lower()


def test_bfloat16_training_on_a_cpu_without_it_is_one_line(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TEXTRNN_CPU", "avx2")  # read where the CPU's features are read: no native bfloat16
    code = main(
        [
            "train",
            "--train",
            str(run / "train.csv"),
            "--text-column",
            "review",
            "--label-column",
            "stars",
            "--output",
            str(tmp_path / "run"),
            *TINY,
            "--set",
            "runtime.precision='bfloat16'",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("textrnn train: error: runtime.precision='bfloat16' needs native bfloat16, but this CPU")
    assert not (tmp_path / "run").exists()


def test_a_validation_file_replaces_the_split(tmp_path):
    texts, labels = tiny_sentiment(20)
    train = write_csv(tmp_path / "train.csv", texts, labels)
    dev = write_csv(tmp_path / "dev.csv", texts[:6], labels[:6])
    args = ["train", "--train", str(train), "--validation", str(dev), "--text-column", "review", "--label-column", "stars"]
    assert main([*args, "--output", str(tmp_path / "run"), *TINY]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"] == {"train": len(texts), "validation": 6, "test": 0}  # every training text trained
    assert metrics["config"]["data"]["validation"] == str(dev.resolve()) or metrics["config"]["data"]["validation"] == str(dev)
    assert "val_accuracy" in metrics["history"][0]
