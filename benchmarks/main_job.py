"""The README's main job, timed per CPU profile: ``textrnn train --output DIR`` on IMDB with the
defaults, as a user runs it (a fresh process, a warm or cold cache as chosen), once on the CPU as
it is and once as an AVX2 CPU without bfloat16 would run it (``TEXTRNN_CPU=avx2``).

    python benchmarks/main_job.py [--imdb PATH] [--profiles as_is,no_bf16] [--cold]

Writes benchmarks/results/main-job-<date>.json: per profile the wall seconds of the whole command,
the run's own timings (data, training, test), the test accuracy, the precision that ran, the CPU.
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
PROFILE_ENV = {"as_is": {}, "no_bf16": {"TEXTRNN_CPU": "avx2"}}
CAPS = ("TEXTRNN_CPU", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def _precision(setting: str, native_bf16: bool) -> str:
    """What "auto" (or the setting) ran as: bfloat16 on a CPU with native bfloat16, else float32."""
    if setting == "auto":
        return "bfloat16" if native_bf16 else "float32"
    return setting


def run(profile: str, imdb: str, cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CAPS}
    env.update(PROFILE_ENV[profile], TEXTRNN_IMDB=imdb, TEXTRNN_CACHE_DIR=cache, PYTHONPATH=str(REPO / "src"))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "textrnn", "train", "--output", str(Path(out) / "run"), "--quiet"], env=env, check=True, timeout=3600
        )
        wall = time.perf_counter() - t0
        metrics = json.loads((Path(out) / "run" / "metrics.json").read_text())
    cpu = metrics["environment"]["cpu_features"]
    return {
        "profile": profile,
        "wall_seconds": wall,
        "timings": metrics["timings"],
        "test_accuracy": metrics["test_accuracy"],
        "validation_accuracy": metrics["validation"]["accuracy"],
        "precision": _precision(metrics["config"]["runtime"]["precision"], cpu["native_bf16"]),
        "cpu": cpu,
        "epochs": [{k: row[k] for k in ("epoch", "seconds", "tokens_per_s", "val_accuracy") if k in row} for row in metrics["history"]],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--profiles", default="as_is,no_bf16")
    ap.add_argument("--cold", action="store_true", help="a fresh cache for each run (parse and tokenize IMDB anew)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment

    runs = []
    with tempfile.TemporaryDirectory() as shared_cache:
        for profile in args.profiles.split(","):
            cache = tempfile.mkdtemp() if args.cold else shared_cache
            if not args.cold and not runs:  # warm the shared cache first: the figures are the warm run's
                run(profile, args.imdb, cache)
            runs.append(run(profile, args.imdb, cache))
            r = runs[-1]
            print(
                f"{profile}: {r['wall_seconds']:.0f} s, test accuracy {r['test_accuracy']:.4f}, {r['precision']}, {r['cpu']['class']}",
                flush=True,
            )
    date = dt.date.today().isoformat()
    result = {
        "date": date,
        "command": "textrnn train --output DIR (defaults, IMDB)",
        "cache": "cold" if args.cold else "warm",
        "environment": environment(),
        "runs": runs,
    }
    Path(args.out, f"main-job-{date}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
