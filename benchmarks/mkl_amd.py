"""MKL's kernels on a CPU that is not Intel's (src/textrnn/mkl.py): float32 products and a training
epoch with MKL as textrnn sets it (its AVX2 kernels) and as MKL leaves itself (TEXTRNN_MKL_VENDOR=keep).

    python benchmarks/mkl_amd.py [--rounds 3] [--sentences PATH]

Each measurement runs in a fresh process (MKL picks its kernels once, at its first product), the two
settings alternating, ``--rounds`` times; the figures are medians. The products are those of the
default model on one core: the input projection of a batch (rows x 64 x 256), its gradients, the
recurrent product; the epoch is one epoch of the defaults on SST-5's training file (3 members,
adversarial training), both cores. Writes benchmarks/results/mkl-amd-<date>.json.
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
SHAPES = [(3200, 64, 256), (64, 3200, 256), (3200, 256, 64), (64, 64, 256), (512, 128, 512)]

PRODUCTS = """
import json, time, torch, textrnn
from textrnn import mkl
torch.set_num_threads(1)
out = {"mkl": mkl.status()}
for m, k, n in %r:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3): torch.mm(a, b)
    t, reps = time.perf_counter(), 0
    while time.perf_counter() - t < 0.5: torch.mm(a, b); reps += 1
    out[f"{m}x{k}x{n}"] = 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9
print(json.dumps(out))
"""

EPOCH = """
import csv, json, time, textrnn
from textrnn import TextClassifier, mkl
rows = list(csv.DictReader(open(%r)))
clf = TextClassifier(epochs=1, seed=0)
t = time.perf_counter()
clf.fit([r["sentence"] for r in rows], [r["sentiment"] for r in rows], progress=False)
print(json.dumps({"mkl": mkl.status(), "epoch_seconds": time.perf_counter() - t, "history": clf.history_}))
"""


def run(code: str, keep: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    if keep:
        env["TEXTRNN_MKL_VENDOR"] = "keep"
    else:
        env.pop("TEXTRNN_MKL_VENDOR", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sentences", default=str(SENTENCES))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment

    runs: dict[str, list[dict]] = {"avx2": [], "keep": []}
    epochs: dict[str, list[dict]] = {"avx2": [], "keep": []}
    for r in range(args.rounds):
        for name in ("keep", "avx2") if r % 2 else ("avx2", "keep"):
            runs[name].append(run(PRODUCTS % (SHAPES,), name == "keep"))
            epochs[name].append(run(EPOCH % (str(Path(args.sentences) / "sst5" / "train.csv"),), name == "keep"))
            print(f"round {r} {name}: {runs[name][-1]} epoch {epochs[name][-1]['epoch_seconds']:.1f} s", flush=True)
    summary = {}
    for shape in (f"{m}x{k}x{n}" for m, k, n in SHAPES):
        fast, slow = (statistics.median(x[shape] for x in runs[k]) for k in ("avx2", "keep"))
        summary[shape] = {"gflops_avx2": round(fast, 1), "gflops_keep": round(slow, 1), "ratio": round(fast / slow, 2)}
    fast, slow = (statistics.median(e["epoch_seconds"] for e in epochs[k]) for k in ("avx2", "keep"))
    summary["sst5_epoch"] = {"seconds_avx2": round(fast, 1), "seconds_keep": round(slow, 1), "speedup": round(slow / fast, 2)}
    result = {
        "date": dt.date.today().isoformat(),
        "what": __doc__.split("\n\n")[0],
        "environment": environment(),
        "mkl_states": {k: runs[k][0]["mkl"] for k in runs},
        "summary": summary,
        "products": runs,
        "epochs": epochs,
    }
    path = HERE / "results" / f"mkl-amd-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
