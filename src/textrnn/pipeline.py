"""The jobs behind the CLI, as plain functions: train a run, evaluate a model, compare models.

A run directory::

    RUN/model/          the artifact (see classifier.py)
    RUN/metrics.json    test (and validation) metrics, timings, config, versions
    RUN/history.json    one row per epoch
    RUN/config.toml     the resolved config (data paths made absolute), to rerun with --config
    RUN/checkpoint/     while training: config.toml and the checkpoint to resume from (see
                        checkpoint.py); removed once the model and reports are written
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from . import __version__, distributed, mkl, plots, runtime
from .checkpoint import STATE_FILE
from .classifier import TextClassifier, _normalize_labels, is_multilabel, label_sets, match_labels
from .config import Config
from .datasets import load_data, load_unlabelled, sample, train_validation_split
from .errors import ArtifactError, CheckpointError, ConfigError, DataError
from .evaluation import format_report
from .io import write_json, write_text
from .pretrain import pretrained_encoder, word2vec_vectors
from .runtime import resolve_device

log = logging.getLogger("textrnn")


def environment() -> dict:
    """Machine and versions, for every results file (the benchmarks' too)."""
    cpu = runtime.cpu_description()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "textrnn": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu["model"],
        "cpu_features": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "mkl": mkl.status(),
        "openmp": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
    }


def load_split(spec: str | None, config: Config):
    if not spec:
        return None
    d = config.data
    return load_data(
        spec,
        text_column=d.text_column,
        label_column=d.label_column,
        imdb_path=d.imdb_path,
        encoding=d.encoding,
        label_separator=d.label_separator,
        label_columns=d.columns or None,
    )


def prepare_data(config: Config):
    """(train, validation, test) datasets; validation is a stratified, seeded part of train."""
    train = load_split(config.data.train, config)
    if config.data.limit and config.data.limit < len(train.texts):
        train = sample(train, config.data.limit, config.train.seed)
    val = None
    if config.data.validation:  # a dev file of its own: every training text trains
        val = load_split(config.data.validation, config)
    elif config.data.validation_split:
        train, val = train_validation_split(train.texts, train.labels, config.data.validation_split, config.train.seed)
    test = load_split(config.data.test, config)
    return train, val, test


