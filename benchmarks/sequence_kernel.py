"""The float32 inference kernel's two paths, side by side in one process: the sequence kernel (one
C call per layer and direction, the recurrent product computed in C) against the per-step path
(oneDNN's product, then one C call per time step) and PyTorch's own recurrent layer (what batches
of fewer than 16 texts ran before the sequence kernel), for the seed model and the default model on
IMDB-length texts, at batch sizes 1 (a server's single request) to 512 (bulk prediction).

    python benchmarks/sequence_kernel.py [--profiles as_is,no_bf16] [--repeats 5]

Each profile runs in a fresh process (no_bf16: TEXTRNN_CPU=avx2 and ONEDNN_MAX_CPU_ISA=AVX2, as an
AVX2 CPU without bfloat16 runs; the kernel is compiled with -mavx2 -mfma there). One core, the way
prediction runs each batch (one batch per core side by side). Random weights and token ids: the
arithmetic does not depend on what the numbers are. The figure per path is the median of
``--repeats`` timings, the two paths alternating. Writes benchmarks/results/sequence-kernel-<date>.json.
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
PROFILES = {"as_is": {}, "no_bf16": {"TEXTRNN_CPU": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
# name: (model settings, tokens per text): the seed model reads 200 tokens, the default 400
MODELS = {
    "seed": (dict(embedding_dim=128, hidden_size=64, bidirectional=False, pooling="last", dropout=0.0, embedding_dropout=0.0), 200),
    "default": (dict(embedding_dim=64, hidden_size=64, bidirectional=True, pooling="last+max+mean"), 400),
}
BATCHES = (1, 4, 16, 64, 512)


def measure(repeats: int) -> dict:
    """This process's figures: ms per batch on each path, per model and batch size."""
    import torch

    from textrnn import fastrnn
    from textrnn.config import ModelConfig
    from textrnn.models import RNNClassifier
    from textrnn.pipeline import environment
    from textrnn.runtime import denormals_flushed

    torch.set_num_threads(1)
    rows = []
    for name, (settings, tokens) in MODELS.items():
        torch.manual_seed(0)
        model = RNNClassifier(ModelConfig(**settings), 20_000, 1).eval()
        for batch in BATCHES:
            ids = torch.randint(1, 20_000, (batch, tokens))
            lengths = torch.full((batch,), tokens)
            reps = max(1, 256 // batch)  # calls per timing
            times: dict[str, list[float]] = {"sequence": [], "steps": [], "pytorch": []}
            with torch.inference_mode(), denormals_flushed():
                for _ in range(repeats):
                    for path, limit in (("sequence", 1 << 30), ("steps", 0), ("pytorch", 0)):
                        fastrnn.SEQUENCE_MAX_ROWS = limit
                        run = (lambda: model(ids, lengths)) if path == "pytorch" else (lambda: fastrnn.forward(model, ids, lengths))
                        run()  # warm: oneDNN builds its kernels
                        t = time.perf_counter()
                        for _ in range(reps):
                            run()
                        times[path].append((time.perf_counter() - t) / reps * 1000)
            seq, steps, plain = (statistics.median(times[k]) for k in ("sequence", "steps", "pytorch"))
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "tokens_per_text": tokens,
                    "sequence_ms": seq,
                    "steps_ms": steps,
                    "pytorch_ms": plain,
                    "speedup": steps / seq,
                    "speedup_over_pytorch": plain / seq,
                    "texts_per_s_one_core": {"sequence": batch / seq * 1000, "steps": batch / steps * 1000},
                    "timings_ms": times,
                }
            )
            print(
                f"{name:8} batch {batch:4}: sequence {seq:9.3f} ms, steps {steps:9.3f} ms ({steps / seq:.2f}x), "
                f"pytorch {plain:9.3f} ms ({plain / seq:.2f}x)",
                flush=True,
            )
    return {"environment": environment(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", default="as_is,no_bf16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(measure(args.repeats)))
        return 0
    result: dict = {"date": dt.date.today().isoformat(), "repeats": args.repeats, "profiles": {}}
    for profile in args.profiles.split(","):
        print(f"--- {profile}", flush=True)
        env = {**os.environ, **PROFILES[profile], "PYTHONPATH": str(REPO / "src")}
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        print("\n".join(line for line in done.stdout.splitlines() if not line.startswith("RESULT ")), flush=True)
        result["profiles"][profile] = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    path = Path(args.out) / f"sequence-kernel-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
