"""Would an ensemble whose members each hold out a different validation part beat one whose
members share it? An estimate before building it, on a set's dev file (never its test file).

Today ``model.members`` 3 trains three models side by side on the same 90% of the training
texts, each choosing its best epoch on the same 10%. Members that each hold out their own 10%
would see, together, every training text, and err more differently. This script trains single
models (``members=1``, every other setting at its default) through the Python API and averages
their logits on the dev file, for groups of three model seeds:

- shared: the three models hold out the split of the group's first seed (today's ensemble, except
  that its members train one after another on their own batch orders);
- own: each model holds out the split of its own seed.

    python benchmarks/fold_members.py --set sst5 --groups 2

Writes benchmarks/results/fold-members-<date>.json: per group and kind the dev accuracy of the
average and of each model, with the machine and versions.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from defaults import SENTENCES, SETS  # noqa: E402
from textrnn import TextClassifier  # noqa: E402
from textrnn.datasets import train_validation_split  # noqa: E402
from textrnn.pipeline import environment  # noqa: E402


def read(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    return [r[text_col] for r in rows], [r[label_col] for r in rows]


def one_model(texts: list[str], labels: list, split_seed: int, seed: int, dev: tuple[list[str], list]) -> dict:
    train, val = train_validation_split(texts, labels, 0.1, split_seed)
    t0 = time.perf_counter()
    clf = TextClassifier(members=1, seed=seed).fit(train.texts, train.labels, validation_data=(val.texts, val.labels), progress=False)
    logits = clf.decision_function(dev[0])
    order = [clf.classes_.index(c) for c in sorted(clf.classes_)]
    return {"split_seed": split_seed, "seed": seed, "seconds": time.perf_counter() - t0, "logits": logits[:, order]}


def accuracy(logits: np.ndarray, dev_labels: list, classes: list) -> float:
    return float(np.mean(np.array(classes)[logits.argmax(1)] == np.array(dev_labels)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="sst5", choices=[k for k, v in SETS.items() if v[1]])
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--sentences", default=str(SENTENCES))
    args = ap.parse_args(argv)
    train_file, dev_file, _, text_col, label_col, _ = SETS[args.set]
    root = Path(args.sentences)
    texts, labels = read(root / train_file, text_col, label_col)
    dev = read(root / dev_file, text_col, label_col)
    classes = sorted(set(labels))
    groups = []
    for g in range(args.groups):
        seeds = [3 * g, 3 * g + 1, 3 * g + 2]
        group = {"seeds": seeds}
        for kind, splits in (("shared", [seeds[0]] * 3), ("own", seeds)):
            models = [one_model(texts, labels, s, seed, dev) for s, seed in zip(splits, seeds)]
            mean = np.mean([m["logits"] for m in models], axis=0)
            group[kind] = {
                "split_seeds": splits,
                "average_dev_accuracy": accuracy(mean, dev[1], classes),
                "single_dev_accuracy": [accuracy(m["logits"], dev[1], classes) for m in models],
                "seconds": [round(m["seconds"], 1) for m in models],
            }
            print(
                f"group {g} {kind}: average {100 * group[kind]['average_dev_accuracy']:.2f}, singles "
                f"{[round(100 * a, 2) for a in group[kind]['single_dev_accuracy']]}",
                flush=True,
            )
        groups.append(group)
    result = {"date": dt.date.today().isoformat(), "set": args.set, "environment": environment(), "groups": groups}
    path = HERE / "results" / f"fold-members-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
