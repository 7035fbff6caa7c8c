"""--log-to tensorboard and --log-to mlflow: a tiny run, read back with each library's own reader."""

import builtins
import json

import pytest

from conftest import tiny_sentiment
from textrnn import tracking
from textrnn.cli import main
from textrnn.config import tomllib

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

TINY = [
    "--set",
    "model.embedding_dim=8",
    "--set",
    "model.hidden_size=8",
    "--set",
    "train.epochs=3",
    "--set",
    "train.batch_size=8",
    "--set",
    "text.min_freq=1",
    "--set",
    "data.validation_split=0.25",
    "--quiet",
]


def write_csv(path, texts, labels):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tracking-data")
    texts, labels = tiny_sentiment(12)
    return write_csv(d / "train.csv", texts, labels), write_csv(d / "test.csv", texts[:8], labels[:8])


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """One tiny run logged to both, to an explicit MLflow store."""
    d = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{d / 'store.db'}"
    train, test = data
    code = main(
        ["train", "--train", str(train), "--test", str(test), "--output", str(d / "run"), *TINY, "--log-to", "tensorboard,mlflow"]
        + ["--tracking-uri", uri]
    )
    assert code == 0
    return d / "run", uri


def _flat_config(run_dir):
    config = tomllib.loads((run_dir / "config.toml").read_text())
    return {f"{s}.{k}": v for s, values in config.items() for k, v in values.items()}


def _mlflow_run(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("textrnn")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


def test_mlflow_holds_the_params_metrics_and_artifacts(run):
    run_dir, uri = run
    client, runs = _mlflow_run(uri)
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED" and r.info.run_name == "run"
    # every setting of the run's config.toml, "auto" ones as decided
    assert r.data.params == {k: str(v) for k, v in _flat_config(run_dir).items()}
    assert r.data.params["model.hidden_size"] == "8" and r.data.params["text.max_length"] != "auto"
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 3
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "tokens_per_s", "learning_rate"):
        points = client.get_metric_history(r.info.run_id, key)
        assert [(p.step, p.value) for p in sorted(points, key=lambda p: p.step)] == [(row["epoch"], row[key]) for row in history], key
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert r.data.metrics["test/accuracy"] == metrics["test"]["accuracy"]
    assert r.data.metrics["validation/f1_macro"] == metrics["validation"]["f1_macro"]
    assert "time/fit_seconds" in r.data.metrics
    top = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"metrics.json", "history.json", "config.toml", "plots", "model"} <= top
    assert {a.path for a in client.list_artifacts(r.info.run_id, "plots")} >= {"plots/learning_curves.png", "plots/confusion_matrix.png"}
    assert {a.path for a in client.list_artifacts(r.info.run_id, "model")} >= {"model/weights.safetensors", "model/config.json"}


def test_tensorboard_holds_the_scalars_hparams_and_plots(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, _ = run
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    history = json.loads((run_dir / "history.json").read_text())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "tokens_per_s"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [row["epoch"] for row in history]
        assert [e.value for e in events] == pytest.approx([row[key] for row in history], rel=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert acc.Scalars("test/accuracy")[-1].value == pytest.approx(metrics["test"]["accuracy"], rel=1e-6)
    assert {"learning_curves", "confusion_matrix"} <= set(acc.Tags()["images"])
    assert acc.Images("learning_curves")[0].encoded_image_string.startswith(b"\x89PNG")
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    config = _flat_config(run_dir)
    assert start.hparams["model.hidden_size"].number_value == 8
    assert start.hparams["model.cell"].string_value == config["model.cell"]
    assert start.hparams["data.train"].string_value == config["data.train"]
    assert set(start.hparams) == set(config)


def test_mlflow_defaults_to_a_sqlite_store_in_the_current_folder(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    train, test = data
    assert (
        main(["train", "--train", str(train), "--test", "none", "--output", "out", *TINY, "--log-to", "mlflow", "--log-to", "mlflow"]) == 0
    )
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlruns").is_dir()
    assert not (tmp_path / "out" / "tensorboard").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert len(runs) == 1 and "test/accuracy" not in runs[0].data.metrics and "validation/accuracy" in runs[0].data.metrics


def test_pretrain_logs_its_epochs(tmp_path, data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, _ = data
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    args = ["pretrain", str(train), "--output", str(tmp_path / "lm"), "--quiet", "--log-to", "mlflow,tensorboard", "--tracking-uri", uri]
    sets = [
        "model.embedding_dim=8",
        "model.hidden_size=8",
        "text.min_freq=1",
        "pretrain.epochs=2",
        "pretrain.bptt=4",
        "pretrain.batch_size=4",
    ]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    history = json.loads((tmp_path / "lm" / "config.json").read_text())["history"]
    client, runs = _mlflow_run(uri)
    points = sorted(client.get_metric_history(runs[0].info.run_id, "val_perplexity"), key=lambda p: p.step)
    assert [(p.step, p.value) for p in points] == [(row["epoch"], row["val_perplexity"]) for row in history]
    assert runs[0].data.params["pretrain.epochs"] == "2"
    assert "encoder/vocab.txt" in {a.path for a in client.list_artifacts(runs[0].info.run_id, "encoder")}
    acc = EventAccumulator(str(tmp_path / "lm.tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("perplexity")] == [1, 2]


def test_a_missing_extra_is_one_line_before_any_training(tmp_path, monkeypatch, capsys, data):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    train, _ = data
    code = main(["train", "--train", str(train), "--output", str(tmp_path / "out"), *TINY, "--log-to", "mlflow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["textrnn train: error: --log-to mlflow needs the mlflow extra: pip install 'textrnn[mlflow]'"]
    assert not (tmp_path / "out").exists()


def test_an_unknown_backend_is_one_line(tmp_path, capsys, data):
    train, _ = data
    code = main(["train", "--train", str(train), "--output", str(tmp_path / "out"), *TINY, "--log-to", "tensorbord"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        "textrnn train: error: --log-to takes tensorboard or mlflow (repeatable, or comma-separated). "
        "Received: 'tensorbord'. Did you mean 'tensorboard'?"
    )


def test_parse_backends():
    assert tracking.parse_backends(["mlflow, tensorboard", "mlflow"]) == ["mlflow", "tensorboard"]
    assert tracking.parse_backends([]) == []
