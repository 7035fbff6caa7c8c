"""Metrics (scikit-learn's, never hand-written) and their readable table."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm


def probabilities(logits: np.ndarray) -> np.ndarray:
    """(N, K) class probabilities: sigmoid of one logit for two classes, softmax otherwise."""
    logits = np.asarray(logits, dtype=np.float64)
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


def format_report(m: dict, title: str = "") -> str:
    """The metrics as a small fixed-width table."""
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
