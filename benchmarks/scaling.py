"""Scaling benchmark: training throughput of 1 process against 2 (torchrun, gloo, CPU) on one machine.

    TEXTRNN_IMDB=/work/shared/data python benchmarks/scaling.py [--limit 5000] [--epochs 1]

Three runs of ``textrnn train`` on the same seeded IMDB sample (``--limit``; 10% of it held out for
validation, no test set), one after the other, one thread per process:

- ``one_b64``:  1 process, batch 64                      (the per-process work of ``two_b64``)
- ``two_b64``:  2 processes (torchrun), batch 64 each = global batch 128
- ``one_b128``: 1 process, batch 128                     (the same global batch as ``two_b64``)

and a micro-benchmark of what DistributedDataParallel adds per step: the all-reduce of a gradient
the size of the model's, between 2 processes over gloo on loopback.

Throughput is the training tokens per second of the epoch (all processes together; the data
preparation and validation are not in it). Scaling efficiency = tokens/s with 2 processes /
(2 x tokens/s with 1 at the same per-process batch). Writes benchmarks/results/scaling-<date>.json.

On a 2-core machine shared with other work the figures are noisy: a second process only helps
when the second core is idle, so the efficiency measured here says more about the machine's load
than about the code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(n),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
    ]


def train(name: str, processes: int, batch_size: int, args, workdir: Path, env: dict) -> dict:
    out = workdir / name
    cli = [
        "train",
        "--train",
        "imdb:train",
        "--limit",
        str(args.limit),
        "--test",
        "none",
        "-o",
        str(out),
        "--quiet",
        "--set",
        f"train.epochs={args.epochs}",
        "--set",
        f"train.batch_size={batch_size}",
        "--set",
        "runtime.num_threads=1",
        "--set",
        "train.early_stopping_patience=none",
        "--set",
        f"train.seed={args.seed}",
    ]
    cmd = (torchrun(processes) + ["-m", "textrnn"] if processes > 1 else [sys.executable, "-m", "textrnn"]) + cli
    print("+", name, " ".join(cmd[1:]), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, timeout=3600)
    wall = time.perf_counter() - t
    m = json.loads((out / "metrics.json").read_text())
    epochs = m["history"]
    row = {
        "processes": processes,
        "batch_size_per_process": batch_size,
        "global_batch_size": batch_size * processes,
        "train_texts": m["data"]["train"],
        "tokens_per_s": [e["tokens_per_s"] for e in epochs],
        "epoch_seconds": [e["seconds"] for e in epochs],
        "val_accuracy": [e.get("val_accuracy") for e in epochs],
        "fit_seconds": m["timings"]["fit_seconds"],
        "wall_seconds": wall,
        "distributed": m.get("distributed"),
        "parameters": m["parameters"],
        "steps_per_epoch_per_process": -(-(-(-m["data"]["train"] // batch_size)) // processes),
    }
    row["median_tokens_per_s"] = sorted(row["tokens_per_s"])[len(epochs) // 2]
    print(
        f"  {row['median_tokens_per_s']:,.0f} tokens/s, epoch {row['epoch_seconds'][0]:.1f}s, "
        f"val accuracy {row['val_accuracy'][-1]:.3f}, wall {wall:.0f}s",
        flush=True,
    )
    return row


# ------------------------------------------------------------------- all-reduce micro-benchmark
def allreduce_worker(numel: int, out: str) -> None:
    """Run under torchrun: time all-reduces of ``numel`` float32 (one gradient of the model)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    t = torch.randn(numel)
    for _ in range(3):
        dist.all_reduce(t)
    times = []
    for _ in range(20):
        dist.barrier()
        s = time.perf_counter()
        dist.all_reduce(t)
        times.append(time.perf_counter() - s)
    times.sort()
    if dist.get_rank() == 0:
        Path(out).write_text(
            json.dumps(
                {"numel": numel, "megabytes": numel * 4 / 1e6, "median_ms": 1000 * times[len(times) // 2], "min_ms": 1000 * times[0]}
            )
        )
    dist.destroy_process_group()


def allreduce(numel: int, env: dict) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    subprocess.run(
        torchrun(2) + [str(Path(__file__).resolve()), "--allreduce-worker", str(numel), out],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )
    return json.loads(Path(out).read_text())


def environment() -> dict:
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment as textrnn_environment

    return textrnn_environment()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=5000, help="IMDB reviews sampled (10%% go to validation)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allreduce-worker", nargs=2, metavar=("NUMEL", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.allreduce_worker:
        allreduce_worker(int(args.allreduce_worker[0]), args.allreduce_worker[1])
        return
    if not os.environ.get("TEXTRNN_IMDB"):
        sys.exit("set TEXTRNN_IMDB to the IMDB archive (or its folder), e.g. TEXTRNN_IMDB=/work/shared/data")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="textrnn-scaling-") as tmp:
        work = Path(tmp)
        env.setdefault("TEXTRNN_CACHE_DIR", str(work / "cache"))  # a cold cache unless one is given
        result = {
            "benchmark": "scaling",
            "date": dt.date.today().isoformat(),
            "environment": environment(),
            "settings": {
                "data": f"imdb:train, --limit {args.limit} (seed {args.seed}), 10% validation",
                "epochs": args.epochs,
                "threads_per_process": 1,
                "backend": "gloo",
                "device": "cpu",
                "config": "textrnn defaults (BiLSTM 64, embedding 64, vocabulary 30,000, max_length 400)",
            },
            "runs": {},
        }
        # the first run also parses IMDB and tokenizes (not in its tokens/s); the order is fixed
        result["runs"]["one_b64"] = train("one_b64", 1, 64, args, work, env)
        result["runs"]["two_b64"] = train("two_b64", 2, 64, args, work, env)
        result["runs"]["one_b128"] = train("one_b128", 1, 128, args, work, env)
        result["allreduce"] = allreduce(result["runs"]["one_b64"]["parameters"], env)
        result["allreduce"]["what"] = "one all-reduce of every parameter's gradient (what DDP does per step), 2 processes, gloo, loopback"
    r = result["runs"]
    one, two, same_batch = r["one_b64"]["median_tokens_per_s"], r["two_b64"]["median_tokens_per_s"], r["one_b128"]["median_tokens_per_s"]
    steps_two = r["two_b64"]["epoch_seconds"][0] / r["two_b64"]["steps_per_epoch_per_process"]
    result["summary"] = {
        "tokens_per_s_1_process_b64": one,
        "tokens_per_s_2_processes_b64": two,
        "tokens_per_s_1_process_b128": same_batch,
        "speedup_2_vs_1": two / one,
        "scaling_efficiency_2_vs_1": two / (2 * one),
        "speedup_2_vs_1_same_global_batch": two / same_batch,
        "seconds_per_step_2_processes": steps_two,
        "allreduce_share_of_step": result["allreduce"]["median_ms"] / 1000 / steps_two,
        "note": "2 cores, shared with other work: noisy; efficiency here reflects the second core's availability",
    }
    result["seconds"] = time.time() - started
    out = HERE / "results" / f"scaling-{result['date']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    s = result["summary"]
    print(
        f"1 process: {one:,.0f} tokens/s; 2 processes: {two:,.0f} tokens/s (speedup {s['speedup_2_vs_1']:.2f}x, "
        f"efficiency {s['scaling_efficiency_2_vs_1']:.0%}); 1 process at batch 128: {same_batch:,.0f} tokens/s"
    )
    print(
        f"all-reduce of {result['allreduce']['megabytes']:.1f} MB: {result['allreduce']['median_ms']:.1f} ms "
        f"({s['allreduce_share_of_step']:.1%} of a {s['seconds_per_step_2_processes']:.2f}s step)"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
