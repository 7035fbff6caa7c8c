"""Does a set's own dev file serve better as the validation set than a 10% split of its training
file? Estimated on the dev file alone, so that no test file is read:

the dev file is cut in two seeded halves A and B.
  split:  ``textrnn train`` as the defaults run it (10% of the training file held out to pick the
          epoch), then evaluated on A and on B;
  dev:    every training text trained on, half A picking the epoch, evaluated on B; and the other
          way round.
Both give one accuracy over the whole dev file (A's and B's sentences, each judged by a model that
did not choose on it), per seed.

    python benchmarks/dev_validation.py --sets sst5 --seeds 0,1,2

Writes benchmarks/results/dev-validation-<date>.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from defaults import REPO, SENTENCES, SETS  # noqa: E402


def halves(dev: Path, out: Path, seed: int = 0) -> tuple[Path, Path, int, int]:
    delim = "\t" if dev.suffix == ".tsv" else ","
    with dev.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=delim))
    header, body = rows[0], rows[1:]
    random.Random(seed).shuffle(body)
    cut = len(body) // 2
    paths = []
    for name, part in (("a", body[:cut]), ("b", body[cut:])):
        p = out / f"dev-{name}{dev.suffix}"
        with p.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerow(header)
            w.writerows(part)
        paths.append(p)
    return paths[0], paths[1], cut, len(body) - cut


def train(args: list[str], out: Path, env: dict) -> tuple[dict, float]:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "textrnn", "train", "--output", str(out), "--quiet", *args]
    subprocess.run(cmd, env=env, check=True, timeout=3600)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - t0


def evaluate(model: Path, data: Path, cols: list[str], env: dict) -> float:
    cmd = [sys.executable, "-m", "textrnn", "evaluate", str(model), "--data", str(data), *cols, "--format", "json"]
    res = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(res.stdout)["accuracy"]


def one(name: str, seed: int, root: Path, tmp: Path, env: dict) -> dict:
    train_file, dev, _, text_col, label_col, _ = SETS[name]
    a, b, na, nb = halves(root / dev, tmp)
    cols = ["--text-column", text_col, "--label-column", label_col]
    base = ["--train", str(root / train_file), *cols, "--set", f"train.seed={seed}"]
    m, wall = train([*base, "--test", "none"], tmp / "split", env)
    split = (na * evaluate(tmp / "split" / "model", a, cols, env) + nb * evaluate(tmp / "split" / "model", b, cols, env)) / (na + nb)
    row = {"set": name, "seed": seed, "split": {"dev_accuracy": split, "wall_seconds": wall, "decided": m.get("decided")}}
    accs, walls, curves = [], [], []
    for val, test, n in ((a, b, nb), (b, a, na)):
        m, wall = train([*base, "--validation", str(val), "--test", str(test)], tmp / f"dev-{val.stem}", env)
        accs.append(n * m["test_accuracy"])
        walls.append(wall)
        curves.append([r.get("val_accuracy") for r in m["history"]])
    row["dev"] = {"dev_accuracy": sum(accs) / (na + nb), "wall_seconds": walls, "val_curves": curves}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="sst5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sentences", default=str(SENTENCES))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment

    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    rows = []
    path = Path(args.out) / f"dev-validation-{dt.date.today().isoformat()}.json"
    for name in args.sets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                r = one(name, seed, Path(args.sentences), Path(tmp), env)
            rows.append(r)
            print(
                f"{name} seed {seed}: split {100 * r['split']['dev_accuracy']:.2f}, dev as validation {100 * r['dev']['dev_accuracy']:.2f}"
            )
            summary = {
                n: {k: statistics.mean(100 * x[k]["dev_accuracy"] for x in rows if x["set"] == n) for k in ("split", "dev")}
                for n in dict.fromkeys(x["set"] for x in rows)
            }
            result = {"date": dt.date.today().isoformat(), "environment": environment(), "summary": summary, "runs": rows}
            path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
