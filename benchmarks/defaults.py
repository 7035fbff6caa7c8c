"""The defaults on data other than IMDB: ``textrnn train`` with nothing but the data flags, on the
four development sets of ``../shared/data/sentences`` (SST-2, SST-5, SUBJ, MPQA) and on IMDB, as
a user runs it (a fresh process each), for several seeds.

    python benchmarks/defaults.py                       # the final measurement: test split, 3 seeds
    python benchmarks/defaults.py --choose --set train.epochs=10 --sets sst5,subj --seeds 0

``--choose`` never reads a test file: SST's dev files take the test's place and SUBJ and MPQA
report only their validation split (10% of the training file). Settings are chosen that way;
the final run reads each test file once per seed.

Writes benchmarks/results/defaults-<date>.json (or defaults-choose-<date>.json, appended): per
set and seed the test (or dev) accuracy, the validation accuracy, the wall seconds of the whole
command, the epochs run and the settings the defaults decided, with the machine and versions.
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
SENTENCES = REPO.parent / "shared" / "data" / "sentences"

# name: (train, dev or None, test, text column, label column, Kim 2014 CNN-rand test accuracy)
SETS = {
    "sst2": ("sst2/train.tsv", "sst2/dev.tsv", "sst2/test.tsv", "text", "label", 82.7),
    "sst5": ("sst5/train.csv", "sst5/dev.csv", "sst5/test.csv", "sentence", "sentiment", 45.0),
    "subj": ("subj/train.jsonl", None, "subj/test.jsonl", "text", "kind", 89.6),
    "mpqa": ("mpqa/train.csv", None, "mpqa/test.csv", "text", "polarity", 83.4),
    "imdb": ("imdb:train", None, "imdb:test", "text", "label", None),
}


def command(name: str, root: Path, choose: bool, seed: int, overrides: list[str], output: Path) -> list[str]:
    train, dev, test, text_col, label_col, _ = SETS[name]
    held_out = (dev if choose else test) if name != "imdb" or not choose else None
    cmd = [sys.executable, "-m", "textrnn", "train", "--output", str(output), "--quiet", "--set", f"train.seed={seed}"]
    if name == "imdb":
        cmd += ["--test", held_out or "none"]
    else:
        cmd += ["--train", str(root / train), "--test", str(root / held_out) if held_out else "none"]
        cmd += ["--text-column", text_col, "--label-column", label_col]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def run(name: str, root: Path, choose: bool, seed: int, overrides: list[str], env: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = command(name, root, choose, seed, overrides, Path(out) / "run")
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, timeout=3600)
        wall = time.perf_counter() - t0
        metrics = json.loads((Path(out) / "run" / "metrics.json").read_text())
    history = metrics["history"]
    best = next((row["epoch"] for row in history if row.get("best")), len(history))
    row = {
        "set": name,
        "seed": seed,
        "held_out": "dev" if choose and SETS[name][1] else ("none" if choose else "test"),
        "held_out_accuracy": metrics.get("test_accuracy"),
        "validation_accuracy": metrics.get("validation", {}).get("accuracy"),
        "wall_seconds": wall,
        "timings": metrics["timings"],
        "epochs_run": len(history),
        "best_epoch": best,
        "val_curve": [row.get("val_accuracy") for row in history],
        "decided": metrics.get("decided"),
        "config": {k: metrics["config"][k] for k in ("text", "model", "train")},
        "cpu": metrics["environment"]["cpu_features"],
    }
    return row


def summary(rows: list[dict]) -> dict:
    out = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == name]
        acc = [r["held_out_accuracy"] for r in rs if r["held_out_accuracy"] is not None]
        val = [r["validation_accuracy"] for r in rs if r["validation_accuracy"] is not None]
        out[name] = {
            "held_out": rs[0]["held_out"],
            "mean_held_out_accuracy": statistics.mean(acc) if acc else None,
            "mean_validation_accuracy": statistics.mean(val) if val else None,
            "median_wall_seconds": statistics.median(r["wall_seconds"] for r in rs),
            "max_wall_seconds": max(r["wall_seconds"] for r in rs),
            "kim_cnn_rand": SETS[name][5],
            "target": SETS[name][5] - 1 if SETS[name][5] else 89.0,
            "seeds": [r["seed"] for r in rs],
        }
    return out


def write(args: argparse.Namespace, rows: list[dict], environment: dict, earlier: list[dict]) -> tuple[Path, dict]:
    """Write the runs so far: the final measurement's file, or the choice's series of
    configurations (``earlier``, read when this one started) with this one's runs appended."""
    result = {
        "date": dt.date.today().isoformat(),
        "label": args.label,
        "overrides": args.overrides,
        "phase": "choose (dev or validation only)" if args.choose else "final (test split, once per seed)",
        "environment": environment,
        "summary": summary(rows),
        "runs": rows,
    }
    if args.choose:
        result = {"experiments": earlier + [result]}
    path = results_path(args)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path, result


def results_path(args: argparse.Namespace) -> Path:
    return Path(args.out) / f"defaults-{'choose-' if args.choose else ''}{dt.date.today().isoformat()}{args.suffix}.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="sst2,sst5,subj,mpqa,imdb")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--choose", action="store_true", help="dev files or validation only: no test file is read")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE", help="passed to textrnn train")
    ap.add_argument("--sentences", default=str(SENTENCES))
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--label", default="", help="a name for this configuration in the results file")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--suffix", default="", help="appended to the results file's name (e.g. -ties), so an earlier file stays")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment

    env = dict(os.environ, TEXTRNN_IMDB=args.imdb, PYTHONPATH=str(REPO / "src"))
    machine = environment()
    earlier: list[dict] = []
    if args.choose and results_path(args).exists():  # the choice is a series of configurations: keep them all
        previous = json.loads(results_path(args).read_text())
        earlier = previous.get("experiments", [previous])
    rows: list[dict] = []
    for name in args.sets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            r = run(name, Path(args.sentences), args.choose, seed, args.overrides, env)
            rows.append(r)
            acc, val = r["held_out_accuracy"], r["validation_accuracy"]  # None without a test file or a validation split
            print(
                f"{args.label or '-'} {name} seed {seed}: {r['held_out']} {acc if acc is None else round(100 * acc, 2)}, "
                f"val {val if val is None else round(100 * val, 2)}, {r['wall_seconds']:.0f} s, epochs {r['epochs_run']} "
                f"(best {r['best_epoch']}), val curve {[round(v, 3) for v in r['val_curve'] if v is not None]}",
                flush=True,
            )
            path, result = write(args, rows, machine, earlier)  # after every run: a stopped series keeps what it measured
    print(json.dumps(result["summary"] if "summary" in result else result["experiments"][-1]["summary"], indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
