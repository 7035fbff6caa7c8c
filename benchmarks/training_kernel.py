"""Float32 training: the C kernel (fastrnn.lstm_train) against PyTorch's own LSTM (oneDNN), for the
seed model and the default model, in the CPU profiles of speed.py (as_is; no_bf16: as an AVX2 CPU
without bfloat16 runs, TEXTRNN_CPU=avx2), each profile in a fresh process.

Four paths, alternating within one process (``models.training_kernel`` set four ways): the
kernel as installed (the first layer projects each distinct word once, of the batch, or of each
text where the embeddings pass through a dropout mask per text, where they are few enough:
fastrnn.DISTINCT_MAX_SHARE; with AVX-512 only the batch's), the kernel projecting distinct inputs
wherever they are few enough on any CPU, the kernel projecting every position, and PyTorch's
layer. Figures:
- one piece: forward and backward of one training piece on one core (16 texts of 200 tokens for
  the seed model, 11 of 400 for the default: the pieces the trainer cuts IMDB's batches into; and
  the default model on 64 sentences of 24 tokens), median ms over ``--repeats`` rounds of 5 steps;
- one epoch: ``TextClassifier.fit`` for one epoch on 6,000 generated texts (10-400 words, lengths
  log-normal as IMDB's, words drawn from a Zipf law over 30,000, as real text repeats its words; no
  real data needed), or with ``--imdb`` on 6,000 of IMDB's training reviews (real text repeats its
  words within a text more than the generated does), both cores, tokens per second.

    python benchmarks/training_kernel.py [--profiles as_is,no_bf16] [--repeats 5] [--tag NAME] [--imdb PATH]

Where the kernel does not run (lstm_train returns None: on an AVX-512 CPU when every position is
projected, or for the distinct words of each text), those columns are PyTorch's layer too, and
their ratio to PyTorch's shows the noise of the measurement.

Writes benchmarks/results/training-kernel-<date>[-tag].json (machine, versions, every timing).
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
# model, rows, tokens: the pieces the trainer cuts IMDB's batches into, and a batch of short sentences
PIECES = {"seed": ("seed", 16, 200), "default": ("default", 11, 400), "default_short": ("default", 64, 24)}
PATHS = ("kernel", "distinct", "per_position", "pytorch")


def _config(name: str):
    from textrnn.config import Config

    config = Config.from_toml(REPO / "configs" / "seed.toml") if name == "seed" else Config()
    # one model, no adversarial pass: what IMDB's size decides for the default ("auto")
    return config.override(
        {"model.members": 1, "train.adversarial": 0.0, "runtime.precision": "float32", "train.early_stopping_patience": None}
    )


def zipf_ids(n: int, vocab: int, generator) -> "torch.Tensor":  # noqa: F821
    import torch

    weights = 1.0 / torch.arange(1, vocab, dtype=torch.float64)
    return torch.multinomial(weights, n, replacement=True, generator=generator) + 1


def pieces(repeats: int) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from textrnn import models
    from textrnn.models import build_model
    from textrnn.runtime import flush_denormals

    kernel = models.training_kernel
    torch.set_num_threads(1)
    flush_denormals()
    rows = []
    for name, (config_name, B, T) in PIECES.items():
        torch.manual_seed(0)
        model = build_model(_config(config_name).model, 20_000, 2).train()
        model.embedding.sparse = True  # as the trainer's side-by-side pieces
        ids = zipf_ids(B * T, 20_000, torch.Generator().manual_seed(0)).view(B, T)
        lengths, y = torch.full((B,), T), torch.randint(0, 2, (B,)).float()
        params = list(model.parameters())

        def step():
            loss = F.binary_cross_entropy_with_logits(model(ids, lengths).squeeze(1), y)
            return torch.autograd.grad(loss, params)

        times: dict[str, list[float]] = {path: [] for path in PATHS}
        for _ in range(repeats):
            for path in times:
                models.training_kernel = _path(kernel, path)
                step()
                t0 = time.perf_counter()
                for _ in range(5):
                    step()
                times[path].append((time.perf_counter() - t0) / 5 * 1e3)
        models.training_kernel = kernel
        ms = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            {
                "model": name,
                "rows": B,
                "tokens": T,
                "distinct_words": int(ids.unique().numel()),
                "distinct_words_of_each_text": int(sum(row.unique().numel() for row in ids)),
                "ms": ms,
                "speedup": ms["pytorch"] / ms["kernel"],
                "speedup_over_per_position": ms["per_position"] / ms["kernel"],
                "distinct_speedup_over_pytorch": ms["pytorch"] / ms["distinct"],
                "timings_ms": times,
            }
        )
        print(
            f"  piece {name:13s} {B} x {T}: kernel {ms['kernel']:.1f} ms, distinct {ms['distinct']:.1f} ms, per position "
            f"{ms['per_position']:.1f} ms, pytorch {ms['pytorch']:.1f} ms: "
            f"{rows[-1]['speedup']:.2f}x, {rows[-1]['speedup_over_per_position']:.2f}x"
        )
    return rows


def _path(kernel, path: str):
    """models.training_kernel for one path: the kernel as installed (each distinct word projected
    once where few enough; with AVX-512 only the batch's), the kernel projecting distinct inputs
    wherever they are few enough on any CPU, the kernel with every position projected (None with
    AVX-512: PyTorch's layer), or None (PyTorch's layer)."""
    from textrnn import fastrnn

    if path == "kernel":
        return kernel
    if path == "distinct":

        def distinct(rnn, x, words):
            first = fastrnn.distinct_inputs(words) if words is not None and fastrnn.trains(rnn, x) else None
            return fastrnn.lstm_layers(rnn, x, first) if first is not None else kernel(rnn, x, None)

        return distinct
    if path == "per_position":
        return lambda rnn, x, words: kernel(rnn, x, None)
    return None


def _texts(imdb: str | None) -> tuple[list[str], list]:
    """6,000 texts: generated (Zipf words, IMDB-like lengths), or drawn from IMDB's training split."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    if imdb:
        from textrnn.datasets import load_imdb

        train = load_imdb("train", imdb, progress=False)
        pick = rng.choice(len(train.texts), 6000, replace=False)
        return [train.texts[i] for i in pick], [train.labels[i] for i in pick]
    lengths = np.clip(rng.lognormal(5.2, 0.6, 6000), 10, 400).astype(int)
    words = zipf_ids(int(lengths.sum()), 30_000, torch.Generator().manual_seed(1)).numpy()
    cuts = np.cumsum(lengths)[:-1]
    texts = [" ".join(f"w{i}" for i in part) for part in np.split(words, cuts)]
    return texts, rng.integers(0, 2, len(texts)).tolist()


def epochs(repeats: int, imdb: str | None = None) -> list[dict]:
    from textrnn import TextClassifier, models

    kernel = models.training_kernel
    texts, labels = _texts(imdb)
    rows = []
    for name in ("seed", "default"):
        config = _config(name).override({"train.epochs": 1, "data.validation_split": 0.0})
        tokens: dict[str, list[float]] = {path: [] for path in PATHS}
        for _ in range(repeats):
            for path in tokens:
                models.training_kernel = _path(kernel, path)
                clf = TextClassifier(config).fit(texts, labels, progress=False)
                tokens[path].append(clf.history_[-1]["tokens_per_s"])
        models.training_kernel = kernel
        med = {k: statistics.median(v) for k, v in tokens.items()}
        speedups = {
            "speedup": med["kernel"] / med["pytorch"],
            "speedup_over_per_position": med["kernel"] / med["per_position"],
            "distinct_speedup_over_pytorch": med["distinct"] / med["pytorch"],
        }
        rows.append({"model": name, "tokens_per_s": med, **speedups, "runs_tokens_per_s": tokens})
        print(
            f"  epoch {name:8s}: kernel {med['kernel']:,.0f} tokens/s, distinct {med['distinct']:,.0f}, "
            f"per position {med['per_position']:,.0f}, "
            f"pytorch {med['pytorch']:,.0f}: {speedups['speedup']:.2f}x, {speedups['speedup_over_per_position']:.2f}x"
        )
    return rows


def measure(repeats: int, imdb: str | None = None) -> dict:
    from textrnn.pipeline import environment

    return {
        "environment": environment(),
        "pieces": pieces(repeats),
        "epochs": epochs(max(1, repeats // 2), imdb),
        "epoch_texts": f"6,000 of IMDB's training reviews ({imdb})" if imdb else "6,000 generated texts",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default="as_is,no_bf16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--tag", default="", help="appended to the results file's name")
    ap.add_argument("--imdb", help="the epochs on 6,000 of IMDB's training reviews (the archive or its folder), not generated text")
    args = ap.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(REPO / "src"))
        print(json.dumps(measure(args.repeats, args.imdb)))
        return 0
    result: dict = {"date": dt.date.today().isoformat(), "what": __doc__.split("\n\n")[0], "repeats": args.repeats, "profiles": {}}
    for profile in args.profiles.split(","):
        print(f"--- {profile}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("TEXTRNN_CPU", "ONEDNN_MAX_CPU_ISA")}
        env.update(PROFILES[profile], PYTHONPATH=str(REPO / "src"))
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--repeats", str(args.repeats), *(["--imdb", args.imdb] if args.imdb else [])],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        print("\n".join(line for line in done.stdout.splitlines() if line.startswith("  ")), flush=True)
        result["profiles"][profile] = json.loads(done.stdout.strip().splitlines()[-1])
    path = Path(args.out) / f"training-kernel-{result['date']}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
