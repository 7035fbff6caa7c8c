"""Experiment tracking (``--log-to tensorboard``, ``--log-to mlflow``): a run's settings, its
metrics epoch by epoch, the final validation and test metrics, the plots and, for MLflow, the model
folder, logged with each library's own writer. Both are optional extras, imported only here and
only when asked for (``pip install 'textrnn[tensorboard]'``, ``'textrnn[mlflow]'``).

Where it goes:

- TensorBoard: event files in a folder the caller names (``RUN/tensorboard`` for ``textrnn
  train``), so ``tensorboard --logdir runs`` shows every run under ``runs/``. Scalars are tagged as
  the history's columns (``loss``, ``val_accuracy``, ``tokens_per_s``...) at step = epoch, the final
  ones ``validation/accuracy``, ``test/f1_macro``...; the settings are the HParams tab's
  (``section.key``), the plots are images.
- MLflow: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's own default, a SQLite
  store ``./mlflow.db`` with the artifacts in ``./mlruns`` of the current folder (``mlflow ui`` started
  there shows them); experiment ``$MLFLOW_EXPERIMENT_NAME`` or "textrnn". Settings are params,
  metrics are named as for TensorBoard, the plots, ``metrics.json``, ``history.json``,
  ``config.toml`` and the ``model/`` folder are artifacts.

A ``Tracker`` opens its runs at the first thing it logs, so a command that fails before training
leaves no empty run behind.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from .errors import TextRNNError, did_you_mean

log = logging.getLogger("textrnn")

BACKENDS = ("tensorboard", "mlflow")
EXPERIMENT = "textrnn"
PLOTS = ("learning_curves.png", "confusion_matrix.png", "roc.png")
RUN_FILES = ("metrics.json", "history.json", "config.toml")
_BAD_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow refuses in a metric or param name


def parse_backends(values: Iterable[str] | None) -> list[str]:
    """``--log-to`` values (repeatable, or comma-separated) as a list of backends, in order, once each."""
    out: list[str] = []
    for value in values or []:
        for part in str(value).split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in BACKENDS:
                raise TextRNNError(
                    f"--log-to takes {' or '.join(BACKENDS)} (repeatable, or comma-separated). Received: {part.strip()!r}."
                    + did_you_mean(name, BACKENDS)
                )
            if name not in out:
                out.append(name)
    return out


def check_installed(backends: Iterable[str], tracking_uri: str | None = None) -> None:
    """One line naming the extra to install, before any training, for a backend that is missing."""
    for backend in backends:
        try:
            if backend == "tensorboard":
                import tensorboard  # noqa: F401, PLC0415  (optional extra: textrnn[tensorboard])
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401, PLC0415  (needs the tensorboard package)
            else:
                import mlflow  # noqa: F401, PLC0415  (optional extra: textrnn[mlflow])

                if mlflow_uri(tracking_uri).startswith("sqlite:"):  # the default store; the skinny package lacks its database layer
                    import alembic  # noqa: F401, PLC0415  (optional extra: textrnn[mlflow])
                    import sqlalchemy  # noqa: F401, PLC0415  (optional extra: textrnn[mlflow])
        except ImportError:
            raise TextRNNError(f"--log-to {backend} needs the {backend} extra: pip install 'textrnn[{backend}]'") from None


def mlflow_uri(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///ABS/mlflow.db`` in the current folder."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def flat_params(config: dict, skip_auto: bool = False) -> dict[str, Any]:
    """A config's sections as ``section.key`` -> value (None as "none", as in the TOML files);
    ``skip_auto`` leaves out the settings still "auto" (decided when training starts)."""
    return {
        f"{section}.{key}": "none" if value is None else value
        for section, values in config.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if not (skip_auto and value == "auto")
    }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def epoch_metrics(row: dict) -> dict[str, float]:
    """A history row's numbers (loss, accuracy, val_loss, val_accuracy, tokens_per_s, ...), less the epoch."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and _number(v)}


def final_metrics(report: dict) -> dict[str, float]:
    """A run report's validation and test metrics (``validation/accuracy``, ``test/f1_macro``...) and timings."""
    out = {}
    for split in ("validation", "test"):
        for key, value in (report.get(split) or {}).items():
            if key != "n" and _number(value):
                out[f"{split}/{key}"] = float(value)
    for key, value in (report.get("timings") or {}).items():
        if _number(value):
            out[f"time/{key}"] = float(value)
    return out


def _name(key: str) -> str:
    return _BAD_NAME.sub("_", key)


