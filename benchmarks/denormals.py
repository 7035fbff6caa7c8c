"""Denormal floats and CPU training speed: the seed model and the default model trained one epoch
on IMDB-like generated texts (3,000 texts of 10-400 words from a 30,000-word vocabulary; no real
data needed), in float32, with denormals kept (the CPU's default) and flushed to zero
(``runtime.flush_denormals``, what textrnn does since 2026-11-29, and TensorFlow by default), each
in a fresh process, alternated, ``--repeats`` times; the CPU profiles of speed.py.

    python benchmarks/denormals.py [--repeats 2]

Writes benchmarks/results/denormals-<date>.json (machine, versions, every run) and prints the medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CHILD = r"""
import json, sys, time, numpy as np, torch
import textrnn
from textrnn import TextClassifier, runtime
from textrnn.config import Config
keep = sys.argv[2] == "keep"
if keep:  # what every run did before: the trainer now flushes in each thread it runs, so undo it there
    runtime.flush_denormals = lambda: torch.set_flush_denormal(False)
    import textrnn.trainer, textrnn.inference
    textrnn.trainer.flush_denormals = textrnn.inference.flush_denormals = runtime.flush_denormals
rng = np.random.default_rng(0)
words = [f"w{i}" for i in range(30000)]
texts = [" ".join(rng.choice(words, size=int(np.clip(rng.lognormal(5.2, 0.6), 10, 400)))) for _ in range(3000)]
labels = [int(x) for x in rng.integers(0, 2, 3000)]
base = Config.from_toml(sys.argv[3]) if sys.argv[1] == "seed" else Config()
cfg = base.override({"train.epochs": 1, "train.early_stopping_patience": None, "data.validation_split": 0.0,
                     "runtime.precision": "float32"})
clf = TextClassifier(cfg).fit(texts, labels, progress=False)
print(json.dumps({"tokens_per_s": clf.history_[-1]["tokens_per_s"], "seconds": clf.history_[-1]["seconds"],
                  "cpu": runtime.cpu_description()}))
"""


def run(model: str, mode: str, profile: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TEXTRNN_CPU", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
    }
    env.update({"PYTHONPATH": str(REPO / "src")}, **({"TEXTRNN_CPU": "avx2"} if profile == "no_bf16" else {}))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, mode, str(REPO / "configs" / "seed.toml")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", default="seed,default")
    ap.add_argument("--profiles", default="as_is,no_bf16")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment

    runs, summary = [], {}
    for profile in args.profiles.split(","):
        for model in args.models.split(","):
            for r in range(args.repeats):
                for mode in ("keep", "flush"):
                    res = run(model, mode, profile)
                    runs.append({"profile": profile, "model": model, "mode": mode, "round": r, **res})
                    print(f"{profile:8s} {model:8s} {mode:6s} {res['tokens_per_s']:>10,.0f} tokens/s", flush=True)
            med = {
                m: statistics.median(x["tokens_per_s"] for x in runs if (x["profile"], x["model"], x["mode"]) == (profile, model, m))
                for m in ("keep", "flush")
            }
            summary[f"{profile}/{model}"] = {**med, "ratio": med["flush"] / med["keep"]}
    date = dt.date.today().isoformat()
    result = {
        "date": date,
        "environment": environment(),
        "what": __doc__.split("\n\n")[0],
        "precision": "float32",
        "summary_tokens_per_s_median": summary,
        "runs": runs,
    }
    Path(args.out, f"denormals-{date}.json").write_text(json.dumps(result, indent=2))
    for k, v in summary.items():
        print(f"{k}: kept {v['keep']:,.0f}, flushed {v['flush']:,.0f} tokens/s: {v['ratio']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
