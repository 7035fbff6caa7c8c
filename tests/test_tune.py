"""textrnn tune: a tiny search, its files, --resume, the [tune] checks, pruning, and no test split in trials."""

import csv
import json

import pytest

from conftest import tiny_sentiment
from textrnn import tune
from textrnn.cli import main
from textrnn.config import Config
from textrnn.errors import ConfigError

optuna = pytest.importorskip("optuna")

RECIPE = """
[data]
train = "{train}"
test = "{test}"
validation_split = 0.25

[text]
min_freq = 1

[model]
embedding_dim = 8
hidden_size = 8

[train]
epochs = 3
batch_size = 8

[tune]
"train.learning_rate" = {{low = 1e-3, high = 3e-2, log = true}}
"model.hidden_size" = [8, 16]
"""


def write_csv(path, texts, labels):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return path


def recipe(folder, tune_section=None):
    texts, labels = tiny_sentiment(12)
    train = write_csv(folder / "train.csv", texts, labels)
    test = write_csv(folder / "test.csv", texts[:8], labels[:8])
    text = RECIPE.format(train=train, test=test)
    if tune_section is not None:
        text = text[: text.index("[tune]")] + "[tune]\n" + tune_section + "\n"
    (folder / "c.toml").write_text(text)
    return folder / "c.toml"


def read_trials(output):
    with open(output / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    config = recipe(d)
    assert main(["tune", "--config", str(config), "--trials", "3", "--output", str(d / "out"), "--quiet"]) == 0
    return d, config


def test_a_search_writes_its_files_and_trains_the_best(study):
    d, _ = study
    out = d / "out"
    rows = read_trials(out)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert all(r["state"] == "COMPLETE" and r["model.hidden_size"] in ("8", "16") and r["epochs"] == "3" for r in rows)
    assert all(1e-3 <= float(r["train.learning_rate"]) <= 3e-2 for r in rows)
    assert (out / "search.png").read_bytes().startswith(b"\x89PNG")
    best = Config.from_toml(out / "best.toml")
    winner = max(rows, key=lambda r: float(r["value"]))  # the first of the best, as Optuna's best_trial
    assert best.model.hidden_size == int(winner["model.hidden_size"])
    assert best.train.learning_rate == pytest.approx(float(winner["train.learning_rate"]))
    assert best.data.test.endswith("test.csv")  # the recipe's test split, for the final report
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    assert "test" in metrics and metrics["config"]["model"]["hidden_size"] == best.model.hidden_size


def test_best_toml_trains(study, tmp_path):
    d, _ = study
    assert main(["train", "--config", str(d / "out" / "best.toml"), "--output", str(tmp_path / "run"), "--quiet"]) == 0
    assert (tmp_path / "run" / "model" / "weights.safetensors").is_file()


def test_the_recipe_with_its_tune_section_trains_too(study, tmp_path):
    _, config = study
    assert Config.from_toml(config).model.hidden_size == 8
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run"), "--quiet"]) == 0


def test_resume_adds_trials_to_the_same_study(study, capsys):
    d, config = study
    out = d / "out"
    code = main(["tune", "--config", str(config), "--trials", "4", "--output", str(out), "--quiet"])
    assert code == 2
    assert "already holds a study; continue it with --resume" in capsys.readouterr().err
    assert main(["tune", "--config", str(config), "--trials", "5", "--output", str(out), "--resume", "--quiet"]) == 0
    loaded = optuna.load_study(study_name=tune.STUDY, storage=f"sqlite:///{out / tune.STORAGE}")
    assert len(loaded.trials) == 5
    assert [r["number"] for r in read_trials(out)] == ["0", "1", "2", "3", "4"]
    # the resumed sampler draws anew, not the first trials' settings again
    assert loaded.trials[3].params != loaded.trials[0].params


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            '"train.learnig_rate" = [0.1]',
            "[tune] unknown setting 'train.learnig_rate'; name it as section.key. Did you mean 'train.learning_rate'?",
        ),
        (
            '"train.learning_rate" = {low = 0.1, high = 0.01}',
            "[tune] 'train.learning_rate': low must be less than high. Received: low=0.1, high=0.01",
        ),
        (
            '"train.learning_rate" = {low = 0, high = 0.01, log = true}',
            "[tune] 'train.learning_rate': log = true needs low > 0. Received: low=0",
        ),
        ('"train.learning_rate" = {low = 0.001}', "[tune] 'train.learning_rate': a range needs low and high"),
        (
            '"train.learning_rate" = {low = 0.001, high = 0.1, scale = "log"}',
            "[tune] 'train.learning_rate': a range takes low, high and log or step. Received: 'scale'.",
        ),
        ('"model.hidden_size" = {low = 8.5, high = 64}', "[tune] 'model.hidden_size': model.hidden_size is an integer setting"),
        ('"model.hidden_size" = [32, -4]', "[tune] 'model.hidden_size' = -4: hidden_size must be greater than 0. Received: hidden_size=-4"),
        ('"model.cell" = ["lstm", "lstn"]', "[tune] 'model.cell' = 'lstn': Expected one of"),
        ('"model.cell" = {low = 1, high = 2}', "[tune] 'model.cell': a range needs a number setting; give this one a list of choices"),
        ('"model.hidden_size" = []', "[tune] 'model.hidden_size': the list of choices is empty."),
        (
            '"model.hidden_size" = 64',
            "[tune] 'model.hidden_size': expected a range {low = ..., high = ...} or a list of choices. Received: 64",
        ),
        ('"data.test" = ["a.csv"]', "[tune] 'data.test' cannot be searched: trials never read the test split."),
        ("", "tune needs a [tune] section naming the settings to search"),
    ],
)
def test_a_bad_tune_entry_is_one_clear_error(tmp_path, entry, message):
    config = recipe(tmp_path, entry)
    with pytest.raises(ConfigError) as e:
        tune.read_space(config, Config.from_toml(config))
    assert str(e.value).startswith(f"{config}: {message}"), str(e.value)