def check_output(output: str | Path, overwrite: bool, resume: bool = False) -> Path:
    """Refuse, before any work, an output that would clobber a model or an unfinished run."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ArtifactError(f"--output must be a directory. Received: {str(output)!r} (a file)")
    if resume:
        return output
    if (output / "model").exists() and not overwrite:
        raise ArtifactError(f"{str(output / 'model')!r} already holds a model; pass --overwrite to replace it, or choose another --output.")
    if (output / "checkpoint" / "state.json").exists() and not overwrite:
        raise ArtifactError(
            f"{str(output)!r} holds the checkpoint of an unfinished run; continue it with "
            f"'textrnn train --resume {output}', or pass --overwrite to start again."
        )
    return output


def portable_config(config: Config) -> Config:
    """``config`` with relative data and embedding paths made absolute (IMDB specs untouched)."""
    sets: dict[str, Any] = {}
    for key in ("data.train", "data.test", "data.validation", "data.imdb_path", "model.pretrained_embeddings", "pretrain.encoder"):
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not value or (name in ("train", "test", "validation") and value.lower().split(":")[0] == "imdb"):
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and path.exists():
            sets[key] = str(path.resolve())
    unlabelled = config.data.unlabelled or []
    if any(_relative_file(spec) for spec in unlabelled):
        sets["data.unlabelled"] = [str(Path(spec).expanduser().resolve()) if _relative_file(spec) else spec for spec in unlabelled]
    return config.override(sets) if sets else config


def _relative_file(spec: str) -> bool:
    """Whether a data spec is a relative path to something that exists (not an IMDB spec)."""
    path = Path(spec).expanduser()
    return spec.lower().split(":")[0] != "imdb" and not path.is_absolute() and path.exists()


def check_test_labels(train, test) -> None:
    """Test labels the training data lacks would only fail after training: say so before."""
    if test is None or test.labels is None or any(l is None for l in test.labels):
        return
    try:
        if is_multilabel(train.labels):
            known = set().union(*label_sets(train.labels))
            unknown = sorted({repr(l) for s in label_sets(test.labels) for l in s if l not in known})
            if unknown:
                raise DataError(f"Labels the model was not trained on: {', '.join(unknown[:5])}")
        else:
            match_labels(test.labels, sorted(set(_normalize_labels(train.labels))))
    except DataError as e:
        raise DataError(f"{test.name or 'the test data'}: {e} (from the training data)") from None


def _pretrain(config: Config, texts: list[str], progress: bool) -> tuple[Config, float, float]:
    """What is learnt from unlabelled texts first, as the config asks (cached by content): the
    config pointing at it, and the seconds spent on word vectors and on the encoder."""
    t_vectors = t_pretrain = 0.0
    if config.pretrain.word2vec_data and not config.model.pretrained_embeddings:
        t0 = time.perf_counter()
        with distributed.main_first():  # trained once, by rank 0; the others read its cache
            config = config.override({"model.pretrained_embeddings": str(word2vec_vectors(config, texts))})
        t_vectors = time.perf_counter() - t0
    if config.pretrain.data and not config.pretrain.encoder:
        t0 = time.perf_counter()
        with distributed.main_first():  # pretrained once, by rank 0; the others read its cache
            config = config.override({"pretrain.encoder": str(pretrained_encoder(config, texts, progress))})
        t_pretrain = time.perf_counter() - t0
    return config, t_vectors, t_pretrain


def _write_run(output: Path, clf: TextClassifier, config: Config, report: dict, overwrite: bool, y_test, proba_test) -> None:
    """The run directory: the model, history, metrics, config and plots."""
    output.mkdir(parents=True, exist_ok=True)
    clf.save(output / "model", overwrite=overwrite, extra={"metrics": {k: report[k] for k in ("validation", "test") if k in report}})
    write_json(output / "history.json", clf.history_)
    write_json(output / "metrics.json", report)
    write_text(output / "config.toml", portable_config(config).to_toml())
    write_run_plots(output, clf.history_, report.get("test"), y_test, proba_test, clf.classes_)


def _report(clf: TextClassifier, config: Config, train, val, test, ctx) -> tuple[dict[str, Any], Any, Any]:
    """The run's report (config, machine, data, model, validation and test metrics) and the test
    labels and probabilities, computed once: the metrics and the ROC curve both come from them."""
    config = clf.config_  # with the settings decided from the data ("auto") filled in
    report: dict[str, Any] = {
        "config": config.to_dict(),
        "decided": clf.decided_,
        "environment": environment(),
        "data": {"train": len(train.texts), "validation": len(val.texts) if val else 0, "test": len(test.texts) if test else 0},
        "vocab_size": len(clf.vocab_),
        "parameters": sum(p.numel() for p in clf.model_.parameters()),
        "embedding_coverage": clf.embedding_coverage_,
        "device": str(next(clf.model_.parameters()).device),
    }
    if ctx.is_distributed:
        report["distributed"] = {
            "world_size": ctx.world_size,
            "backend": torch.distributed.get_backend(),
            "global_batch_size": config.train.batch_size * ctx.world_size,
        }
    if val is not None:
        report["validation"] = clf.evaluate(val.texts, val.labels)
    y_test = proba_test = None
    if test is not None and test.labels is not None:
        y_test, proba_test = clf._targets(test.labels), clf.predict_proba(test.texts)
        report["test"] = clf.metrics(y_test, proba_test)
        report["test_accuracy"] = report["test"]["accuracy"]
    return report, y_test, proba_test


def train_run(
    config: Config, output: str | Path, overwrite: bool = False, progress: bool = True, data=None, resume: bool = False, on_epoch_end=None
) -> dict:
    """Train on ``config.data.train``, keep the best epoch by validation, report on the test split
    once, and write the run directory. Returns the report written to ``metrics.json``.
    ``on_epoch_end(row)`` gets each epoch's history row (experiment tracking, tune's pruning).

    Checkpoints go to ``output/checkpoint``; ``resume=True`` continues from them (see resume_run).

    Under torchrun every process calls this: they train together (see distributed.py); rank 0
    alone tests, writes the run directory and returns the report; the others wait for it and
    return ``{"rank": r, "world_size": W}``."""
    output = check_output(output, overwrite, resume)
    ctx = distributed.init(config.runtime.device)  # nothing to do without torchrun
    resolve_device(config.runtime.device, ctx.local_rank, ctx.world_size)  # no GPU for "cuda": say so before the data
    progress = progress and ctx.is_main
    t0 = time.perf_counter()
    with distributed.main_first():  # rank 0 fills the caches (the parsed IMDB) that the others then read
        train, val, test = data if data is not None else prepare_data(config)
        unlabelled = load_unlabelled(config.data)
    check_test_labels(train, test)
    t_data = time.perf_counter() - t0
    log.info(
        "data: %d train, %d validation, %d test%s texts (%.1fs)",
        len(train.texts),
        len(val.texts) if val else 0,
        len(test.texts) if test else 0,
        f", {len(unlabelled)} unlabelled" if unlabelled is not None else "",
        t_data,
    )
    config, t_vectors, t_pretrain = _pretrain(config, train.texts, progress)
    t_data += t_vectors + t_pretrain
    clf = TextClassifier(config)
    checkpoint = output / "checkpoint"
    created = not output.exists()
    if not resume and ctx.is_main:
        shutil.rmtree(checkpoint, ignore_errors=True)  # only reached with --overwrite (check_output)
        write_text(checkpoint / "config.toml", portable_config(config).to_toml())  # what --resume reads
    t1 = time.perf_counter()
    try:
        clf.fit(
            train.texts,
            train.labels,
            validation_data=(val.texts, val.labels) if val else None,
            validation_split=0,  # the split (data.validation_split) was made above
            progress=progress,
            checkpoint_dir=checkpoint,
            resume=resume,
            on_epoch_end=on_epoch_end,
            unlabelled=unlabelled,
            held_out=test.texts if test is not None else (),
        )
    except BaseException:
        if ctx.is_main and not resume and not (checkpoint / "state.json").exists():  # nothing to resume: leave no trace
            shutil.rmtree(checkpoint, ignore_errors=True)
            if created:
                shutil.rmtree(output, ignore_errors=True)
        raise
    t_fit = time.perf_counter() - t1
    if not ctx.is_main:  # every process holds the same model; rank 0 tests and writes it
        distributed.barrier()
        return {"rank": ctx.rank, "world_size": ctx.world_size}
    t2 = time.perf_counter()
    report, y_test, proba_test = _report(clf, config, train, val, test, ctx)
    t_eval = time.perf_counter() - t2
    report["timings"] = {
        "data_seconds": t_data,
        "pretrain_seconds": t_pretrain,
        "fit_seconds": t_fit,
        "test_seconds": t_eval,
        "total_seconds": time.perf_counter() - t0,
    }
    report["history"] = clf.history_
    _write_run(output, clf, clf.config_, report, overwrite or resume, y_test, proba_test)
    shutil.rmtree(checkpoint, ignore_errors=True)  # the run is complete: nothing left to resume
    report["model_dir"] = str(output / "model")
    distributed.barrier()  # let the others go
    return report


def resume_run(run_dir: str | Path, progress: bool = True, on_epoch_end=None) -> dict:
    """Continue the interrupted run in ``run_dir`` with its saved config and checkpoint; the
    model is the same as an uninterrupted run would have made."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"Run directory not found: {str(run)!r}")
    state = run / "checkpoint" / STATE_FILE
    if not state.is_file():
        if (run / "model").is_dir():
            raise CheckpointError(
                f"The run in {str(run)!r} has finished (its model is in {str(run / 'model')!r}); there is nothing to resume."
            )
        raise CheckpointError(f"No checkpoint to resume in {str(run)!r}: {str(state)!r} does not exist.")
    if not (run / "checkpoint" / "config.toml").is_file():
        raise CheckpointError(f"{str(run)!r} has a checkpoint but no checkpoint/config.toml; it cannot be resumed.")
    config = Config.from_toml(run / "checkpoint" / "config.toml")
    return train_run(config, run, progress=progress, resume=True, on_epoch_end=on_epoch_end)


