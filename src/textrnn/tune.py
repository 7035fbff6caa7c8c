"""``textrnn tune``: a search over settings with Optuna (an optional extra, ``pip install
'textrnn[tune]'``), then the best settings trained once and tested.

The search space is the ``[tune]`` section of the recipe (``Config`` leaves that section out, so
``textrnn train --config`` reads the same file)::

    [tune]
    "train.learning_rate" = {low = 1e-4, high = 1e-2, log = true}   # a range of a number setting
    "train.batch_size" = {low = 16, high = 128, step = 16}           # an integer setting: integers
    "model.hidden_size" = [32, 64, 128]                              # choices, of any setting
    "model.cell" = ["lstm", "gru"]

A range is a table with ``low`` and ``high`` and optionally ``log`` (sample on a log scale) or
``step``; it draws integers for an integer setting and numbers for a number one. A list is the
choices. Every bound and choice is checked as the setting itself is, before any trial.

Each trial trains the recipe with its settings drawn by a TPE sampler (seeded by ``train.seed``)
on the training data less the validation split, and is scored by ``train.monitor`` on that split
(its best epoch); ``data.test`` is set to none inside trials, so the test split is never read
while searching. After each epoch the score goes to a median pruner, which stops a trial worse
than the median of the earlier ones at that epoch. Trials run one after another; the study lives
in ``OUTPUT/study.db`` (SQLite), so a stopped search keeps its finished trials and ``--resume``
continues it (another process given the same ``--output`` and ``--resume`` joins it).

OUTPUT holds: ``study.db``; ``trials.csv`` (every trial's number, state, score, settings, epochs,
seconds); ``best.toml`` (the recipe with the best trial's settings, for ``textrnn train --config``);
``search.png`` (the score of each trial and the best so far); ``best/`` (the run of the best
settings, trained once more with the test split and reported as ``textrnn train`` does).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import plots
from .classifier import TextClassifier
from .config import Config
from .errors import ArtifactError, CheckpointError, ConfigError, TextRNNError, did_you_mean
from .io import write_text
from .pipeline import _pretrain, portable_config, prepare_data, train_run
from .tracking import Tracker, final_metrics, flat_params, log_train_run

log = logging.getLogger("textrnn")

STUDY = "textrnn"  # the study's name in its storage
STORAGE = "study.db"
FILES = ("study.db", "trials.csv", "best.toml", "search.png", "best", "tensorboard")
STARTUP_TRIALS = 5  # the median pruner waits for this many trials before pruning any
WARMUP_EPOCHS = 1  # and never prunes at the first epoch, whose score is the noisiest
RANGE_KEYS = ("low", "high", "log", "step")
EXAMPLE = '"train.learning_rate" = {low = 1e-4, high = 1e-2, log = true} or "model.hidden_size" = [32, 64, 128]'


def check_installed() -> None:
    try:
        import optuna  # noqa: F401, PLC0415  (optional extra: textrnn[tune])
    except ImportError:
        raise TextRNNError("tune needs the tune extra: pip install 'textrnn[tune]'") from None


# ------------------------------------------------------------------------------ the search space
@dataclass
class Dimension:
    """One setting searched: ``choices``, or a range ``low``..``high`` (integers when ``integer``)."""

    key: str
    choices: list | None = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            return json.dumps(self.choices)
        extra = ", log = true" if self.log else f", step = {self.step}" if self.step else ""
        return f"{{low = {self.low}, high = {self.high}{extra}}}"


def _field_type(config: Config, key: str, source: str) -> str:
    section, _, name = key.partition(".")
    part = getattr(config, section, None) if section in Config.SECTIONS else None
    known = {f"{s}.{f.name}" for s in Config.SECTIONS for f in fields(getattr(config, s))}
    if part is None or key not in known:
        raise ConfigError(f"{source}: [tune] unknown setting {key!r}; name it as section.key." + did_you_mean(key, known))
    if key == "data.test":
        raise ConfigError(f"{source}: [tune] {key!r} cannot be searched: trials never read the test split.")
    return str(next(f.type for f in fields(part) if f.name == name))


def _check_value(config: Config, key: str, value: Any, source: str) -> None:
    """The value as the setting itself would take it, or the setting's own one-line error."""
    if isinstance(value, (list, dict)) or not isinstance(value, (str, int, float, bool)):
        raise ConfigError(f"{source}: [tune] {key!r}: a choice must be a string, number or boolean. Received: {value!r}")
    try:
        config.override({key: value})
    except ConfigError as e:
        raise ConfigError(f"{source}: [tune] {key!r} = {value!r}: {str(e).removeprefix('override: ')}") from None


