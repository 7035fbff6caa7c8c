"""Max pooling in training: by max's indices (models._max_over_time, a scatter backward) against
amax (a backward that compares every position with the maximum, counts ties and casts the mask),
on one training piece of the default model (forward and backward, one core, float32), in the CPU
profiles of speed.py, each in a fresh process. The two alternate within the process, ``--rounds``
times 5 steps each; the figure is the median ms of each and their ratio.

    python benchmarks/max_pool.py [--profiles as_is,no_bf16] [--rounds 16]

Writes benchmarks/results/max-pool-<date>.json (machine, versions, every timing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from training_kernel import PROFILES, _config, zipf_ids  # noqa: E402

# the default model's pieces of IMDB's batches (11 texts of 400 tokens) and a batch of 64 sentences
SHAPES = ((11, 400), (64, 24))


def measure(rounds: int) -> dict:
    import torch
    import torch.nn.functional as F

    from textrnn import models
    from textrnn.pipeline import environment
    from textrnn.runtime import flush_denormals

    torch.set_num_threads(1)
    flush_denormals()
    ways = {"amax": lambda x: x.amax(1), "max_indices": models._max_over_time}
    rows = []
    for B, T in SHAPES:
        torch.manual_seed(0)
        model = models.build_model(_config("default").model, 20_000, 2).train()
        model.embedding.sparse = True  # as the trainer's side-by-side pieces
        ids = zipf_ids(B * T, 20_000, torch.Generator().manual_seed(0)).view(B, T)
        lengths, y = torch.full((B,), T), torch.randint(0, 2, (B,)).float()
        params = list(model.parameters())

        def step():
            loss = F.binary_cross_entropy_with_logits(model(ids, lengths).squeeze(1), y)
            return torch.autograd.grad(loss, params)

        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(rounds):
            for name, way in ways.items():
                models._max_over_time = way
                step()
                t0 = time.perf_counter()
                for _ in range(5):
                    step()
                times[name].append((time.perf_counter() - t0) / 5 * 1e3)
        models._max_over_time = ways["max_indices"]
        ms = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"rows": B, "tokens": T, "ms": ms, "speedup": ms["amax"] / ms["max_indices"], "timings_ms": times})
        print(f"  piece {B} x {T}: amax {ms['amax']:.2f} ms, max indices {ms['max_indices']:.2f} ms: {rows[-1]['speedup']:.3f}x")
    return {"environment": environment(), "pieces": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default="as_is,no_bf16")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(REPO / "src"))
        print(json.dumps(measure(args.rounds)))
        return 0
    result: dict = {"date": dt.date.today().isoformat(), "what": __doc__.split("\n\n")[0], "rounds": args.rounds, "profiles": {}}
    for profile in args.profiles.split(","):
        print(f"--- {profile}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("TEXTRNN_CPU", "ONEDNN_MAX_CPU_ISA")}
        env.update(PROFILES[profile], PYTHONPATH=str(REPO / "src"))
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--rounds", str(args.rounds)], env=env, capture_output=True, text=True, check=True
        )
        print("\n".join(line for line in done.stdout.splitlines() if line.startswith("  ")), flush=True)
        result["profiles"][profile] = json.loads(done.stdout.strip().splitlines()[-1])
    path = Path(args.out) / f"max-pool-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
