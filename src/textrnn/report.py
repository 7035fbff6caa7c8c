"""``textrnn report RUN_DIR``: one self-contained HTML page about a training run.

The page holds the run's config, its metrics, its plots (PNG files embedded as base64 data URIs,
so the page is one file that opens anywhere) and a seeded sample of misclassified test texts with
their occlusion highlights. The test data is read again from the run's config; when it cannot be
(no test split, or the data is gone) the page says so and keeps the rest.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__, plots
from .classifier import TextClassifier
from .config import Config
from .errors import TextRNNError
from .explain import CSS as EXPLAIN_CSS
from .explain import explain, highlight
from .io import write_text
from .pipeline import load_split

log = logging.getLogger("textrnn")

PLOTS = (("learning_curves.png", "Learning curves"), ("confusion_matrix.png", "Confusion matrix (test)"), ("roc.png", "ROC curve (test)"))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextRNNError(f"Cannot read {str(path)!r}: {e}") from None


def _decided(metrics: dict) -> str:
    """The settings the run decided from its data ("auto"), with the reasons, as a table."""
    settings = (metrics.get("decided") or {}).get("settings") or {}
    if not settings:
        return ""
    rows = "".join(
        f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(str(v.get('value')))}</td><td>{html.escape(str(v.get('reason')))}</td></tr>"
        for k, v in settings.items()
    )
    head = "<tr><th>setting</th><th>value</th><th>why</th></tr>"
    return f"<p>Decided from the training data (settings left at <code>auto</code>):</p><table>{head}{rows}</table>"


def _config(run: Path, metrics: dict):
    if (run / "config.toml").is_file():
        return Config.from_toml(run / "config.toml"), (run / "config.toml").read_text(encoding="utf-8")
    config = Config.from_dict(metrics.get("config", {}), source=str(run / "metrics.json"))
    return config, config.to_toml()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not np.isfinite(v) else f"{v:.4f}"
    return html.escape(str(v))


def _metrics_tables(metrics: dict) -> str:
    splits = [s for s in ("validation", "test") if isinstance(metrics.get(s), dict)]
    if not splits:
        return "<p class='muted'>No validation or test metrics in this run.</p>"
    multilabel = any(metrics[s].get("multilabel") for s in splits)
    keys = (
        ["n", "loss", "accuracy", "hamming_loss", "f1_micro", "f1_macro"]
        if multilabel
        else ["n", "loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc"]
    )
    rows = "".join(f"<tr><th>{s}</th>" + "".join(f"<td>{_fmt(metrics[s].get(k))}</td>" for k in keys) + "</tr>" for s in splits)
    out = [f"<table><tr><th></th>{''.join(f'<th>{k}</th>' for k in keys)}</tr>{rows}</table>"]
    m = metrics[splits[-1]]
    classes = m.get("classes", [])
    if classes:
        per = ("precision", "recall", "f1", "roc_auc", "support") if multilabel else ("precision", "recall", "f1", "support")
        head = f"<tr><th>{'label' if multilabel else 'class'}</th>" + "".join(f"<th>{k}</th>" for k in per) + "</tr>"
        body = "".join(
            f"<tr><th>{html.escape(str(c))}</th>" + "".join(f"<td>{_fmt(m.get(f'{k}_{c}'))}</td>" for k in per) + "</tr>" for c in classes
        )
        out.append(f"<h3>Per class ({splits[-1]})</h3><table>{head}{body}</table>")
    cm = m.get("confusion_matrix")
    if cm:
        head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in classes) + "</tr>"
        body = "".join(
            f"<tr><th>{html.escape(str(c))}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for c, row in zip(classes, cm)
        )
        out.append(f"<h3>Confusion matrix ({splits[-1]})</h3><table>{head}{body}</table>")
    return "\n".join(out)


def _summary(metrics: dict) -> str:
    d, t, env = metrics.get("data", {}), metrics.get("timings", {}), metrics.get("environment", {})
    items = [
        ("training texts", d.get("train")),
        ("validation texts", d.get("validation")),
        ("test texts", d.get("test")),
        ("vocabulary", metrics.get("vocab_size")),
        ("parameters", metrics.get("parameters")),
        ("epochs", len(metrics.get("history", []) or [])),
        ("training time", f"{t['fit_seconds']:.1f} s" if "fit_seconds" in t else None),
        ("textrnn / torch", f"{env.get('textrnn', '?')} / {env.get('torch', '?')}" if env else None),
        ("machine", env.get("platform")),
    ]
    cells = "".join(f"<tr><th>{k}</th><td>{_fmt(f'{v:,}' if isinstance(v, int) else v)}</td></tr>" for k, v in items if v is not None)
    return f"<table class='summary'>{cells}</table>"


def _misclassified(run: Path, config, n: int, seed: int, progress: bool) -> tuple[str, dict]:
    """The HTML of up to ``n`` misclassified test texts with highlights, and what was computed
    (``y``, ``proba``, ``classes``) for plots that need it."""

    if not config.data.test:
        return "<p class='muted'>This run has no test split (data.test is not set).</p>", {}
    try:
        test = load_split(config.data.test, config)
    except (TextRNNError, OSError) as e:
        return f"<p class='muted'>The test data could not be read again ({html.escape(str(e))}).</p>", {}
    if test is None or test.labels is None:
        return "<p class='muted'>The test data has no labels.</p>", {}
    clf = TextClassifier.load(run / "model")
    log.info("report: predicting %d test texts", len(test.texts))
    y = clf._targets(test.labels)
    proba = clf.predict_proba(test.texts)
    if clf.multilabel_:  # a text is misclassified when its predicted label set is not its own
        wrong = np.flatnonzero(((proba >= np.asarray(clf.thresholds_)) != (y > 0.5)).any(axis=1))
    else:
        wrong = np.flatnonzero(proba.argmax(axis=1) != y)
    computed = {"y": y, "proba": proba, "classes": clf.classes_}
    if not len(wrong):
        return "<p>No test text is misclassified.</p>", computed
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(wrong, size=min(n, len(wrong)), replace=False))
    parts = [
        f"<p class='muted'>{len(picked)} of the {len(wrong):,} misclassified test texts "
        f"({len(wrong) / len(y):.1%} of {len(y):,}), drawn with seed {seed}. Highlights: green pushed toward the "
        f"(wrong) predicted label, red away from it.</p>"
    ]
    for i in picked:
        explained = explain(clf, test.texts[i])
        if clf.multilabel_:
            true = ", ".join(str(c) for c, on in zip(clf.classes_, y[i]) if on) or "(none)"
            said = ", ".join(map(str, explained["labels"])) or "(none)"
        else:
            true, said = str(clf.classes_[y[i]]), str(explained["label"])
        parts.append(
            f"<div class='example'><div class='meta'>test text #{i} &middot; true <b>{html.escape(true)}</b>"
            f" &middot; predicted <b class='wrong'>{html.escape(said)}</b> "
            f"({explained['probability']:.3f})</div>{highlight(explained)}</div>"
        )
    return "\n".join(parts), computed


CSS = """
body{max-width:1000px;margin:2em auto;padding:0 1.2em;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #d8dee4;padding-bottom:.2em}
h3{font-size:1em;margin:1.2em 0 .4em} .muted{color:#5f6b76}
table{border-collapse:collapse;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d8dee4;padding:.3em .7em;text-align:right} th{background:#f6f8fa;text-align:left}
table.summary td{text-align:left}
pre{background:#f6f8fa;border:1px solid #d8dee4;border-radius:6px;padding:.8em;overflow:auto;font-size:13px}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #d8dee4;border-radius:6px}
figcaption{color:#5f6b76;font-size:.9em}
.example{border:1px solid #d8dee4;border-radius:6px;padding:.6em .9em;margin:.8em 0}
.example .meta{font-size:.9em;color:#5f6b76} .wrong{color:#b91c1c}
"""


def build_report(
    run_dir: str | os.PathLike, output: str | os.PathLike | None = None, examples: int = 10, seed: int = 0, progress: bool = True
) -> Path:
    """Write the run's HTML report (default ``RUN_DIR/report.html``) and return its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise TextRNNError(f"Run directory not found: {str(run)!r}")
    if not (run / "metrics.json").is_file() or not (run / "model").is_dir():
        raise TextRNNError(
            f"{str(run)!r} is not a finished training run: it needs metrics.json and model/ (made by: textrnn train --output {run})"
        )
    metrics = _read_json(run / "metrics.json")
    history = metrics.get("history") or (_read_json(run / "history.json") if (run / "history.json").is_file() else [])
    config, config_text = _config(run, metrics)
    mis_html, computed = _misclassified(run, config, examples, seed, progress) if examples > 0 else ("", {})

    figures = []
    for file, caption in PLOTS:
        path = run / file
        data = path.read_bytes() if path.is_file() else None
        if data is None and plots.available():  # a run trained without matplotlib: draw them now
            try:
                if file == "learning_curves.png" and history:
                    data = plots.learning_curves(history)
                elif file == "confusion_matrix.png" and isinstance(metrics.get("test"), dict):
                    data = plots.confusion_matrix(metrics["test"]["confusion_matrix"], metrics["test"]["classes"])
                elif file == "roc.png" and computed and len(computed["classes"]) == 2 and len(np.unique(computed["y"])) == 2:
                    data = plots.roc_curve(computed["y"], computed["proba"][:, 1], positive=str(computed["classes"][1]))
            except Exception as e:  # noqa: BLE001 - a missing plot never stops the report
                log.warning("report: %s not drawn: %s", file, e)
        if data is not None:
            figures.append(f"<figure>{_img(data, caption)}<figcaption>{caption}</figcaption></figure>")
    if not figures:
        figures.append(
            "<p class='muted'>No plots: matplotlib was not installed when the run was trained (pip install 'textrnn[plots]').</p>"
        )

    title = f"textrnn run: {run.resolve().name}"
    acc = metrics.get("test_accuracy")
    subtitle = f"test accuracy {acc:.4f} &middot; " if isinstance(acc, float) else ""
    made = f"report made {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by textrnn {__version__}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}{EXPLAIN_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="muted">{subtitle}{html.escape(str(run))} &middot; {made}</p>
<h2>Summary</h2>
{_summary(metrics)}
<h2>Metrics</h2>
{_metrics_tables(metrics)}
<h2>Plots</h2>
{"".join(figures)}
<h2>Misclassified test texts</h2>
{mis_html or "<p class='muted'>Not requested.</p>"}
<h2>Config</h2>
{_decided(metrics)}
<pre>{html.escape(config_text)}</pre>
</body></html>
"""
    out = Path(output) if output is not None else run / "report.html"
    if out.is_dir():
        raise TextRNNError(f"--output must be a file path. Received: {str(out)!r} (a directory)")
    write_text(out, page)
    return out