def describe(report: dict) -> str:
    """The end-of-training summary a person reads."""
    lines = [f"model: {report.get('model_dir', '')}  ({report['parameters']:,} parameters, vocabulary {report['vocab_size']:,})"]
    tm = report["timings"]
    lines.append(
        f"time: data {tm['data_seconds']:.1f}s, training {tm['fit_seconds']:.1f}s, test {tm['test_seconds']:.1f}s, "
        f"total {tm['total_seconds']:.1f}s"
    )
    if "validation" in report:
        lines.append(format_report(report["validation"], "validation"))
    if "test" in report:
        lines.append(format_report(report["test"], "test"))
    return "\n".join(lines)


def evaluate_run(model_dir: str | Path, spec: str, config_data=None) -> dict:
    clf = TextClassifier.load(model_dir)
    config = clf.config_ if config_data is None else clf.config_.override({f"data.{k}": v for k, v in config_data.items()})
    data = load_split(spec, config)
    if data.labels is None:
        raise DataError(f"{spec!r} has no labels to evaluate against.")
    return clf.evaluate(data.texts, data.labels)


def compare_run(
    config: Config, output: str | Path | None = None, progress: bool = True, overwrite: bool = False, recipes: list[str] | None = None
) -> dict:
    """The recurrent model and the order-blind MLP on the same data, side by side, and any
    ``recipes`` (TOML files; their [data] section is replaced by ``config``'s, so all see the same data)."""
    candidates = [("rnn", config.override({"model.arch": "rnn"})), ("mlp", config.override({"model.arch": "mlp"}))]
    for recipe in recipes or []:
        cfg = Config.from_toml(recipe)
        candidates.append((Path(recipe).stem, Config(data=config.data, text=cfg.text, model=cfg.model, train=cfg.train)))
    names = [n for n, _ in candidates]
    if len(set(names)) != len(names):
        raise ConfigError(f"Two compared models share the name {next(n for n in names if names.count(n) > 1)!r}; rename a recipe file.")
    if output is not None:  # refuse before training any model, not between them
        for name in names:
            check_output(Path(output) / name, overwrite)
    data = prepare_data(config)
    rows = {}
    for name, cfg in candidates:
        log.info("compare: training %s", name)
        if output is not None:
            report = train_run(cfg, Path(output) / name, overwrite=overwrite, progress=progress, data=data)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                report = train_run(cfg, tmp, progress=progress, data=data)
        rows[name] = {
            "test_accuracy": report.get("test_accuracy"),
            "validation_accuracy": report.get("validation", {}).get("accuracy"),
            "fit_seconds": report["timings"]["fit_seconds"],
            "total_seconds": report["timings"]["total_seconds"],
            "parameters": report["parameters"],
            "epochs": len(report["history"]),
        }
    result = {"config": config.to_dict(), "environment": environment(), "models": rows}
    if output is not None:
        write_json(Path(output) / "compare.json", result)

        if not plots.available():
            log.info("compare.png skipped: matplotlib is not installed (pip install 'textrnn[plots]')")
        else:
            try:
                plots.compare_chart(result, Path(output) / "compare.png")
            except Exception as e:  # noqa: BLE001 - both runs are already saved
                log.warning("compare.png skipped: %s: %s", type(e).__name__, e)
    return result


def write_run_plots(output: Path, history, test_metrics=None, y_test=None, proba_test=None, classes=None) -> list[Path]:
    """learning_curves.png, confusion_matrix.png and (two classes) roc.png in the run directory;
    a log line instead when matplotlib is missing. A plot that fails never fails the run."""
    try:
        return plots.run_plots(output, history, test_metrics, y_test, proba_test, classes)
    except Exception as e:  # noqa: BLE001 - the model and metrics are already saved
        log.warning("plots skipped: %s: %s", type(e).__name__, e)
        return []


def format_compare(result: dict) -> str:
    w = max([len(n) for n in result["models"]] + [6])
    lines = [f"  {'model':<{w}} {'val acc':>8} {'test acc':>9} {'train s':>8} {'total s':>8} {'epochs':>7} {'params':>10}"]
    for name, r in result["models"].items():
        val = f"{r['validation_accuracy']:.4f}" if r["validation_accuracy"] is not None else "-"
        test = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        lines.append(
            f"  {name:<{w}} {val:>8} {test:>9} {r['fit_seconds']:8.1f} {r.get('total_seconds', 0):8.1f} "
            f"{r['epochs']:7d} {r['parameters']:10,d}"
        )
    return "\n".join(lines)
