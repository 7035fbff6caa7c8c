"""The pipeline's figures on full IMDB (25,000 train / 25,000 test), recorded for issue 2:

1. the default ``textrnn train`` (test accuracy, wall time);
2. ``textrnn compare --recipe configs/seed.toml --recipe configs/imdb_fast.toml --recipe configs/imdb_best.toml``: the default RNN,
   the order-blind MLP, the course's model and the fast and best recipes on the same data (the seed
   recipe's row is also recorded under ``seed``).

    python benchmarks/pipeline.py [--imdb PATH] [--only default,compare]

Each job runs as the CLI would, in a fresh process, one after the other. The test split is
evaluated once per job, after the best epoch was chosen on the validation split. Writes
benchmarks/results/pipeline-<date>.json with config, seed, versions and machine per job.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

JOBS = {
    "default": ["train"],
    "compare": [
        "compare",
        "--recipe",
        str(REPO / "configs" / "seed.toml"),
        "--recipe",
        str(REPO / "configs" / "imdb_fast.toml"),
        "--recipe",
        str(REPO / "configs" / "imdb_best.toml"),
    ],
}


def run_job(name: str, out_dir: Path, env: dict) -> dict:
    argv = [sys.executable, "-m", "textrnn", *JOBS[name], "--output", str(out_dir / name), "--quiet"]
    print("+", " ".join(argv[1:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    print(proc.stdout, flush=True)
    if name == "compare":
        result = json.loads((out_dir / name / "compare.json").read_text())
        rows = {}
        for model in result["models"]:
            m = json.loads((out_dir / name / model / "metrics.json").read_text())
            rows[model] = {
                "test_accuracy": m["test_accuracy"],
                "validation_accuracy": m["validation"]["accuracy"],
                "fit_seconds": m["timings"]["fit_seconds"],
                "total_seconds": m["timings"]["total_seconds"],
                "epochs": len(m["history"]),
                "parameters": m["parameters"],
                "config": m["config"],
            }
        return {"wall_seconds": wall, "models": rows, "environment": result["environment"], "peak_rss_mb_max_child": rss}
    m = json.loads((out_dir / name / "metrics.json").read_text())
    return {
        "test_accuracy": m["test_accuracy"],
        "validation_accuracy": m["validation"]["accuracy"],
        "test": {k: m["test"][k] for k in ("loss", "accuracy", "f1_macro", "roc_auc")},
        "wall_seconds": wall,
        "timings": m["timings"],
        "history": m["history"],
        "parameters": m["parameters"],
        "vocab_size": m["vocab_size"],
        "seed": m["config"]["train"]["seed"],
        "config": m["config"],
        "environment": m["environment"],
        "peak_rss_mb_max_child": rss,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--only", default="default,compare")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    env = {**os.environ, "TEXTRNN_IMDB": args.imdb, "PYTHONPATH": str(REPO / "src")}
    date = dt.date.today().isoformat()
    path = Path(args.out) / f"pipeline-{date}.json"
    result = json.loads(path.read_text()) if path.exists() else {"date": date}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            result[name] = run_job(name, Path(tmp), env)
            if name == "compare":
                result["seed"] = {**result["compare"]["models"]["seed"], "recorded_by": "compare --recipe configs/seed.toml"}
            result["test_accuracy"] = result.get("default", {}).get("test_accuracy")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2))
    summary = {
        k: (v.get("test_accuracy"), round(v["wall_seconds"], 1))
        for k, v in result.items()
        if isinstance(v, dict) and "wall_seconds" in v and k != "compare"
    }
    if "compare" in result:
        summary.update({f"compare.{k}": (v["test_accuracy"], round(v["fit_seconds"], 1)) for k, v in result["compare"]["models"].items()})
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