def test_a_bad_tune_entry_from_the_cli_is_one_line_before_any_trial(tmp_path, capsys):
    config = recipe(tmp_path, '"model.hidden_size" = [32, -4]')
    code = main(["tune", "--config", str(config), "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("textrnn tune: error: ") and "'model.hidden_size' = -4" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_trial_reporting_a_bad_score_is_pruned(tmp_path, monkeypatch):
    """The median pruner gets each epoch's score through fit's on_epoch_end: trial 0 reports its
    real scores, the later ones a hopeless one, and are stopped after their first epoch."""
    monkeypatch.setattr(tune, "STARTUP_TRIALS", 1)
    monkeypatch.setattr(tune, "WARMUP_EPOCHS", 0)
    calls = []

    def score(row, monitor):
        calls.append(row["epoch"])
        return float(row[monitor]) if len(calls) <= 3 else -1.0

    monkeypatch.setattr(tune, "score", score)
    config = recipe(tmp_path)
    assert main(["tune", "--config", str(config), "--trials", "3", "--output", str(tmp_path / "out"), "--quiet"]) == 0
    rows = read_trials(tmp_path / "out")
    assert [r["state"] for r in rows] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert [r["epochs"] for r in rows] == ["3", "1", "1"]
    assert calls == [1, 2, 3, 1, 1]


def test_trials_never_read_the_test_split(tmp_path, monkeypatch):
    import textrnn.pipeline as pipeline

    read, real_load = [], pipeline.load_data
    real_train_run = tune.train_run

    def load_data(spec, *args, **kwargs):
        read.append(str(spec))
        return real_load(spec, *args, **kwargs)

    def train_run(*args, **kwargs):
        read.append("<the best run>")
        return real_train_run(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_data", load_data)
    monkeypatch.setattr(tune, "train_run", train_run)
    config = recipe(tmp_path)
    assert main(["tune", "--config", str(config), "--trials", "2", "--output", str(tmp_path / "out"), "--quiet"]) == 0
    best = read.index("<the best run>")
    assert not any(spec.endswith("test.csv") for spec in read[:best]), read
    assert any(spec.endswith("test.csv") for spec in read[best:]), read


def test_tune_logs_each_trial_to_mlflow_nested_under_the_study(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    config = recipe(tmp_path)
    out = tmp_path / "out"
    args = ["tune", "--config", str(config), "--trials", "2", "--output", str(out), "--quiet", "--log-to", "mlflow", "--tracking-uri", uri]
    assert main(args) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("textrnn").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"tune out", "trial-0", "trial-1", "best"}
    parent = by_name["tune out"].info.run_id
    assert all(by_name[n].data.tags["mlflow.parentRunId"] == parent for n in ("trial-0", "trial-1", "best"))
    assert by_name["trial-1"].data.params["model.hidden_size"] in ("8", "16")
    assert {"trials.csv", "best.toml", "search.png"} <= {a.path for a in client.list_artifacts(parent)}
    assert "test/accuracy" in by_name["best"].data.metrics and "test/accuracy" not in by_name["trial-0"].data.metrics
    values = {p.step: p.value for p in client.get_metric_history(parent, "trial/val_accuracy")}
    assert values == {int(r["number"]): float(r["value"]) for r in read_trials(out)}


def test_ctrl_c_keeps_the_finished_trials_and_resume_continues(tmp_path, monkeypatch, capsys):
    real_score, calls = tune.score, []

    def score(row, monitor):
        calls.append(row["epoch"])
        if len(calls) == 4:  # trial 1's first epoch
            raise KeyboardInterrupt
        return real_score(row, monitor)

    monkeypatch.setattr(tune, "score", score)
    config, out = recipe(tmp_path), tmp_path / "out"
    assert main(["tune", "--config", str(config), "--trials", "3", "--output", str(out), "--quiet"]) == 130
    assert "textrnn tune: interrupted" in capsys.readouterr().err
    assert [r["state"] for r in read_trials(out)] == ["COMPLETE", "FAIL"]
    assert (out / "best.toml").is_file() and not (out / "best").exists()
    monkeypatch.setattr(tune, "score", real_score)
    assert main(["tune", "--config", str(config), "--trials", "3", "--output", str(out), "--resume", "--quiet"]) == 0
    assert [r["state"] for r in read_trials(out)] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert (out / "best" / "metrics.json").is_file()


def test_the_shipped_tune_recipe_reads_and_its_space_is_valid():
    from pathlib import Path

    from textrnn.config import Config
    from textrnn.tune import read_space

    path = Path(__file__).parents[1] / "configs" / "tune.toml"
    space = read_space(path, Config.from_toml(path))
    assert {d.key for d in space} >= {"train.learning_rate", "model.hidden_size"}