def _range(config: Config, key: str, spec: dict, ftype: str, source: str) -> Dimension:
    where = f"{source}: [tune] {key!r}"
    unknown = [k for k in spec if k not in RANGE_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: a range takes low, high and log or step. Received: {unknown[0]!r}." + did_you_mean(unknown[0], RANGE_KEYS)
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs low and high, e.g. {{low = 1e-4, high = 1e-2, log = true}}. Received: {spec!r}")
    integer = ftype.startswith("int")
    if not (integer or ftype.startswith("float")):
        raise ConfigError(f'{where}: a range needs a number setting; give this one a list of choices, e.g. ["a", "b"].')
    low, high, log_scale, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise ConfigError(f"{where}: low, high and step must be numbers. Received: {spec!r}")
    if integer and any(not float(v).is_integer() for v in numbers):
        raise ConfigError(f"{where}: {key} is an integer setting: low, high and step must be integers. Received: {spec!r}")
    if not isinstance(log_scale, bool):
        raise ConfigError(f"{where}: log must be true or false. Received: log={log_scale!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be less than high. Received: low={low!r}, high={high!r}")
    if log_scale and step is not None:
        raise ConfigError(f"{where}: log and step exclude each other; give one.")
    if log_scale and low <= 0:
        raise ConfigError(f"{where}: log = true needs low > 0. Received: low={low!r}")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step must be greater than 0. Received: step={step!r}")
    for value in (low, high):
        _check_value(config, key, int(value) if integer else float(value), source)
    return Dimension(key, None, float(low), float(high), log_scale, None if step is None else float(step), integer)


def parse_space(table: Any, config: Config, source: str) -> list[Dimension]:
    """The ``[tune]`` table as dimensions, each checked; a mistake is one ConfigError naming its key."""
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{source}: tune needs a [tune] section naming the settings to search, e.g. {EXAMPLE}")
    space = []
    for key, spec in table.items():
        ftype = _field_type(config, key, source)
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{source}: [tune] {key!r}: the list of choices is empty.")
            for value in spec:
                _check_value(config, key, value, source)
            space.append(Dimension(key, list(spec)))
        elif isinstance(spec, dict):
            space.append(_range(config, key, spec, ftype, source))
        else:
            raise ConfigError(
                f"{source}: [tune] {key!r}: expected a range {{low = ..., high = ...}} or a list of choices. Received: {spec!r}"
            )
    return space


def read_space(path: str | Path, config: Config) -> list[Dimension]:
    """The ``[tune]`` section of the TOML file at ``path`` (the rest is ``config``, read already)."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("tune")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return parse_space(table, config, str(path))


def trial_config(base: Config, params: dict) -> Config:
    """A trial's config: the recipe with the trial's settings, and no test split."""
    return base.override({**params, "data.test": None})


# ------------------------------------------------------------------------------ one trial
def score(row: dict, monitor: str) -> float:
    """What a trial reports after an epoch: the monitored validation score."""
    return float(row[monitor])


def best_score(history: list[dict], monitor: str) -> float:
    values = [float(row[monitor]) for row in history if monitor in row]
    return (max if monitor == "val_accuracy" else min)(values) if values else math.nan


@contextlib.contextmanager
def _quiet():
    """A trial's own log lines (data, decided settings, epochs) give way to one line per trial."""
    logger = logging.getLogger("textrnn")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


class Objective:
    """Optuna's objective: train one trial's config, report each epoch's score, return the best."""

    def __init__(self, base: Config, space: list[Dimension], data: dict, tracker: Tracker, output: Path):
        self.base, self.space, self.data, self.tracker, self.output = base, space, data, tracker, output
        self.monitor = base.train.monitor

    def _data(self, config: Config):
        """The trial's (train, validation) texts: split once per data section, with the recipe's seed."""
        key = json.dumps(config.to_dict()["data"], sort_keys=True, default=str)
        if key not in self.data:
            train, val, _ = prepare_data(config.override({"train.seed": self.base.train.seed}))
            self.data[key] = (train, val)
        return self.data[key]

    def __call__(self, trial) -> float:
        import optuna  # noqa: PLC0415  (optional extra: textrnn[tune])

        params = {d.key: d.suggest(trial) for d in self.space}
        config = trial_config(self.base, params)
        train, val = self._data(config)
        child = self.tracker.child(f"trial-{trial.number}", self.output / "tensorboard" / f"trial-{trial.number:04d}")
        child.log_params({**flat_params(config.to_dict(), skip_auto=True), "tune.trial": trial.number})

        def on_epoch_end(row: dict) -> None:
            child.log_epoch(row)
            trial.report(score(row, self.monitor), int(row["epoch"]))
            trial.set_user_attr("epochs", int(row["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {row['epoch']}")

        t0 = time.perf_counter()
        with child, _quiet():
            try:
                config, _, _ = _pretrain(config, train.texts, False)  # cached by content: once for all trials
                clf = TextClassifier(config).fit(
                    train.texts,
                    train.labels,
                    validation_data=(val.texts, val.labels),
                    validation_split=0,
                    progress=False,
                    on_epoch_end=on_epoch_end,
                )
            except optuna.TrialPruned:
                child.close("KILLED")
                raise
            except TextRNNError as e:  # the trial fails (its line says why); the search goes on
                trial.set_user_attr("error", str(e))
                raise
            finally:
                trial.set_user_attr("seconds", time.perf_counter() - t0)
            value = best_score(clf.history_, self.monitor)
            child.log_params(flat_params(clf.config_.to_dict()))
            child.log_metrics({f"best_{self.monitor}": value}, step=len(clf.history_))
        trial.set_user_attr("epochs", len(clf.history_))
        return value


# ------------------------------------------------------------------------------ the study
def _storage(output: Path):
    import optuna  # noqa: PLC0415  (optional extra: textrnn[tune])

    url = f"sqlite:///{(output / STORAGE).resolve()}"
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def _open_study(output: Path, base: Config, space: list[Dimension], resume: bool, overwrite: bool):
    import optuna  # noqa: PLC0415  (optional extra: textrnn[tune])

    if output.exists() and not output.is_dir():
        raise ArtifactError(f"--output must be a directory. Received: {str(output)!r} (a file)")
    exists = (output / STORAGE).is_file()
    if resume and not exists:
        raise CheckpointError(f"No study to resume in {str(output)!r}: {str(output / STORAGE)!r} does not exist.")
    if exists and not resume and not overwrite:
        raise ArtifactError(
            f"{str(output / STORAGE)!r} already holds a study; continue it with --resume, or pass --overwrite to start again."
        )
    if overwrite and not resume:
        for name in FILES:
            path = output / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    direction: Literal["maximize", "minimize"] = "maximize" if base.train.monitor == "val_accuracy" else "minimize"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_EPOCHS)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours
    study = optuna.create_study(storage=_storage(output), study_name=STUDY, direction=direction, pruner=pruner, load_if_exists=resume)
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"{output / STORAGE}: the study {study.direction.name.lower()}s, but train.monitor={base.train.monitor!r} asks to {direction}."
        )
    # a resumed study draws on from where it was, not the first trials' draws again
    study.sampler = optuna.samplers.TPESampler(seed=base.train.seed + len(study.get_trials(deepcopy=False)))
    described = {d.key: d.describe() for d in space}
    if not resume:
        study.set_user_attr("space", described)
        study.set_user_attr("monitor", base.train.monitor)
    elif study.user_attrs.get("space") != described:
        log.warning("tune: the [tune] section differs from the one the study began with; the trials so far searched that one.")
    return study


def _finished(study) -> list:
    import optuna  # noqa: PLC0415  (optional extra: textrnn[tune])

    return [t for t in study.get_trials(deepcopy=False) if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def _format_params(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _trial_line(monitor: str, total: int, tracker: Tracker):
    """The callback after each trial: one log line, and the study's scores to the tracker."""

    def callback(study, trial) -> None:
        state, seconds = trial.state.name.lower(), trial.user_attrs.get("seconds", 0.0)
        epochs = trial.user_attrs.get("epochs", 0)
        if state == "complete":
            what = f"{monitor} {trial.value:.4f} ({epochs} epochs, {seconds:.1f}s)"
            tracker.log_metrics({f"trial/{monitor}": trial.value}, step=trial.number)
        elif state == "pruned":
            last = trial.intermediate_values.get(epochs)
            what = f"pruned at epoch {epochs}" + (f" ({monitor} {last:.4f})" if last is not None else "") + f", {seconds:.1f}s"
        else:
            what = f"{state}" + (f": {trial.user_attrs['error']}" if "error" in trial.user_attrs else "")
        try:
            best = study.best_trial
            best_text = f"best {best.value:.4f} (trial {best.number})"
            tracker.log_metrics({f"best/{monitor}": best.value}, step=trial.number)
        except ValueError:
            best_text = "no trial finished yet"
        log.info(
            "tune: trial %d (%d/%d): %s  %s  |  %s",
            trial.number,
            len(_finished(study)),
            total,
            what,
            _format_params(trial.params),
            best_text,
        )

    return callback


# ------------------------------------------------------------------------------ the files
def write_trials(study, space: list[Dimension], path: Path) -> None:
    """trials.csv: every trial's number, state, score, settings, epochs and seconds."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = [d.key for d in space]
    writer.writerow(["number", "state", "value", *keys, "epochs", "seconds", "started", "completed"])
    for t in study.get_trials(deepcopy=False):
        writer.writerow(
            [
                t.number,
                t.state.name,
                "" if t.value is None else t.value,
                *[t.params.get(k, "") for k in keys],
                t.user_attrs.get("epochs", ""),
                round(t.user_attrs.get("seconds", 0.0), 3) if "seconds" in t.user_attrs else "",
                t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else "",
                t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else "",
            ]
        )
    write_text(path, buf.getvalue())


def best_config(base: Config, study) -> Config:
    """The recipe with the best trial's settings (its own test split kept, for the final report)."""
    return base.override(dict(study.best_trial.params))


def write_best(base: Config, study, path: Path) -> Config:
    config = best_config(base, study)
    best = study.best_trial
    head = (
        f"# textrnn tune: the best of {len(_finished(study))} trials ({base.train.monitor} {best.value:.4f}, trial {best.number})\n"
        f"# its settings: {_format_params(best.params)}\n# train it with: textrnn train --config {path.name} --output DIR\n"
    )
    write_text(path, head + portable_config(config).to_toml())
    return config


def plot_search(study, monitor: str, path: Path) -> Path | None:
    """search.png: each finished trial's score, pruned ones at their last, and the best so far."""
    if not plots.available():
        log.info("search.png skipped: matplotlib is not installed (pip install 'textrnn[plots]')")
        return None
    fig = plots._figure(8, 4)
    ax = fig.subplots()
    done = [(t.number, t.value) for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    pruned = [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "PRUNED" and t.intermediate_values
    ]
    if done:
        ax.plot(*zip(*done), "o", color=plots.BLUE, label="trial")
        better = max if study.direction.name == "MAXIMIZE" else min
        running = [better(v for _, v in done[: i + 1]) for i in range(len(done))]
        ax.step([n for n, _ in done], running, where="post", color=plots.ORANGE, label="best so far")
    if pruned:
        ax.plot(*zip(*pruned), "x", color=plots.GREY, label="pruned (last epoch reported)")
    ax.set_title(f"textrnn tune: {monitor} by trial")
    ax.set_xlabel("trial")
    ax.set_ylabel(monitor)
    ax.grid(alpha=0.3)
    ax.legend()
    plots._save(fig, path)
    return path


def _write_outputs(study, base: Config, space: list[Dimension], output: Path) -> Config | None:
    write_trials(study, space, output / "trials.csv")
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return None
    config = write_best(base, study, output / "best.toml")
    try:
        plot_search(study, base.train.monitor, output / "search.png")
    except Exception as e:  # noqa: BLE001 - the trials and best.toml are written
        log.warning("search.png skipped: %s: %s", type(e).__name__, e)
    return config


# ------------------------------------------------------------------------------ the command
def _check(base: Config) -> None:
    if not base.data.validation_split:
        raise ConfigError("tune scores trials on the validation split: data.validation_split must be greater than 0. Received: 0")


def _search(study, objective: Objective, trials: int, timeout: float | None, tracker: Tracker) -> None:
    import optuna  # noqa: PLC0415  (optional extra: textrnn[tune])

    done = len(_finished(study))
    if done >= trials:
        log.info("tune: the study already holds %d finished trials (--trials %d); none added", done, trials)
        return
    log.info(
        "tune: %d trials to run (%d finished before), %s", trials - done, done, f"at most {timeout:g}s" if timeout else "no time limit"
    )
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(
        objective,
        n_trials=trials - done,
        timeout=timeout,
        catch=(TextRNNError,),
        callbacks=[optuna.study.MaxTrialsCallback(trials, states=states), _trial_line(objective.monitor, trials, tracker)],
        gc_after_trial=True,
    )


def tune_run(
    config_path: str | Path,
    base: Config,
    output: str | Path,
    trials: int = 20,
    timeout: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    tracker: Tracker | None = None,
    progress: bool = True,
) -> dict:
    """Search the ``[tune]`` space of ``config_path`` over ``base`` (that file's config, with any
    overrides), write the study's files to ``output``, then train and test the best settings in
    ``output/best``. Returns a summary: the best trial, the counts, the best run's report."""
    check_installed()
    output = Path(output)
    space = read_space(config_path, base)
    _check(base)
    tracker = tracker if tracker is not None else Tracker([], "tune")
    study = _open_study(output, base, space, resume, overwrite)
    train, val, _ = prepare_data(trial_config(base, {}))  # fails before any trial on bad data; trials reuse it
    data = {json.dumps(trial_config(base, {}).to_dict()["data"], sort_keys=True, default=str): (train, val)}
    tracker.log_params(
        {**flat_params(base.to_dict(), skip_auto=True), **{f"tune.{d.key}": d.describe() for d in space}, "tune.trials": trials}
    )
    try:
        _search(study, Objective(base, space, data, tracker, output), trials, timeout, tracker)
    except KeyboardInterrupt:
        _write_outputs(study, base, space, output)
        log.warning(
            "tune: interrupted; the %d finished trials are kept in %s; continue with: textrnn tune --config %s --output %s --resume",
            len(_finished(study)),
            output / STORAGE,
            config_path,
            output,
        )
        raise
    best = _write_outputs(study, base, space, output)
    for name in ("trials.csv", "best.toml", "search.png"):
        if (output / name).is_file():
            tracker.log_artifacts(output / name)
    if best is None:
        raise TextRNNError(f"tune: no trial finished (see {output / 'trials.csv'}); nothing to train.")
    log.info("tune: training the best settings (trial %d) with the test split: %s", study.best_trial.number, output / "best")
    child = tracker.child("best", output / "best" / "tensorboard")
    with child:
        child.log_params(flat_params(portable_config(best).to_dict(), skip_auto=True))
        report = train_run(best, output / "best", overwrite=True, progress=progress, on_epoch_end=child.log_epoch)
        log_train_run(child, report, output / "best")
    tracker.log_metrics(final_metrics(report), step=study.best_trial.number)
    return {
        "output": str(output),
        "monitor": base.train.monitor,
        "best_trial": study.best_trial.number,
        "best_value": study.best_trial.value,
        "best_params": dict(study.best_trial.params),
        "trials": {s: sum(t.state.name == s for t in study.get_trials(deepcopy=False)) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "report": report,
    }


def format_tune(result: dict) -> str:
    """The end-of-search summary a person reads (the best run's own summary follows it)."""
    counts = result["trials"]
    return (
        f"tune: {counts['COMPLETE']} trials complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed; "
        f"best {result['monitor']} {result['best_value']:.4f} (trial {result['best_trial']}): {_format_params(result['best_params'])}\n"
        f"files: {result['output']}/trials.csv, best.toml, search.png, best/"
    )
