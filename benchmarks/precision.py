"""float32 against bfloat16 (``runtime.precision``) on IMDB: validation accuracy and training speed.

    python benchmarks/precision.py [--recipes seed,default,imdb_fast] [--imdb PATH]

Each recipe is trained twice, in float32 and in bfloat16, back to back, in fresh processes
(``textrnn train --test none``: the test split is not read) sharing one cache, so the second run
of a recipe reuses its tokens and word vectors and both are timed on training alone. Reports, per
run, the validation accuracy of every epoch and of the kept (best) epoch, and the training tokens
per second (median over epochs). This is the evidence behind ``precision = "auto"``: bfloat16 only
where it trains as accurately. Writes benchmarks/results/precision-<date>.json with machine and
versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PRECISIONS = ("float32", "bfloat16")


def run(recipe: str, precision: str, imdb: str, cache: str) -> dict:
    config = REPO / "configs" / f"{recipe}.toml"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TEXTRNN_IMDB": imdb, "TEXTRNN_CACHE_DIR": cache, "PYTHONPATH": str(REPO / "src")}
        argv = [
            sys.executable,
            "-m",
            "textrnn",
            "train",
            "--test",
            "none",
            "--output",
            str(Path(tmp) / "run"),
            "--quiet",
            "--set",
            f"runtime.precision={precision}",
        ]
        if config.exists():
            argv += ["--config", str(config)]
        print("+", " ".join(argv[1:]), flush=True)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{recipe} {precision} failed:\n{proc.stderr}")
        m = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    history = m["history"]
    best = next((h for h in history if h.get("best")), history[-1])
    return {
        "recipe": recipe,
        "precision": precision,
        "val_accuracy_by_epoch": [h["val_accuracy"] for h in history],
        "val_accuracy_kept": best["val_accuracy"],
        "kept_epoch": best["epoch"],
        "train_tokens_per_s": statistics.median(h["tokens_per_s"] for h in history),
        "epoch_seconds": statistics.median(h["seconds"] for h in history),
        "config": m["config"],
        "environment": m.get("environment"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="seed,default,imdb_fast")
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    import torch

    sys.path.insert(0, str(REPO / "src"))
    from textrnn.runtime import cpu_description

    date = dt.date.today().isoformat()
    cpu = cpu_description()
    result = {
        "date": date,
        "machine": {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "recipes": {},
    }
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for recipe in args.recipes.split(","):
            runs = {p: run(recipe, p, args.imdb, cache) for p in PRECISIONS}
            f32, b16 = runs["float32"], runs["bfloat16"]
            result["recipes"][recipe] = {
                "runs": runs,
                "val_accuracy_delta": b16["val_accuracy_kept"] - f32["val_accuracy_kept"],
                "speedup": b16["train_tokens_per_s"] / f32["train_tokens_per_s"],
            }
            rows.append(
                f"| {recipe} | {f32['val_accuracy_kept']:.4f} | {b16['val_accuracy_kept']:.4f} | "
                f"{f32['train_tokens_per_s']:,.0f} | {b16['train_tokens_per_s']:,.0f} | "
                f"{result['recipes'][recipe]['speedup']:.2f}x |"
            )
            print(rows[-1], flush=True)
    path = Path(args.out) / f"precision-{date}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    table = [
        f"{cpu['model']} ({cpu['class']}), {os.cpu_count()} cores, {date}",
        "",
        "| recipe | val acc float32 | val acc bfloat16 | tokens/s float32 | tokens/s bfloat16 | speed-up |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    path.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
