"""Metrics (scikit-learn's, never hand-written) and their readable table."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from .errors import ArtifactError


def probabilities(logits: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """(N, K) class probabilities: sigmoid of one logit for two classes, softmax otherwise; for
    multi-label models each label's own sigmoid (rows need not sum to 1)."""
    logits = np.asarray(logits, dtype=np.float64)
    if multilabel:
        return 1.0 / (1.0 + np.exp(-logits))
    if logits.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def compute_metrics(y_true: ArrayLike, proba: np.ndarray, class_names: Sequence) -> dict:
    """Flat metric names: loss, accuracy, precision/recall/f1 macro and per class, roc_auc (two
    classes), confusion_matrix (rows = true, columns = predicted, in ``class_names`` order)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    labels = list(range(len(class_names)))
    y_pred = proba.argmax(axis=1)
    out: dict = {"n": int(len(y_true))}
    out["loss"] = float(skm.log_loss(y_true, proba, labels=labels))
    out["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["precision_macro"], out["recall_macro"], out["f1_macro"] = float(p.mean()), float(r.mean()), float(f.mean())
    for i, name in enumerate(class_names):
        out[f"precision_{name}"] = float(p[i])
        out[f"recall_{name}"] = float(r[i])
        out[f"f1_{name}"] = float(f[i])
        out[f"support_{name}"] = int(s[i])
    if len(class_names) == 2 and len(np.unique(y_true)) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["classes"] = [c for c in class_names]
    return out


def predicted_labels(proba: np.ndarray, classes: Sequence, thresholds: Sequence[float] | None = None) -> list:
    """The top class of each row; with ``thresholds`` (a multi-label model), the list of labels
    whose probability reaches its threshold."""
    if thresholds is None:
        return [classes[i] for i in np.asarray(proba).argmax(axis=1)]
    keep = np.asarray(proba) >= np.asarray(thresholds)[None, :]
    return [[c for c, k in zip(classes, row) if k] for row in keep]


def checked_thresholds(value: Any, n: int, path: object) -> list[float]:
    """A multi-label model's saved thresholds (config.json), checked."""
    ok = isinstance(value, list) and len(value) == n and all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in value)
    if not ok:
        raise ArtifactError(f"{str(path)!r}: a multi-label model needs {n} thresholds in [0, 1] in config.json. Received: {value!r}")
    return [float(t) for t in value]


def best_thresholds(y_true: np.ndarray, proba: np.ndarray, grid: np.ndarray | None = None) -> list[float]:
    """Per label, the probability threshold with the best F1 on (validation) data; 0.5 for a label
    that never occurs there (no F1 to choose by). Ties go to the threshold nearest 0.5."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2) if grid is None else grid
    order = np.argsort(np.abs(grid - 0.5), kind="stable")  # nearest 0.5 first: argmax keeps the first best
    out = []
    for j in range(y_true.shape[1]):
        if not y_true[:, j].any():
            out.append(0.5)
            continue
        scores = [skm.f1_score(y_true[:, j], proba[:, j] >= grid[i], zero_division=0) for i in order]
        out.append(float(grid[order[int(np.argmax(scores))]]))
    return out


def multilabel_metrics(y_true: ArrayLike, proba: np.ndarray, class_names: Sequence, thresholds: Sequence[float]) -> dict:
    """Multi-label metrics (scikit-learn's): loss (mean binary cross-entropy), subset accuracy,
    hamming loss, micro and macro precision/recall/F1, and per label F1, support and ROC-AUC
    (where the label both occurs and does not)."""
    y = np.asarray(y_true, dtype=np.int64)
    pred = (proba >= np.asarray(thresholds)[None, :]).astype(np.int64)
    eps = 1e-12
    p = np.clip(proba, eps, 1 - eps)
    out: dict = {"n": int(len(y)), "multilabel": True, "classes": list(class_names), "thresholds": list(thresholds)}
    out["loss"] = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan")
    out["accuracy"] = float(skm.accuracy_score(y, pred))  # subset accuracy: every label right
    out["hamming_loss"] = float(skm.hamming_loss(y, pred))
    for avg in ("micro", "macro"):
        pr, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(pr), float(rc), float(f1)
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    for i, name in enumerate(class_names):
        out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = float(pr[i]), float(rc[i]), float(f1[i])
        out[f"support_{name}"] = int(sup[i])
        if 0 < y[:, i].sum() < len(y):
            out[f"roc_auc_{name}"] = float(skm.roc_auc_score(y[:, i], proba[:, i]))
    return out


def format_multilabel(m: dict, title: str = "") -> str:
    classes = m["classes"]
    width = max([len(str(c)) for c in classes] + [9])
    lines = [title] if title else []
    lines.append(f"  {'loss':>8} {'subset acc':>10} {'hamming':>8} {'f1_micro':>9} {'f1_macro':>9}")
    lines.append(f"  {m['loss']:8.4f} {m['accuracy']:10.4f} {m['hamming_loss']:8.4f} {m['f1_micro']:9.4f} {m['f1_macro']:9.4f}")
    lines += ["", f"  {'label':<{width}} {'precision':>9} {'recall':>7} {'f1':>7} {'roc_auc':>8} {'support':>8} {'threshold':>9}"]
    for c, t in zip(classes, m["thresholds"]):
        auc = m.get(f"roc_auc_{c}")
        auc_s = f"{auc:8.4f}" if auc is not None else f"{'-':>8}"
        prf = f"{m[f'precision_{c}']:9.4f} {m[f'recall_{c}']:7.4f} {m[f'f1_{c}']:7.4f}"
        lines.append(f"  {str(c):<{width}} {prf} {auc_s} {m[f'support_{c}']:8d} {t:9.2f}")
    for avg in ("micro", "macro"):
        lines.append(f"  {avg:<{width}} {m[f'precision_{avg}']:9.4f} {m[f'recall_{avg}']:7.4f} {m[f'f1_{avg}']:7.4f}")
    return "\n".join(lines)


def format_report(m: dict, title: str = "") -> str:
    """The metrics as a small fixed-width table."""
    if m.get("multilabel"):
        return format_multilabel(m, title)
    classes = m["classes"]
    width = max([len(str(c)) for c in classes] + [9])
    lines = [title] if title else []
    head = f"  {'loss':>8} {'accuracy':>9} {'f1_macro':>9}" + (f" {'roc_auc':>8}" if "roc_auc" in m else "")
    row = f"  {m['loss']:8.4f} {m['accuracy']:9.4f} {m['f1_macro']:9.4f}" + (f" {m['roc_auc']:8.4f}" if "roc_auc" in m else "")
    lines += [head, row, "", f"  {'class':<{width}} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for c in classes:
        lines.append(f"  {str(c):<{width}} {m[f'precision_{c}']:9.4f} {m[f'recall_{c}']:7.4f} {m[f'f1_{c}']:7.4f} {m[f'support_{c}']:8d}")
    lines.append(f"  {'macro':<{width}} {m['precision_macro']:9.4f} {m['recall_macro']:7.4f} {m['f1_macro']:7.4f} {m['n']:8d}")
    cm = m["confusion_matrix"]
    cw = max(width, max(len(str(v)) for r in cm for v in r))
    lines += ["", "  confusion (rows: true, columns: predicted)", "  " + " " * (width + 1) + " ".join(f"{str(c):>{cw}}" for c in classes)]
    for c, r in zip(classes, cm):
        lines.append(f"  {str(c):<{width}} " + " ".join(f"{v:>{cw}}" for v in r))
    return "\n".join(lines)
