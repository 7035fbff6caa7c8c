"""Accuracy recipes on IMDB, several seeds, wall time of the whole run (issue 4).

    python benchmarks/accuracy.py [--recipes imdb_fast,default] [--seeds 0,1,2] [--imdb PATH]

Each run is ``textrnn train --config configs/<recipe>.toml --set train.seed=S`` in a fresh process
with an empty cache, so its wall time holds everything: parsing the archive, tokenizing, any
word2vec training, the classifier's training and the one evaluation of the test split (the
settings were chosen on the validation split; see each recipe's header). Writes
benchmarks/results/accuracy-<date>.json: one entry per recipe with ``test_accuracy`` and
``wall_seconds`` (one value per seed), their mean and spread, config and versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run(recipe: str, seed: int, imdb: str) -> dict:
    config = REPO / "configs" / f"{recipe}.toml"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TEXTRNN_IMDB": imdb, "TEXTRNN_CACHE_DIR": str(Path(tmp) / "cache"), "PYTHONPATH": str(REPO / "src")}
        argv = [sys.executable, "-m", "textrnn", "train", "--output", str(Path(tmp) / "run"), "--quiet", "--set", f"train.seed={seed}"]
        if config.exists():
            argv += ["--config", str(config)]
        print("+", " ".join(argv[1:]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{recipe} seed {seed} failed:\n{proc.stderr}")
        m = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {
        "seed": seed,
        "test_accuracy": m["test_accuracy"],
        "validation_accuracy": m["validation"]["accuracy"],
        "wall_seconds": wall,
        "timings": m["timings"],
        "epochs_run": len(m["history"]),
        "best_epoch": next((h["epoch"] for h in m["history"] if h.get("best")), None),
        "config": m["config"],
        "environment": m["environment"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="imdb_fast")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    date = dt.date.today().isoformat()
    path = Path(args.out) / f"accuracy-{date}.json"
    result = json.loads(path.read_text()) if path.exists() else {"date": date}
    for recipe in args.recipes.split(","):
        runs = [run(recipe, int(s), args.imdb) for s in args.seeds.split(",")]
        acc = [r["test_accuracy"] for r in runs]
        wall = [r["wall_seconds"] for r in runs]
        result[recipe] = {
            "recipe": f"configs/{recipe}.toml",
            "seeds": [r["seed"] for r in runs],
            "test_accuracy": acc,
            "wall_seconds": wall,
            "test_accuracy_mean": statistics.mean(acc),
            "test_accuracy_stdev": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "wall_seconds_mean": statistics.mean(wall),
            "wall_seconds_max": max(wall),
            "runs": runs,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(
            f"{recipe}: test accuracy {statistics.mean(acc):.4f} ± {result[recipe]['test_accuracy_stdev']:.4f} "
            f"({', '.join(f'{a:.4f}' for a in acc)}), wall {statistics.mean(wall):.0f}s (max {max(wall):.0f}s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
