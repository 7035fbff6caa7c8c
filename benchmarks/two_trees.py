"""Two versions of textrnn's source, one training epoch each on SST-5's training file with the
default settings (3 members, adversarial training: what the small sets decide), alternating in fresh
processes: the speed of a change that keeps the arithmetic (or changes only its rounding).

    git worktree add /tmp/before <commit>
    python benchmarks/two_trees.py --before /tmp/before --label "what changed" [--rounds 3] [--suffix -x]

``--before`` and ``--after`` (default: this checkout) are repository roots; each run imports textrnn
from that root's ``src``. The figures are the epoch's training seconds (history's ``seconds``:
batches only) and the whole fit's, medians over ``--rounds``, and their ratio before / after.
Writes benchmarks/results/two-trees-<date><suffix>.json with the machine, the versions and both commits.
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
SENTENCES = REPO.parent / "shared" / "data" / "sentences"

EPOCH = """
import csv, json, time, textrnn
from textrnn import TextClassifier, pipeline
rows = list(csv.DictReader(open(%r)))
clf = TextClassifier(epochs=1, seed=0)
t = time.perf_counter()
clf.fit([r["sentence"] for r in rows], [r["sentiment"] for r in rows], progress=False)
out = {"fit_seconds": time.perf_counter() - t, "epoch_seconds": clf.history_[0]["seconds"], "loss": clf.history_[0]["loss"]}
print(json.dumps({**out, "environment": pipeline.environment()}))
"""


def commit(root: Path) -> str:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def run(root: Path, train: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    done = subprocess.run([sys.executable, "-c", EPOCH % str(train)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, type=Path)
    ap.add_argument("--after", default=REPO, type=Path)
    ap.add_argument("--label", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sentences", default=str(SENTENCES))
    ap.add_argument("--suffix", default="")
    args = ap.parse_args(argv)
    train = Path(args.sentences) / "sst5" / "train.csv"
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name in ("before", "after"):
            runs[name].append(run(getattr(args, name), train))
            row = runs[name][-1]
            print(f"round {r + 1} {name}: epoch {row['epoch_seconds']:.2f} s, fit {row['fit_seconds']:.2f} s, loss {row['loss']:.5f}")
    median = {name: {k: statistics.median(x[k] for x in rows) for k in ("epoch_seconds", "fit_seconds")} for name, rows in runs.items()}
    ratio = {k: median["before"][k] / median["after"][k] for k in ("epoch_seconds", "fit_seconds")}
    print(f"medians: before {median['before']}, after {median['after']}; before / after {ratio}")
    environment = runs["after"][-1]["environment"]
    for rows in runs.values():
        for x in rows:
            x.pop("environment")
    out = HERE / "results" / f"two-trees-{dt.date.today().isoformat()}{args.suffix}.json"
    record = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "label": args.label,
        "before": commit(args.before),
        "after": commit(args.after),
        "config": {"data": "SST-5 train.csv", "settings": "TextClassifier(epochs=1, seed=0): the defaults", "rounds": args.rounds},
        "environment": environment,
        "median": median,
        "before_over_after": ratio,
        "runs": runs,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
