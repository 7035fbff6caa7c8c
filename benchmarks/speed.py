"""Speed benchmark: textrnn against the course's Keras/TensorFlow pipeline, in one run, one machine.

    python benchmarks/speed.py [--imdb PATH] [--peer-python /work/peer-venv/bin/python] [--epochs 3] [--repeats 3]

Each side runs in its own fresh process, one after the other (never at the same time: two
processes sharing two cores measure the sharing, not the code), so peak memory is its own. Writes
benchmarks/results/speed-<date>.json (every figure, machine, versions, configs, seeds, and a
top-level ``ratios`` object) and speed-<date>.md (the table the README quotes). With ``--repeats N``
everything runs N times (rounds); the top level then holds each figure's median over the rounds,
``ratios`` the median of the per-round ratios, and ``rounds`` every round whole: this machine is
shared, and one round's ratio can move by a quarter.

The peer lives in its own environment (benchmarks/peer/requirements.txt; bash benchmarks/peer/setup.sh).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# ----------------------------------------------------------------------------- textrnn side
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side_prep(imdb: str, cache: str) -> dict:
    """Load, tokenize, build the vocabulary and encode the 50,000 labelled reviews."""
    os.environ["TEXTRNN_CACHE_DIR"] = cache
    t0 = time.perf_counter()
    import textrnn
    from textrnn.datasets import cache_dir, load_imdb
    from textrnn.text import Tokenizer, tokenize_cached

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    train, test = load_imdb("train", imdb, progress=False), load_imdb("test", imdb, progress=False)
    t_load = time.perf_counter() - t0
    # text.max_length is "auto" since 2026-11-30: on IMDB it decides 400 (docs/defaults.md)
    cfg = textrnn.Config().override(["text.max_length=400"]).text
    tok = Tokenizer.from_config(cfg)
    tr = tokenize_cached(train.texts, tok, cache_dir() / "tokens")
    te = tokenize_cached(test.texts, tok, cache_dir() / "tokens")
    t_tok = time.perf_counter() - t0 - t_load
    vocab = tr.vocabulary(cfg.max_vocab_size, cfg.min_freq)
    x_tr = tr.encode(vocab, cfg.max_length, cfg.truncating, cfg.head_fraction)
    x_te = te.encode(vocab, cfg.max_length, cfg.truncating, cfg.head_fraction)
    total = time.perf_counter() - t0
    return {
        "import_seconds": t_import,
        "load_seconds": t_load,
        "tokenize_seconds": t_tok,
        "vocab_encode_seconds": total - t_load - t_tok,
        "prep_seconds": total,
        "reviews": len(x_tr) + len(x_te),
        "real_tokens": int(sum(len(x) for x in x_tr) + sum(len(x) for x in x_te)),
    }


def side_train(imdb: str, cache: str, config_path: str | None, epochs: int, seed: int, target: float) -> dict:
    """Train one config on IMDB train (minus a 10% validation split), test accuracy after each
    epoch (reported, never used to choose anything), prediction throughput and latency."""
    os.environ["TEXTRNN_CACHE_DIR"] = cache
    start = time.perf_counter()
    import numpy as np
    import torch

    import textrnn  # first: it sets the OpenMP spin default before torch loads
    from textrnn.datasets import load_imdb, train_validation_split
    from textrnn.inference import predict_logits
    from textrnn.runtime import compute_dtype, device_of

    config = textrnn.Config.from_toml(config_path) if config_path else textrnn.Config()
    config = config.override({"train.epochs": epochs, "train.seed": seed, "train.early_stopping_patience": None})
    train, test = load_imdb("train", imdb, progress=False), load_imdb("test", imdb, progress=False)
    tr, val = train_validation_split(train.texts, train.labels, config.data.validation_split, seed)
    clf = textrnn.TextClassifier(config)
    epochs_out, eval_time = [], 0.0
    test_x = None

    def on_epoch_end(row):
        nonlocal eval_time, test_x
        t = time.perf_counter()
        if test_x is None:
            test_x = clf._encode_many(test.texts)
        y = clf._targets(test.labels)
        logits = predict_logits(clf.model_, test_x, 512, config.runtime.precision)
        acc = float(((logits[:, 0] > 0).astype(int) == y).mean())
        eval_time += time.perf_counter() - t
        epochs_out.append(
            {
                "epoch": row["epoch"],
                "epoch_seconds": row["seconds"],
                "train_tokens_per_s": row["tokens_per_s"],
                "val_accuracy": row.get("val_accuracy"),
                "test_accuracy": acc,
                "wall_seconds_since_start_excl_eval": time.perf_counter() - start - eval_time,
            }
        )

    clf.fit(tr.texts, tr.labels, validation_data=(val.texts, val.labels), progress=False, on_epoch_end=on_epoch_end)
    reached = next((e["wall_seconds_since_start_excl_eval"] for e in epochs_out if e["test_accuracy"] >= target), None)
    # prediction throughput on encoded reviews at batch 512 (the peer's model.predict does the same)
    predict_logits(clf.model_, test_x[:600], 512, config.runtime.precision)
    t = time.perf_counter()
    predict_logits(clf.model_, test_x, 512, config.runtime.precision)
    predict_seconds = time.perf_counter() - t
    t = time.perf_counter()
    clf.predict_proba(test.texts[:5000], batch_size=512)
    raw_rps = 5000 / (time.perf_counter() - t)
    # single-review latency, model loaded, raw text in (tokenization included)
    lengths = np.array([len(x) for x in test_x])
    review = test.texts[int(np.argsort(lengths)[len(lengths) // 2])]
    for _ in range(20):
        clf.predict_proba([review])
    lat = []
    for _ in range(1000):
        t = time.perf_counter()
        clf.predict_proba([review])
        lat.append((time.perf_counter() - t) * 1000)
    m = config.model
    return {
        "config": config.to_dict(),
        "epochs": epochs_out,
        "best_test_accuracy": max(e["test_accuracy"] for e in epochs_out),
        "seconds_to_target": reached,
        "target_accuracy": target,
        "train_tokens_per_s": float(np.median([e["train_tokens_per_s"] for e in epochs_out])),
        "epoch_seconds": float(np.median([e["epoch_seconds"] for e in epochs_out])),
        "predict_reviews_per_s": len(test_x) / predict_seconds,
        "predict_raw_text_reviews_per_s": raw_rps,
        "latency_ms": {
            "median": float(np.median(lat)),
            "p99": float(np.percentile(lat, 99)),
            "calls": 1000,
            "review_tokens": int(np.median(lengths)),
        },
        "recurrent_flops_per_token": recurrent_flops_per_token(m),
        "parameters": sum(p.numel() for p in clf.model_.parameters()),
        "compute_dtype": str(compute_dtype(device_of(clf.model_), config.runtime.precision)),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": _rss_mb(),
    }


def recurrent_flops_per_token(m) -> float:
    """Training FLOPs per token of the recurrent layers (forward 2*G*H*(in+H) per direction and
    layer, G gates; backward about twice the forward): the figure to set against a matmul peak."""
    if m.arch != "rnn":
        return 0.0
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[m.cell]
    dirs = 2 if m.bidirectional else 1
    total, inp = 0.0, m.embedding_dim
    for _ in range(m.num_layers):
        total += dirs * 2 * gates * m.hidden_size * (inp + m.hidden_size)
        inp = m.hidden_size * dirs
    return 3 * total


def side_matmul() -> dict:
    """The matrix-multiply peak of the device the training sides use (the CPU, or the GPU that
    runtime.device "auto" picks): fp32, the precision textrnn trains in (TF32 off on a GPU)."""
    import torch

    import textrnn  # noqa: F401  (same OpenMP settings as the training sides)

    cuda = torch.cuda.is_available()
    n = 8192 if cuda else 2048
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
    a, b = (torch.randn(n, n, device="cuda" if cuda else "cpu") for _ in range(2))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    runs = []
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        sync()
        runs.append(time.perf_counter() - t)
    runs.sort()
    return {
        "gflops": 2 * n**3 / runs[len(runs) // 2] / 1e9,
        "size": n,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": "float32",
    }


# The CPU profiles: the machine as it is, and as an AVX2 CPU without bfloat16 (most laptops) would
# run, by textrnn's TEXTRNN_CPU=avx2 switch; the peer gets the same caps (its oneDNN and MKL read
# the same variables), so each profile compares the two on the same instruction set.
AVX2_ENV = {
    "TEXTRNN_CPU": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "TF_ENABLE_ONEDNN_OPTS": "1",
}
PROFILES = {"as_is": {}, "no_bf16": AVX2_ENV}


def profile_env(profile: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in AVX2_ENV}
    return {**env, **PROFILES[profile], "PYTHONPATH": str(REPO / "src")}


def run_side(args: list[str], env: dict, timeout: int = 3600) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", *args, "--side-out", out]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, timeout=timeout, env=env)
    return json.loads(Path(out).read_text())


# ----------------------------------------------------------------------------- orchestration
def environment() -> dict:
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.pipeline import environment as textrnn_environment

    return textrnn_environment()


def table(r: dict) -> str:
    peer, seed, dflt = r["peer"], r["textrnn_seed"], r["textrnn_default"]

    def f(v, fmt="{:,.0f}"):
        return "-" if v is None else fmt.format(v)

    rows = [
        (
            "training tokens/s (median epoch)",
            f(peer and peer["train_tokens_per_s"]),
            f(seed["train_tokens_per_s"]),
            f(dflt["train_tokens_per_s"]),
        ),
        (
            "seconds per epoch",
            f(peer and peer["epoch_seconds"], "{:.1f}"),
            f(seed["epoch_seconds"], "{:.1f}"),
            f(dflt["epoch_seconds"], "{:.1f}"),
        ),
        (
            "test accuracy per epoch",
            peer and ", ".join(f"{e['test_accuracy']:.3f}" for e in peer["epochs"]) or "-",
            ", ".join(f"{e['test_accuracy']:.3f}" for e in seed["epochs"]),
            ", ".join(f"{e['test_accuracy']:.3f}" for e in dflt["epochs"]),
        ),
        (
            f"seconds to {r['target_accuracy']:.0%} test accuracy (incl. prep)",
            f(peer and peer.get("seconds_to_target"), "{:.0f}"),
            f(seed["seconds_to_target"], "{:.0f}"),
            f(dflt["seconds_to_target"], "{:.0f}"),
        ),
        (
            "data prep, cold / warm (s)",
            peer and f"{peer['prep_seconds_cold']:.1f} / {peer['prep_seconds_warm']:.1f}" or "-",
            f"{r['textrnn_prep_cold']['prep_seconds']:.1f} / {r['textrnn_prep_warm']['prep_seconds']:.1f}",
            "same",
        ),
        (
            "prediction, reviews/s at batch 512",
            f(peer and peer["predict_reviews_per_s"]),
            f(seed["predict_reviews_per_s"]),
            f(dflt["predict_reviews_per_s"]),
        ),
        (
            "single review latency p50 / p99 (ms)",
            peer and f"{peer['latency_ms']['median']:.1f} / {peer['latency_ms']['p99']:.1f}" or "-",
            f"{seed['latency_ms']['median']:.2f} / {seed['latency_ms']['p99']:.2f}",
            f"{dflt['latency_ms']['median']:.2f} / {dflt['latency_ms']['p99']:.2f}",
        ),
        ("peak resident memory (MB)", f(peer and peer["peak_rss_mb"]), f(seed["peak_rss_mb"]), f(dflt["peak_rss_mb"])),
        (
            "recurrent GFLOP/s (vs matmul peak)",
            "-",
            f"{seed['recurrent_gflops']:.1f} ({seed['fraction_of_matmul_peak']:.0%})",
            f"{dflt['recurrent_gflops']:.1f} ({dflt['fraction_of_matmul_peak']:.0%})",
        ),
    ]
    lines = [f"| {r['date']} | Keras 3 / TF (course) | textrnn, seed model | textrnn default |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    ratios = r.get("ratios")
    lines.append("")
    rounds = r.get("ratios_per_round")
    if rounds:
        lines.insert(
            0,
            f"Medians over {len(rounds)} rounds (each round: both sides, one after the other); "
            "accuracies per epoch from the first round.\n",
        )
    if ratios and any(v is not None for v in ratios.values()):
        lines.append(
            ("Median over the rounds of the ratios " if rounds else "Ratios ")
            + "textrnn(seed model)/peer: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items() if v is not None)
        )
        if rounds:
            lines.append("Per round: " + "; ".join(", ".join(f"{k} {v:.2f}x" for k, v in q.items() if v is not None) for q in rounds))
    else:
        lines.append("No peer in this run (--skip-peer, or no peer environment): no ratios.")
    return "\n".join(lines)


def peer_summary(p: dict) -> dict:
    """The peer's JSON in this benchmark's terms."""
    import statistics

    epochs = [
        {
            "epoch": i + 1,
            "epoch_seconds": e["epoch_seconds"],
            "train_tokens_per_s": e["train_tokens_per_s"],
            "test_accuracy": e["test_accuracy"],
            "wall_seconds_since_start_excl_eval": e["wall_seconds_since_start_excl_eval"],
        }
        for i, e in enumerate(p["epochs"])
    ]
    lat = p["latency_ms"]["tf_function_call"]
    return {
        "epochs": epochs,
        "train_tokens_per_s": statistics.median(e["train_tokens_per_s"] for e in epochs),
        "epoch_seconds": statistics.median(e["epoch_seconds"] for e in epochs),
        "prep_seconds_cold": p["prep_seconds_cold"],
        "prep_seconds_warm": p["prep_seconds_warm"],
        "predict_reviews_per_s": p["predict_reviews_per_s"],
        "latency_ms": {"median": lat["median_ms"], "p99": lat["p99_ms"]},
        "peak_rss_mb": p["peak_rss_mb"],
        "raw": p,
    }


def one_round(args, partial: dict, stem: str, profile: str) -> dict:
    """Every figure once: textrnn's preparation (cold, warm), the matmul peak, the seed model and
    the default, then the peer; each in its own fresh process, one after the other."""
    env = profile_env(profile)
    result = {"cpu": run_side(["cpu"], env)}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as cache:
        result["textrnn_prep_cold"] = run_side(["prep", "--imdb", args.imdb, "--cache", cache], env)
        result["textrnn_prep_warm"] = run_side(["prep", "--imdb", args.imdb, "--cache", cache], env)
        result["matmul"] = run_side(["matmul"], env)
        for name, config in (("textrnn_seed", str(REPO / "configs" / "seed.toml")), ("textrnn_default", None)):
            extra = ["--config", config] if config else []
            r = run_side(
                [
                    "train",
                    "--imdb",
                    args.imdb,
                    "--cache",
                    cache,
                    "--epochs",
                    str(args.epochs),
                    "--seed",
                    str(args.seed),
                    "--target",
                    str(args.target),
                    *extra,
                ],
                env,
            )
            r["recurrent_gflops"] = r["recurrent_flops_per_token"] * r["train_tokens_per_s"] / 1e9
            r["fraction_of_matmul_peak"] = r["recurrent_gflops"] / result["matmul"]["gflops"]
            # seconds to target counted from the start of the training process, plus cold prep of the data
            if r["seconds_to_target"] is not None:
                r["seconds_to_target_incl_cold_prep"] = r["seconds_to_target"] + result["textrnn_prep_cold"]["load_seconds"]
            result[name] = r
            (out_dir / f"{stem}.partial.json").write_text(json.dumps({**partial, **result}, indent=2))  # kept if the peer fails
    result["peer"] = None
    if not args.skip_peer and Path(args.peer_python).exists():
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        archive = Path(args.imdb)
        if archive.is_dir():  # the peer reads the archive itself
            archive = archive / "aclImdb_v1.tar.gz"
        cmd = [
            args.peer_python,
            str(HERE / "peer" / "keras_imdb.py"),
            "--data",
            str(archive),
            "--epochs",
            str(args.epochs),
            "--out",
            out,
            "--seed",
            str(args.seed),
        ]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, timeout=3600, env={**env, "PYTHONPATH": ""})
        peer = peer_summary(json.loads(Path(out).read_text()))
        reached = next((e["wall_seconds_since_start_excl_eval"] for e in peer["epochs"] if e["test_accuracy"] >= args.target), None)
        peer["seconds_to_target"] = reached
        result["peer"] = peer
    p, s = result["peer"], result["textrnn_seed"]
    result["ratios"] = {
        "train_tokens_per_s": s["train_tokens_per_s"] / p["train_tokens_per_s"] if p else None,
        "predict_reviews_per_s": s["predict_reviews_per_s"] / p["predict_reviews_per_s"] if p else None,
        "prep_seconds_warm": result["textrnn_prep_warm"]["prep_seconds"] / p["prep_seconds_warm"] if p else None,
        "default_train_tokens_per_s": result["textrnn_default"]["train_tokens_per_s"] / p["train_tokens_per_s"] if p else None,
    }
    return result


def median_round(rounds: list[dict]) -> dict:
    """One result shaped like a round: every number the median of that number over the rounds
    (lists, e.g. the per-epoch accuracies, are the first round's)."""
    import statistics

    def merge(values: list):
        first = values[0]
        if isinstance(first, dict):
            return {k: merge([v.get(k) if isinstance(v, dict) else None for v in values]) for k in first}
        if isinstance(first, (int, float)) and not isinstance(first, bool) and all(isinstance(v, (int, float)) for v in values):
            return statistics.median(values)
        return first

    return merge(rounds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imdb", default=os.environ.get("TEXTRNN_IMDB", str(REPO.parent / "shared" / "data" / "aclImdb_v1.tar.gz")))
    ap.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.88)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--side", choices=["prep", "train", "matmul", "cpu"])
    ap.add_argument(
        "--profiles",
        default="as_is,no_bf16",
        help="comma-separated: as_is (the CPU as it is), no_bf16 (TEXTRNN_CPU=avx2: as an AVX2 CPU "
        "without bfloat16); no_bf16 is skipped on a CPU that has no AVX-512 anyway",
    )
    ap.add_argument("--side-out")
    ap.add_argument("--cache")
    ap.add_argument("--config")
    ap.add_argument("--repeats", type=int, default=1, help="run everything this many times; report medians")
    ap.add_argument("--tag", default="", help="suffix for the results files: speed-<date>-<tag>.json (e.g. cuda)")
    args = ap.parse_args(argv)
    if args.side:
        if args.side == "prep":
            res = side_prep(args.imdb, args.cache)
        elif args.side == "train":
            res = side_train(args.imdb, args.cache, args.config, args.epochs, args.seed, args.target)
        elif args.side == "cpu":
            from textrnn.runtime import cpu_description

            res = cpu_description()
        else:
            res = side_matmul()
        res["peak_rss_mb"] = _rss_mb()
        Path(args.side_out).write_text(json.dumps(res, indent=2))
        return 0

    date = dt.date.today().isoformat()
    stem = f"speed-{date}-{args.tag}" if args.tag else f"speed-{date}"
    result = {
        "date": date,
        "environment": environment(),
        "seed": args.seed,
        "epochs": args.epochs,
        "target_accuracy": args.target,
        "imdb": args.imdb,
        "repeats": args.repeats,
    }
    sys.path.insert(0, str(REPO / "src"))
    from textrnn.runtime import cpu_class, cpu_info

    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if unknown := [p for p in profiles if p not in PROFILES]:
        ap.error(f"unknown profile(s) {unknown}: expected some of {list(PROFILES)}")
    if "no_bf16" in profiles and cpu_class(cpu_info()[1]).startswith("x86-64 AVX2"):
        profiles.remove("no_bf16")  # the hardware is that class already: as_is is the figure
        result["no_bf16_skipped"] = "this CPU has AVX2 and no AVX-512: the as_is profile is the AVX2 one"
    result["profiles"] = {}
    for profile in profiles:
        rounds = []
        for k in range(args.repeats):
            print(f"--- profile {profile}, round {k + 1} of {args.repeats}", flush=True)
            rounds.append(one_round(args, {**result, "rounds": rounds}, stem, profile))
        if args.repeats == 1:
            figures = rounds[0]
        else:  # each figure the median over the rounds; the rounds themselves kept whole
            figures = {**median_round(rounds), "rounds": rounds, "ratios_per_round": [r["ratios"] for r in rounds]}
        result["profiles"][profile] = {"date": date, "target_accuracy": args.target, **figures}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out_dir / f"{stem}.partial.json").unlink(missing_ok=True)
    md = "\n\n".join(
        f"### {name}: {r['cpu']['class']} ({r['cpu']['model']}, {r['textrnn_seed']['compute_dtype']})\n\n" + table(r)
        for name, r in result["profiles"].items()
    )
    (out_dir / f"{stem}.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
