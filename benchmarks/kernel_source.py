"""Two versions of the C kernel (kernels/rnn.c at a git revision, and as the working tree has it),
side by side in one process: prediction of 512 texts by the default and the seed model (float32,
the sequence kernel, one core) and one training piece of each (forward and backward through the
training kernel), and two of short sentences (32 and 64 texts of 20-24 tokens), each piece also
through the kernel's recurrence alone, in the CPU profiles of speed.py, each in a fresh process. The two builds
alternate ``--rounds`` times; the figures are the median ms of each and the ratio base / new.
The models' weights are random and the texts Zipf-distributed words of IMDB-like lengths
(log-normal, median ~180 tokens, cut at the model's max_length): the arithmetic and the table's
memory traffic are those of real reviews, and the kernel's results do not depend on the words.

    python benchmarks/kernel_source.py --base HEAD~1 [--profiles no_bf16,as_is] [--rounds 12]

Writes benchmarks/results/kernel-source-<date>[-suffix].json (machine, versions, both sources'
hashes, every timing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from training_kernel import PIECES, PROFILES, _config, zipf_ids  # noqa: E402

SOURCE = "src/textrnn/kernels/rnn.c"


def _texts(model_name: str, n: int, generator):
    import torch

    max_length = 400 if model_name == "default" else 200  # what IMDB decides ("auto"), the seed recipe's
    lengths = torch.exp(torch.randn(n, generator=generator) * 0.7 + 5.2).round().clamp(10, max_length).long()
    vocab = 30_000 if model_name == "default" else 20_000
    ids = torch.zeros(n, int(lengths.max()), dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        ids[i, :length] = zipf_ids(length, vocab, generator)
    return ids, lengths, vocab


def _recurrence(B: int, T: int, H: int, generator):
    """lstm_train_forward and lstm_train_backward on random arrays of a piece's shape, each direction:
    a function of the library that returns the outputs and the gates' gradients."""
    import torch

    G = 4 * H
    table, w_hh = torch.randn(B * T, G, generator=generator), torch.randn(G, H, generator=generator) * 0.1
    wt, bias, rows = w_hh.t().contiguous(), torch.randn(G, generator=generator), torch.arange(B * T).view(B, T)
    dhs = torch.randn(B, T, H, generator=generator)

    def run(lib):
        outputs = []
        for reverse in (0, 1):
            acts, cs, tcs, hs = torch.empty(B, T, G), torch.empty(B, T, H), torch.empty(B, T, H), torch.empty(B, T, H)
            dg, db = torch.empty(B, T, G), torch.zeros(G)
            forward = (table, rows, wt, bias, acts, cs, tcs, hs)
            lib.lstm_train_forward(B, H, T, reverse, *[t.data_ptr() for t in forward])
            backward = (w_hh, acts, cs, tcs, dhs)
            lib.lstm_train_backward(B, H, T, reverse, *[t.data_ptr() for t in backward], H, dg.data_ptr(), None, None, db.data_ptr())
            outputs += [hs, dg]
        return tuple(outputs)

    return run


def measure(base_source: str, rounds: int) -> dict:
    import ctypes

    import torch
    import torch.nn.functional as F

    from textrnn import fastrnn, models
    from textrnn.pipeline import environment
    from textrnn.runtime import flush_denormals

    torch.set_num_threads(1)
    flush_denormals()
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    builds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in (("base", base_source), ("new", (REPO / SOURCE).read_text())):
            target = Path(tmp) / f"{name}.so"
            fastrnn._compile(cc, target, source)
            builds[name] = fastrnn.bind(ctypes.CDLL(str(target)))
    fastrnn.library()  # the module's own build and its self-check first
    rows = []
    # IMDB's pieces (with prediction), then a sentence set's: a batch of 64 cut in two for two cores, and whole
    shapes = [("default", *PIECES["default"][1:]), ("seed", *PIECES["seed"][1:]), ("default", 32, 20), ("default", 64, 24)]
    for k, (model_name, B, T) in enumerate(shapes):
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        ids, lengths, vocab = _texts(model_name, 512, generator)
        config = _config(model_name)
        model = models.build_model(config.model, vocab, 2).eval()
        piece = zipf_ids(B * T, vocab, generator).view(B, T)
        trained = models.build_model(config.model, vocab, 2).train()
        params, y = list(trained.parameters()), torch.randint(0, 2, (B,)).float()

        def predict():
            with torch.inference_mode():
                return fastrnn.forward(model, ids, lengths)

        def train_step():
            torch.manual_seed(1)  # the same dropout masks for both builds
            loss = F.binary_cross_entropy_with_logits(trained(piece, torch.full((B,), T)).squeeze(1), y)
            return torch.autograd.grad(loss, params)

        H = config.model.hidden_size
        recurrence = _recurrence(B, T, H, generator)

        def kernel():  # the recurrence alone, forward and backward, both directions
            return recurrence(fastrnn.library())

        jobs = [("predict_512", predict)] * (k < 2) + [(f"train_piece_{B}x{T}", train_step), (f"train_kernel_{B}x{T}", kernel)]
        for what, fn in jobs:
            times: dict[str, list[float]] = {k: [] for k in builds}
            outputs = {}
            for _ in range(rounds):
                for name, lib in builds.items():
                    fastrnn._lib = lib
                    outputs[name] = fn()
                    t0 = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - t0) * 1e3)
            same = all(torch.equal(a, b) for a, b in zip(*(o if isinstance(o, tuple) else (o,) for o in outputs.values())))
            ms = {k: statistics.median(v) for k, v in times.items()}
            rows.append(
                {"model": model_name, "what": what, "ms": ms, "speedup": ms["base"] / ms["new"], "same_results": same, "timings_ms": times}
            )
            print(f"  {model_name} {what}: base {ms['base']:.2f} ms, new {ms['new']:.2f} ms: {ms['base'] / ms['new']:.3f}x (same: {same})")
    fastrnn._lib = False
    return {"environment": environment(), "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision whose kernels/rnn.c is the base")
    ap.add_argument("--profiles", default="no_bf16,as_is")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--suffix", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    base_source = subprocess.run(["git", "show", f"{args.base}:{SOURCE}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    if args.child:
        sys.path.insert(0, str(REPO / "src"))
        print(json.dumps(measure(base_source, args.rounds)))
        return 0
    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]  # noqa: E731
    result: dict = {
        "date": dt.date.today().isoformat(),
        "what": __doc__.split("\n\n")[0],
        "base": {"revision": args.base, "sha256": digest(base_source)},
        "new": {"source": "working tree", "sha256": digest((REPO / SOURCE).read_text())},
        "rounds": args.rounds,
        "profiles": {},
    }
    for profile in args.profiles.split(","):
        print(f"--- {profile}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("TEXTRNN_CPU", "ONEDNN_MAX_CPU_ISA")}
        env.update(PROFILES[profile], PYTHONPATH=str(REPO / "src"))
        cmd = [sys.executable, __file__, "--child", "--base", args.base, "--rounds", str(args.rounds)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        print("\n".join(line for line in done.stdout.splitlines() if line.startswith("  ")), flush=True)
        result["profiles"][profile] = json.loads(done.stdout.strip().splitlines()[-1])
    path = Path(args.out) / f"kernel-source-{result['date']}{args.suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