class _TensorBoard:
    """Events through torch's ``SummaryWriter`` (which needs the tensorboard package)."""

    def __init__(self, logdir: Path, fresh: bool):
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415  (optional extra: textrnn[tensorboard])

        if fresh:  # a new run (or --overwrite): no events of an earlier one mixed in
            shutil.rmtree(logdir, ignore_errors=True)
        self.writer = SummaryWriter(str(logdir))
        self.params: dict[str, Any] = {}
        self.finals: dict[str, float] = {}
        self.fresh = fresh

    def log_params(self, params: dict) -> None:
        for key, value in params.items():  # written once, as the HParams tab's, at close; first values kept, as MLflow's
            self.params.setdefault(key, value)

    def log_metrics(self, metrics: dict[str, float], step: int, final: bool) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        if final:
            self.finals.update(metrics)

    def log_images(self, paths: list[Path], step: int) -> None:
        from matplotlib.image import imread  # noqa: PLC0415  (optional extra: textrnn[plots]; the plots exist only with it)

        for path in paths:
            self.writer.add_image(path.stem, imread(str(path)), step, dataformats="HWC")

    def log_artifacts(self, folder: Path, name: str) -> None:
        pass  # TensorBoard holds numbers and pictures, not files

    def close(self, status: str) -> None:
        from torch.utils.tensorboard.summary import hparams  # noqa: PLC0415  (optional extra: textrnn[tensorboard])

        if self.params:
            writer = self.writer._get_file_writer()  # as SummaryWriter.add_hparams, without its extra sub-folder
            for summary in hparams(
                {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.params.items()}, self.finals
            ):
                writer.add_summary(summary)
        self.writer.add_text("status", status)
        self.writer.close()


class _MLflow:
    """One MLflow run through ``MlflowClient`` (no global active run): nested under ``parent_id``."""

    def __init__(self, name: str, tracking_uri: str | None, parent_id: str | None, tags: dict[str, str]):
        from mlflow.tracking import MlflowClient  # noqa: PLC0415  (optional extra: textrnn[mlflow])

        for noisy in ("mlflow", "alembic"):  # "Creating initial MLflow database tables...": not the user's business
            if logging.getLogger(noisy).getEffectiveLevel() < logging.WARNING:
                logging.getLogger(noisy).setLevel(logging.WARNING)
        self.uri = mlflow_uri(tracking_uri)
        self.client = MlflowClient(self.uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            where = None
            if self.uri.startswith("sqlite:///"):  # the artifacts beside the database, not in whatever folder this runs
                where = (Path(self.uri[len("sqlite:///") :]).parent / "mlruns").resolve().as_uri()
            try:
                experiment_id = self.client.create_experiment(experiment, artifact_location=where)
            except Exception:  # noqa: BLE001 - another process created it meanwhile
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                experiment_id = found.experiment_id
        else:
            experiment_id = found.experiment_id
        tags = {"mlflow.source.name": "textrnn", **tags, **({"mlflow.parentRunId": parent_id} if parent_id else {})}
        self.run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self.params: set[str] = set()

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param  # noqa: PLC0415  (optional extra: textrnn[mlflow])

        new = [Param(_name(k), str(v)) for k, v in params.items() if _name(k) not in self.params]  # params are written once
        for start in range(0, len(new), 100):  # MLflow's most params per call
            self.client.log_batch(self.run_id, params=new[start : start + 100])
        self.params.update(p.key for p in new)

    def log_metrics(self, metrics: dict[str, float], step: int, final: bool) -> None:
        from mlflow.entities import Metric  # noqa: PLC0415  (optional extra: textrnn[mlflow])

        now = int(time.time() * 1000)
        batch = [Metric(_name(k), v, now, step) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):  # MLflow's most metrics per call
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def log_images(self, paths: list[Path], step: int) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), "plots")

    def log_artifacts(self, folder: Path, name: str) -> None:
        if folder.is_dir():
            self.client.log_artifacts(self.run_id, str(folder), name)
        elif folder.is_file():
            self.client.log_artifact(self.run_id, str(folder), name or None)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


