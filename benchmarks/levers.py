"""One lever at a time, on the validation split only: a recipe as it is and with each variant,
paired by seed, each run ``textrnn train --test none`` in a fresh process (the test split is never
read: this is for choosing).

    python benchmarks/levers.py --config configs/imdb_fast.toml --variant vat1=train.vat=1.0 --seeds 0

A variant is NAME=KEY=VALUE[,KEY=VALUE...]; the recipe as it is always runs too ("base"). Writes
benchmarks/results/levers-<date>.json (appended, after every run): per variant and seed the best and last
validation accuracy, each epoch's, the wall seconds, the machine and versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run(config: str, overrides: list[str], seed: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "textrnn", "train", "--config", config, "--test", "none", "--output", str(Path(out) / "run")]
        cmd += ["--quiet", "--set", f"train.seed={seed}"] + [a for o in overrides for a in ("--set", o)]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, timeout=4 * 3600)
        wall = time.perf_counter() - t0
        metrics = json.loads((Path(out) / "run" / "metrics.json").read_text())
    curve = [row.get("val_accuracy") for row in metrics["history"]]
    return {
        "seed": seed,
        "best_validation_accuracy": max(v for v in curve if v is not None),
        "last_validation_accuracy": curve[-1],
        "val_curve": curve,
        "wall_seconds": wall,
        "timings": metrics["timings"],
        "config": metrics["config"],
        "cpu": metrics["environment"]["cpu_features"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--no-base", action="store_true", help="skip the recipe as it is (already measured)")
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment

    variants = [] if args.no_base else [("base", [])]
    for v in args.variant:
        name, _, sets = v.partition("=")
        variants.append((name, sets.split(",")))
    env = dict(os.environ, TEXTRNN_IMDB=args.imdb, PYTHONPATH=str(REPO / "src"))
    date = dt.date.today().isoformat()
    path = Path(args.out) / f"levers-{date}.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    before = [] if previous is None else previous.get("experiments", [previous])
    experiment = {"date": date, "recipe": args.config, "environment": environment(), "runs": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, overrides in variants:
            r = {"variant": name, "overrides": overrides, **run(args.config, overrides, seed, env)}
            experiment["runs"].append(r)
            print(
                f"{name} seed {seed}: best val {r['best_validation_accuracy']:.4f}, curve {r['val_curve']}, {r['wall_seconds']:.0f} s",
                flush=True,
            )
            # written after every run: a series stopped midway keeps what it measured
            path.write_text(json.dumps({"experiments": before + [experiment]}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
