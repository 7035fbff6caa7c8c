"""runtime.micro_batch_tokens for the float32 training kernel: one IMDB epoch of ``textrnn train``
(a fresh process each, warm data cache) in pieces of 6000 tokens against one piece per core
(``none``), alternating ``--repeats`` times, for the seed recipe (no embedding dropout: each
distinct word of a piece is projected once, shared across its texts) and the default model (a
dropout mask per text: no word shared across texts), in float32 under TEXTRNN_CPU=avx2 and as the
CPU is (``runtime.precision = "float32"``). The figure is each setting's median tokens/s an epoch
and their ratio.

    python benchmarks/piece_tokens.py [--imdb ../shared/data] [--repeats 3]

Writes benchmarks/results/piece-tokens-<date>.json (machine, versions, every epoch's figures).
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROFILES = {"no_bf16": {"TEXTRNN_CPU": "avx2"}, "as_is": {}}
MODELS = {"seed": ["--config", str(REPO / "configs" / "seed.toml")], "default": []}
SETTINGS = ("6000", "none")


def epoch(profile: str, model: str, setting: str, imdb: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TEXTRNN_CPU"}
    env.update(PROFILES[profile], PYTHONPATH=str(REPO / "src"))
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "textrnn", "train", *MODELS[model], "--imdb-path", imdb, "--test", "none", "--quiet", "-o", out]
        for s in ("train.epochs=1", "runtime.precision=float32", f"runtime.micro_batch_tokens={setting}"):
            cmd += ["--set", s]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    row = metrics["history"][0]
    return {
        "tokens_per_s": row["tokens_per_s"],
        "seconds": row["seconds"],
        "val_accuracy": row["val_accuracy"],
        "env": metrics["environment"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profiles", default="no_bf16,as_is")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    result: dict = {"date": dt.date.today().isoformat(), "what": __doc__.split("\n\n")[0], "repeats": args.repeats, "profiles": {}}
    for profile in args.profiles.split(","):
        rows = {}
        for model in MODELS:
            runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
            for _ in range(args.repeats):
                for setting in SETTINGS:
                    runs[setting].append(epoch(profile, model, setting, args.imdb))
            med = {s: statistics.median(r["tokens_per_s"] for r in runs[s]) for s in SETTINGS}
            rows[model] = {"median_tokens_per_s": med, "ratio_none_over_6000": med["none"] / med["6000"], "runs": runs}
            print(f"{profile} {model}: 6000 {med['6000']:,.0f}, per core {med['none']:,.0f} tokens/s: {med['none'] / med['6000']:.3f}x")
        env = rows["seed"]["runs"]["6000"][0]["env"]
        result["profiles"][profile] = {"environment": env, "models": rows}
    path = Path(args.out) / f"piece-tokens-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