class Tracker:
    """A run in each of ``backends``, opened at the first thing logged. Use it as a context manager:
    it ends the runs as FINISHED, or FAILED (KILLED on Ctrl-C) when an exception leaves it.

    ``logdir`` is the TensorBoard folder (cleared first unless ``fresh=False``: a resumed run adds
    its events); ``parent`` nests this run's MLflow run under another tracker's (tune's trials)."""

    def __init__(
        self,
        backends: Iterable[str],
        name: str,
        logdir: str | os.PathLike | None = None,
        tracking_uri: str | None = None,
        fresh: bool = True,
        parent: "Tracker | None" = None,
        tags: dict[str, str] | None = None,
    ):
        self.backends = list(backends)
        self.name, self.tracking_uri, self.fresh, self.parent = name, tracking_uri, fresh, parent
        self.logdir = Path(logdir) if logdir is not None else None
        self.tags = dict(tags or {})
        self.sinks: list[Any] | None = None
        self.pending: dict[str, Any] = {}  # params logged before the runs open
        self.epochs: set[int] = set()  # epochs logged by this process (a resumed run's earlier ones are added at the end)

    def __bool__(self) -> bool:
        return bool(self.backends)

    @property
    def mlflow_run_id(self) -> str | None:
        return next((s.run_id for s in self._open() if isinstance(s, _MLflow)), None) if self.backends else None

    def _open(self) -> list[Any]:
        if self.sinks is None:
            sinks: list[Any] = []
            for backend in self.backends:
                if backend == "tensorboard":
                    if self.logdir is None:
                        raise ValueError("a TensorBoard tracker needs a logdir")
                    sinks.append(_TensorBoard(self.logdir, self.fresh))
                else:
                    parent = self.parent.mlflow_run_id if self.parent is not None else None
                    sinks.append(_MLflow(self.name, self.tracking_uri, parent, self.tags))
            self.sinks = sinks
            for sink in sinks:
                sink.log_params(self.pending)
            where = [str(self.logdir) if b == "tensorboard" else mlflow_uri(self.tracking_uri) for b in self.backends]
            log.info("tracking %s: %s", self.name, ", ".join(f"{b} {w}" for b, w in zip(self.backends, where)))
        return self.sinks

    def child(self, name: str, logdir: str | os.PathLike | None = None, tags: dict[str, str] | None = None) -> "Tracker":
        """A run nested in this one (MLflow), with its own TensorBoard folder."""
        return Tracker(self.backends, name, logdir, self.tracking_uri, parent=self, tags=tags)

    def log_params(self, params: dict) -> None:
        """Settings not logged yet (MLflow's params are written once: a setting decided later is
        added, never changed). Kept until the runs open, at the first metric or file."""
        if self.sinks is None:
            for key, value in params.items():
                self.pending.setdefault(key, value)
        for sink in self.sinks or []:
            sink.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int = 0, final: bool = True) -> None:
        for sink in self._open() if self.backends and metrics else []:
            sink.log_metrics(metrics, step, final)

    def log_epoch(self, row: dict) -> None:
        """One history row at step = its epoch: the ``on_epoch_end`` of fit, pretraining and tune."""
        if self.backends:
            self.log_metrics(epoch_metrics(row), int(row["epoch"]), final=False)
            self.epochs.add(int(row["epoch"]))

    def log_history(self, history: list[dict]) -> None:
        """The rows of epochs not logged by this process (those before a resume): MLflow only, as
        TensorBoard's earlier event files already hold them (unless they were cleared)."""
        for row in history:
            if int(row["epoch"]) not in self.epochs:
                for sink in self._open():
                    if isinstance(sink, _MLflow) or sink.fresh:
                        sink.log_metrics(epoch_metrics(row), int(row["epoch"]), False)
                self.epochs.add(int(row["epoch"]))

    def log_images(self, paths: Iterable[str | os.PathLike], step: int = 0) -> None:
        found = [Path(p) for p in paths if Path(p).is_file()]
        for sink in self._open() if self.backends and found else []:
            sink.log_images(found, step)

    def log_artifacts(self, path: str | os.PathLike, name: str = "") -> None:
        """A folder (or file) as MLflow artifacts under ``name``; TensorBoard keeps none."""
        for sink in self._open() if self.backends else []:
            sink.log_artifacts(Path(path), name)

    def close(self, status: str = "FINISHED") -> None:
        if self.sinks:
            for sink in self.sinks:
                try:
                    sink.close(status)
                except Exception as e:  # noqa: BLE001 - the run itself is saved; a tracker failing at the end never fails it
                    log.warning("tracking: closing %s failed: %s: %s", type(sink).__name__.strip("_"), type(e).__name__, e)
        self.sinks = [] if self.sinks is not None else None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, kind, error, tb) -> None:
        self.close("FINISHED" if kind is None else "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def log_train_run(tracker: Tracker, report: dict, output: str | os.PathLike) -> None:
    """What a finished ``train_run`` adds: the settings decided from the data, the epochs of before
    a resume, the final metrics, the plots, and (MLflow) the run's files and model folder."""
    if not tracker or "config" not in report:
        return
    output = Path(output)
    tracker.log_params(flat_params(report["config"]))
    tracker.log_history(report.get("history") or [])
    last = max([int(r["epoch"]) for r in report.get("history") or []] + [0])
    tracker.log_metrics(final_metrics(report), step=last)
    tracker.log_images([output / name for name in PLOTS], step=last)
    for name in RUN_FILES:
        if (output / name).is_file():
            tracker.log_artifacts(output / name)
    if (output / "model").is_dir():
        tracker.log_artifacts(output / "model", "model")
