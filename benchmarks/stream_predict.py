"""Streaming prediction benchmark: a million short texts through ``textrnn predict --output``.

    TEXTRNN_IMDB=/work/shared/data python benchmarks/stream_predict.py [--rows 1000000] [--model DIR]

Trains a small model on an IMDB sample (default architecture, 2,000 reviews, 1 epoch; or uses
``--model``), writes a CSV of ``--rows`` short texts (5 to 25 words from the model's vocabulary)
under /tmp, runs the CLI on it in a child process and samples, every quarter second, the child's
resident memory and the rows its progress file says are done. Records rows/s, the peak resident
memory (the child's own ``ru_maxrss``) and the resident memory at 100k rows and at the end, to
show it stays flat. Writes benchmarks/results/stream-<date>.json. The generated files are deleted.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def child(argv: list[str], out: str) -> None:
    """The measured process: the real CLI, then its own peak resident memory."""
    from textrnn.cli import main

    code = main(argv)
    Path(out).write_text(json.dumps({"exit": code, "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(code)


def rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def make_texts(path: Path, rows: int, vocab: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = np.array(vocab, dtype=object)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            lengths = rng.integers(5, 26, size=n)
            picks = rng.integers(0, len(words), size=int(lengths.sum()))
            ends = np.cumsum(lengths)
            w.writerows((start + i, " ".join(words[picks[e - l : e]])) for i, (e, l) in enumerate(zip(ends, lengths)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--model", help="a trained model directory (default: train a small one on IMDB)")
    p.add_argument("--chunk-size", type=int, default=10_000)
    p.add_argument("--output-format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[1:], args.child[0])
        return
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with tempfile.TemporaryDirectory(prefix="textrnn-stream-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        env.setdefault("TEXTRNN_CACHE_DIR", str(tmp / "cache"))
        model = args.model
        if model is None:
            if not os.environ.get("TEXTRNN_IMDB"):
                sys.exit("set TEXTRNN_IMDB (to train the model) or pass --model")
            print("+ training a small model on 2,000 IMDB reviews", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "textrnn",
                    "train",
                    "--limit",
                    "2000",
                    "--test",
                    "none",
                    "--quiet",
                    "--set",
                    "train.epochs=1",
                    "-o",
                    str(tmp / "run"),
                ],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            model = str(tmp / "run" / "model")
        vocab = (Path(model) / "vocab.txt").read_text(encoding="utf-8").split("\n")[2:5002]
        source = tmp / "texts.csv"
        t = time.perf_counter()
        make_texts(source, args.rows, vocab, args.seed)
        print(f"+ wrote {args.rows:,} texts ({source.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f}s", flush=True)
        out = tmp / f"predictions.{args.output_format}"
        sidecar = out.with_name(out.name + ".progress.json")
        stats = tmp / "child.json"
        argv = [
            "predict",
            model,
            "--input",
            str(source),
            "--output",
            str(out),
            "--chunk-size",
            str(args.chunk_size),
            "--quiet",
            "--device",
            "cpu",
        ]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(stats), *argv]
        print("+ textrnn", " ".join(argv), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env)
        samples = []
        while proc.poll() is None:
            rss = rss_mb(proc.pid)
            try:
                rows = json.loads(sidecar.read_text())["rows_done"]
            except (OSError, ValueError, KeyError):
                rows = None
            if rss is not None:
                samples.append({"seconds": round(time.perf_counter() - t0, 2), "rows_done": rows, "rss_mb": round(rss, 1)})
            time.sleep(0.25)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"the prediction failed (exit {proc.returncode})")
        measured = json.loads(stats.read_text())
        out_mb = out.stat().st_size / 1e6
        input_mb = source.stat().st_size / 1e6
    with_rows = [s for s in samples if s["rows_done"] is not None]
    at_100k = next((s for s in with_rows if s["rows_done"] >= 100_000), None)
    last = with_rows[-1] if with_rows else None
    moving = [s for s in with_rows if s["rows_done"] > 0]
    steady = (
        (moving[-1]["rows_done"] - moving[0]["rows_done"]) / (moving[-1]["seconds"] - moving[0]["seconds"])
        if len(moving) > 1 and moving[-1]["seconds"] > moving[0]["seconds"]
        else None
    )
    import platform

    import torch

    result = {
        "benchmark": "stream_predict",
        "date": dt.date.today().isoformat(),
        "environment": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads_default": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {
            "rows": args.rows,
            "input": f"CSV, 5-25 words a text from the model's 5,000 commonest words, {input_mb:.0f} MB",
            "output_format": args.output_format,
            "output_mb": round(out_mb, 1),
            "chunk_size": args.chunk_size,
            "batch_size": 512,
            "model": "textrnn defaults (BiLSTM 64), trained on 2,000 IMDB reviews, 1 epoch" if args.model is None else args.model,
        },
        "rows_per_s": args.rows / seconds,
        "seconds": seconds,
        "seconds_include": "process start, model load, reading, writing",
        "rows_per_s_while_streaming": steady,
        "peak_rss_mb": measured["ru_maxrss_mb"],
        "rss_mb_at_100k_rows": at_100k and at_100k["rss_mb"],
        "rss_mb_at_last_sample": last and last["rss_mb"],
        "rows_at_last_sample": last and last["rows_done"],
        "samples": samples[:: max(1, len(samples) // 60)],
    }
    path = HERE / "results" / f"stream-{result['date']}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(
        f"{args.rows:,} rows in {seconds:.0f}s: {result['rows_per_s']:,.0f} rows/s; resident memory "
        f"{result['rss_mb_at_100k_rows']} MB at 100k rows, {result['rss_mb_at_last_sample']} MB at "
        f"{result['rows_at_last_sample']:,} rows, peak {result['peak_rss_mb']:.0f} MB"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
