"""The run's pictures as PNG files: learning curves, confusion matrix, ROC curve, the compare chart.

matplotlib is optional (``pip install 'textrnn[plots]'``) and imported only when a plot is drawn.
Figures are made with matplotlib's object API on the Agg canvas, never through pyplot: no global
backend is switched, no window can open, and drawing from a server thread is safe.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc

from .io import atomic_path

log = logging.getLogger("textrnn")

BLUE, ORANGE, GREY = "#2563eb", "#ea580c", "#6b7280"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401, PLC0415  (optional extra: textrnn[plots])
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (optional extra: textrnn[plots])
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike | None) -> bytes:
    """PNG bytes; also written to ``path`` (atomically) when given."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return data


def learning_curves(history: Sequence[dict], path: str | os.PathLike | None = None) -> bytes:
    """Loss and accuracy per epoch, train and validation; the kept (best) epoch marked."""
    if not history:
        raise ValueError("learning_curves needs a history with at least one epoch")
    fig = _figure(10, 3.8)
    epochs = [row["epoch"] for row in history]
    best = [row["epoch"] for row in history if row.get("best")]
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "accuracy"), ("Loss", "Accuracy")):
        ax.plot(epochs, [row[key] for row in history], "o-", color=BLUE, label="train")
        if any(f"val_{key}" in row for row in history):
            ax.plot(epochs, [row.get(f"val_{key}", np.nan) for row in history], "o-", color=ORANGE, label="validation")
        if best:
            ax.axvline(best[0], color=GREY, linestyle="--", linewidth=1, label=f"kept (epoch {best[0]})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    return _save(fig, path)


def confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence, path: str | os.PathLike | None = None, title: str = "Confusion matrix (test)"
) -> bytes:
    """Counts, with each cell shaded by its share of the true class (row-normalized)."""
    cm = np.asarray(matrix, dtype=np.int64)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    size = min(3.2 + 0.6 * k, 12)
    fig = _figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    names = [str(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]}\n{share[i, j]:.1%}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    return _save(fig, path)


def roc_curve(
    y_true: ArrayLike, scores: ArrayLike, path: str | os.PathLike | None = None, positive: str = "1", title: str = "ROC curve (test)"
) -> bytes:
    """Two classes: the ROC curve of ``scores`` (the positive class's probability), with its AUC."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        raise ValueError("roc_curve needs both classes among the true labels")
    fpr, tpr, _ = sk_roc(y_true, scores)
    auc = roc_auc_score(y_true, scores)
    fig = _figure(5, 5)
    ax = fig.subplots()
    ax.plot(fpr, tpr, color=BLUE, linewidth=2, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel(f"true positive rate (positive: {positive})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def compare_chart(result: dict, path: str | os.PathLike | None = None) -> bytes:
    """``compare_run``'s result side by side: accuracies, and training time."""
    models = result["models"]
    names = list(models)
    x = np.arange(len(names))
    fig = _figure(9, 3.8)
    acc, secs = fig.subplots(1, 2)
    w = 0.38
    for offset, key, label, color in ((-w / 2, "validation_accuracy", "validation", ORANGE), (w / 2, "test_accuracy", "test", BLUE)):
        values = [models[n].get(key) for n in names]
        if all(v is None for v in values):
            continue
        bars = acc.bar(x + offset, [np.nan if v is None else v for v in values], w, label=label, color=color)
        acc.bar_label(bars, labels=["" if v is None else f"{v:.3f}" for v in values], fontsize=8)
    acc.set_xticks(x, names)
    acc.set_ylim(0, 1.08)
    acc.set_ylabel("accuracy")
    acc.set_title("Accuracy")
    acc.legend(loc="lower right")
    bars = secs.bar(x, [models[n]["fit_seconds"] for n in names], 0.5, color=GREY)
    secs.bar_label(bars, labels=[f"{models[n]['fit_seconds']:.1f}s" for n in names], fontsize=8)
    secs.set_xticks(x, [f"{n}\n{models[n]['parameters']:,} params" for n in names])
    secs.set_ylabel("seconds")
    secs.set_title("Training time")
    return _save(fig, path)


def run_plots(
    output: str | os.PathLike,
    history: Sequence[dict],
    test_metrics: dict | None = None,
    y_true: ArrayLike | None = None,
    proba: np.ndarray | None = None,
    classes: Sequence | None = None,
) -> list[Path]:
    """Write a run's PNG files into ``output``: learning_curves.png (with a history),
    confusion_matrix.png (with test metrics) and roc.png (two classes, with test probabilities).
    Returns the paths written; nothing (and one log line) when matplotlib is missing."""
    if not available():
        log.info("plots skipped: matplotlib is not installed (pip install 'textrnn[plots]')")
        return []
    output = Path(output)
    written = []
    if history:
        learning_curves(history, output / "learning_curves.png")
        written.append(output / "learning_curves.png")
    if test_metrics and "confusion_matrix" in test_metrics:
        confusion_matrix(test_metrics["confusion_matrix"], test_metrics["classes"], output / "confusion_matrix.png")
        written.append(output / "confusion_matrix.png")
    y = None if y_true is None else np.asarray(y_true)
    single = y is not None and y.ndim == 1  # a multi-label run has no one ROC curve
    if proba is not None and y is not None and single and classes is not None and len(classes) == 2 and len(np.unique(y)) == 2:
        roc_curve(y, np.asarray(proba)[:, 1], output / "roc.png", positive=str(classes[1]))
        written.append(output / "roc.png")
    return written
