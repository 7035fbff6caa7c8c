"""Multi-label end to end on a real set derived from IMDB's own annotations.

IMDB's archive names every review ``ID_RATING.txt`` with the reviewer's star rating (1-4 negative,
7-10 positive). From that rating, not from the text, each review gets its label set: its polarity,
``pos`` or ``neg``, and ``strong`` when the rating is at an end of the scale (1-2 or 9-10). So a
text carries one or two of three labels, the split is the archive's, and nothing is guessed.

    python benchmarks/multilabel.py [--imdb PATH] [--limit N]

Writes the derived JSONL files to a temporary folder (never into the project), runs
``textrnn train`` on them with the defaults (a fresh process), and writes
benchmarks/results/multilabel-<date>.json: the run's multi-label test metrics, thresholds, time,
the label counts, the machine and versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NAME = re.compile(r"aclImdb/(train|test)/(pos|neg)/\d+_(\d+)\.txt$")


def label_set(polarity: str, rating: int) -> list[str]:
    return [polarity] + (["strong"] if rating in (1, 2, 9, 10) else [])


def derive(archive: Path, folder: Path, limit: int | None, seed: int = 0) -> dict:
    """train.jsonl and test.jsonl in ``folder``; the label counts of each."""
    rows: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(archive) as tar:
        for member in tar:
            m = NAME.search(member.name)
            if not m or not member.isfile():
                continue
            f = tar.extractfile(member)
            assert f is not None
            split, polarity, rating = m.group(1), m.group(2), int(m.group(3))
            rows[split].append({"text": f.read().decode("utf-8"), "labels": label_set(polarity, rating)})
    counts = {}
    for split, items in rows.items():
        items.sort(key=lambda r: r["text"])  # the archive's order, made independent of the tar's
        if limit:
            items = random.Random(seed).sample(items, min(limit, len(items)))
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
        counts[split] = {"texts": len(items), **Counter(label for r in items for label in r["labels"])}
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--limit", type=int, help="a seeded sample of N reviews from each split (quick runs)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    archive = Path(args.imdb)
    archive = archive / "aclImdb_v1.tar.gz" if archive.is_dir() else archive
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        counts = derive(archive, folder, args.limit)
        derive_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "textrnn", "train", "--train", str(folder / "train.jsonl"), "--test", str(folder / "test.jsonl")]
        cmd += ["--label-column", "labels", "--output", str(folder / "run"), "--quiet"]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        t1 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, timeout=3600)
        wall = time.perf_counter() - t1
        metrics = json.loads((folder / "run" / "metrics.json").read_text())
    test = metrics["test"]
    keep = ("accuracy", "hamming_loss", "f1_micro", "f1_macro", "precision_micro", "recall_micro", "loss", "thresholds", "classes")
    result = {
        "date": dt.date.today().isoformat(),
        "data": "IMDB v1.0 (Maas et al. 2011), label sets from each review's star rating: polarity + 'strong' at 1-2 or 9-10",
        "label_counts": counts,
        "derive_seconds": derive_s,
        "train_wall_seconds": wall,
        "timings": metrics["timings"],
        "test": {k: test[k] for k in keep},
        "per_label": {c: {k: test.get(f"{k}_{c}") for k in ("precision", "recall", "f1", "roc_auc", "support")} for c in test["classes"]},
        "validation_f1_micro": metrics.get("validation", {}).get("f1_micro"),
        "decided": metrics.get("decided"),
        "config": metrics["config"],
        "environment": environment(),
        "limit": args.limit,
    }
    path = Path(args.out) / f"multilabel-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("label_counts", "train_wall_seconds", "test", "per_label")}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
