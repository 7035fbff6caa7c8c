import base64
import csv
import json
import logging
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'textrnn[plots]'")

from conftest import tiny_sentiment
from textrnn import plots
from textrnn.cli import main
from textrnn.report import build_report

PNG = b"\x89PNG\r\n\x1a\n"
TINY = [
    "--set",
    "model.embedding_dim=16",
    "--set",
    "model.hidden_size=16",
    "--set",
    "train.epochs=4",
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


def write_csv(path, texts, labels):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("plots")
    texts, labels = tiny_sentiment(16)
    # a test split with some labels flipped, so some texts are surely misclassified
    test_texts = texts[:12] + ["a good film", "a bad film", "great music <b>&</b> fun"]
    test_labels = labels[:12] + ["neg", "pos", "neg"]
    code = main(
        [
            "train",
            "--train",
            write_csv(d / "train.csv", texts, labels),
            "--test",
            write_csv(d / "test.csv", test_texts, test_labels),
            "--output",
            str(d / "run"),
            *TINY,
        ]
    )
    assert code == 0
    return d / "run"


def test_train_writes_the_three_plots(run):
    for name in ("learning_curves.png", "confusion_matrix.png", "roc.png"):
        data = (run / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name


def test_plot_functions_return_png_and_handle_many_classes(tmp_path):
    history = [
        {"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / (e + 1), "val_loss": 1.2 / e, "val_accuracy": 0.5, "best": e == 2}
        for e in (1, 2, 3)
    ]
    assert plots.learning_curves(history, tmp_path / "lc.png").startswith(PNG)
    assert (tmp_path / "lc.png").read_bytes().startswith(PNG)
    assert plots.learning_curves([{"epoch": 1, "loss": 0.5, "accuracy": 0.7}]).startswith(PNG)  # no validation
    assert plots.confusion_matrix([[3, 1, 0], [0, 4, 1], [2, 0, 5]], ["a", "b", "c"]).startswith(PNG)
    assert plots.roc_curve([0, 1, 1, 0], [0.1, 0.8, 0.6, 0.4]).startswith(PNG)
    with pytest.raises(ValueError):
        plots.roc_curve([1, 1], [0.2, 0.3])
    three = {
        "models": {
            "rnn": {"test_accuracy": 0.9, "validation_accuracy": 0.88, "fit_seconds": 3.0, "parameters": 100},
            "mlp": {"test_accuracy": None, "validation_accuracy": 0.8, "fit_seconds": 1.0, "parameters": 50},
        }
    }
    assert plots.compare_chart(three).startswith(PNG)
    m = {"confusion_matrix": [[3, 1, 0], [0, 4, 1], [2, 0, 5]], "classes": [0, 1, 2]}
    written = plots.run_plots(tmp_path / "run", history, m, [0, 1, 2], np.eye(3), [0, 1, 2])
    assert sorted(p.name for p in written) == ["confusion_matrix.png", "learning_curves.png"]  # no ROC for 3 classes


def test_without_matplotlib_plots_are_skipped_with_a_log_line(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="textrnn")
    monkeypatch.setattr(plots, "available", lambda: False)
    assert plots.run_plots(tmp_path, [{"epoch": 1, "loss": 1.0, "accuracy": 0.5}]) == []
    assert "matplotlib is not installed" in caplog.text and not list(tmp_path.iterdir())


def test_report_is_one_self_contained_page(run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--output", str(out), "--examples", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert "Misclassified test texts" in page and page.count("class='example'") == 2
    assert 'class="tok' in page and "predicted <b class='wrong'>" in page
    assert "[model]" in page and "accuracy" in page  # the config and the metrics table
    assert "Decided from the training data" in page and "<code>text.max_length</code>" in page  # left at "auto"
    assert "<b>&</b>" not in page  # test texts are escaped


def test_report_defaults_and_seeded_sample(run):
    path = build_report(run, examples=10, seed=3)
    assert path == run / "report.html"
    first = path.read_text()
    again = build_report(run, run / "again.html", examples=10, seed=3).read_text()
    strip = lambda p: re.sub(r"report made .*? UTC", "", p)  # noqa: E731
    assert strip(first) == strip(again.replace("again.html", "report.html"))


def test_report_redraws_missing_plots_and_survives_missing_test_data(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in ("learning_curves.png", "confusion_matrix.png", "roc.png"):
        (copy / name).unlink()
    metrics = json.loads((copy / "metrics.json").read_text())
    page = build_report(copy).read_text()
    assert page.count("data:image/png;base64,") == 3  # redrawn; the ROC from the test data read again
    (copy / "config.toml").write_text((copy / "config.toml").read_text().replace("test.csv", "gone.csv"))
    page = build_report(copy).read_text()
    assert "could not be read again" in page and page.count("data:image/png;base64,") == 2
    assert metrics["test_accuracy"] is not None


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished training run" in capsys.readouterr().err


def test_compare_writes_its_chart(tmp_path):
    texts, labels = tiny_sentiment(8)
    train = write_csv(tmp_path / "train.csv", texts, labels)
    assert main(["compare", "--train", train, "--test", "none", "--output", str(tmp_path / "cmp"), *TINY, "--set", "train.epochs=1"]) == 0
    assert (tmp_path / "cmp" / "compare.png").read_bytes().startswith(PNG)
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["models"].keys() == {"rnn", "mlp"}
