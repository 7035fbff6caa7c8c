#!/usr/bin/env python
"""Peer side of the textrnn speed benchmark: the course's IMDB sentiment
pipeline written the idiomatic Keras 3 way on the TensorFlow backend.

    TextVectorization(max_tokens=20000, output_sequence_length=200)
      -> Embedding(20000, 128) -> LSTM(64) -> Dense(1, sigmoid)
    Adam, binary cross-entropy, accuracy, batch 64, whole training set,
    no validation split.

Standalone: it imports nothing from textrnn and runs in its own venv
(see requirements.txt beside this file):

    python keras_imdb.py --data /work/shared/data/aclImdb_v1.tar.gz \
        --epochs 3 --out result.json [--limit N] [--seed 0]

--latency-calls / --predict-one-calls (defaults 1000 / 100) only shorten
quick checks; the benchmark uses the defaults.

--limit N trains on N training reviews and evaluates on N test reviews
(each balanced pos/neg, sampled with --seed); the archive is still read
whole, so read_seconds is always the figure for all 50,000 reviews.
All figures land in the JSON given by --out; see KEYS below.
"""

from __future__ import annotations

import os

# Must be set before TensorFlow is imported. Hides TF's C++ INFO/WARNING
# lines; the one "oneDNN custom operations are on" line is printed by the
# absl pre-init logger and shows anyway (it is harmless).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import hashlib
import json
import platform
import re
import resource
import sys
import tarfile
import time

T_START = time.perf_counter()  # "script start" for the cumulative wall times

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

T_IMPORTED = time.perf_counter()

MAX_TOKENS = 20000
SEQ_LEN = 200
EMBED_DIM = 128
LSTM_UNITS = 64
BATCH_SIZE = 64
PREDICT_BATCH = 512
LATENCY_CALLS = 1000
PREDICT_ONE_CALLS = 100

MEMBER_RE = re.compile(r"^aclImdb/(train|test)/(pos|neg)/[^/]+\.txt$")

KEYS = {
    "read_seconds": "read all 50,000 labelled reviews (train+test, pos+neg) from the .tar.gz with tarfile; unsup/ is skipped",
    "vectorize_seconds": "new TextVectorization, adapt on the training texts, encode train and test to numpy int arrays",
    "prep_seconds_cold": "read_seconds + vectorize_seconds",
    "prep_seconds_warm": "vectorize step alone, run a second time in the same process (see prep_warm_note)",
    "epochs[].epoch_seconds": "model.fit for one epoch over the training set",
    "epochs[].train_tokens_per_s": "real (nonzero id) tokens in the encoded training set / epoch_seconds",
    "epochs[].test_accuracy": "model.evaluate accuracy on the test set after the epoch",
    "epochs[].wall_seconds_since_start": "perf_counter at the epoch's end "
    "(before its evaluation) minus script start, includes import, prep, "
    "model build and the evaluations of earlier epochs",
    "epochs[].wall_seconds_since_start_excl_eval": "the same, less the time "
    "spent in the evaluations of earlier epochs (for time-to-accuracy)",
    "predict_reviews_per_s": "test reviews / seconds of one model.predict "
    "over the encoded test set at batch_size=512, after a warm-up call",
    "latency_ms.eager_call": "model(x, training=False) on one encoded review, 1,000 calls (--latency-calls), median/p99 ms",
    "latency_ms.tf_function_call": "the same through tf.function (graph), 1,000 calls (--latency-calls), median/p99 ms",
    "latency_ms.predict": "model.predict on one encoded review, 100 calls (--predict-one-calls), median/p99 ms",
    "peak_rss_mb": "resource.getrusage(RUSAGE_SELF).ru_maxrss / 1024 (Linux reports KiB)",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="path to aclImdb_v1.tar.gz")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use N train and N test reviews (balanced, sampled with --seed)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--latency-calls",
        type=int,
        default=LATENCY_CALLS,
        help="timed single-review model(x) calls, eager and tf.function (default 1000; the eager series alone costs ~2.5 min on 2 cores)",
    )
    p.add_argument(
        "--predict-one-calls",
        type=int,
        default=PREDICT_ONE_CALLS,
        help="timed single-review model.predict calls (default 100)",
    )
    return p.parse_args(argv)


def read_imdb(path):
    """Return {"train": (texts, labels), "test": (texts, labels)} from the
    archive, in archive order. Labels: pos=1, neg=0."""
    out = {"train": ([], []), "test": ([], [])}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            m = MEMBER_RE.match(member.name)
            if m is None or not member.isfile():
                continue
            split, label = m.groups()
            text = tar.extractfile(member).read().decode("utf-8")
            out[split][0].append(text)
            out[split][1].append(1 if label == "pos" else 0)
    return {k: (np.array(texts, dtype=object), np.array(labels, dtype="float32")) for k, (texts, labels) in out.items()}


def balanced_sample(texts, labels, n, rng):
    """n items, half pos half neg (n odd: one extra neg), in shuffled order."""
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    n_pos = n // 2
    n_neg = n - n_pos
    if n_pos > len(pos) or n_neg > len(neg):
        raise SystemExit(f"--limit {n} is larger than the split")
    idx = np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])
    rng.shuffle(idx)
    return texts[idx], labels[idx]


def vectorize(train_texts, test_texts):
    vec = keras.layers.TextVectorization(max_tokens=MAX_TOKENS, output_sequence_length=SEQ_LEN)
    vec.adapt(train_texts)
    x_train = vec(train_texts).numpy()
    x_test = vec(test_texts).numpy()
    return vec, x_train, x_test


def build_model():
    model = keras.Sequential(
        [
            keras.Input(shape=(SEQ_LEN,), dtype="int64"),
            keras.layers.Embedding(MAX_TOKENS, EMBED_DIM),
            keras.layers.LSTM(LSTM_UNITS),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def ms_stats(seconds):
    a = np.asarray(seconds) * 1000.0
    return {
        "calls": int(a.size),
        "median_ms": float(np.median(a)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
    }


def time_calls(fn, n, warmup=10):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # --- read --------------------------------------------------------------
    t = time.perf_counter()
    data = read_imdb(args.data)
    read_seconds = time.perf_counter() - t
    n_read = {k: int(len(v[1])) for k, v in data.items()}

    train_texts, y_train = data["train"]
    test_texts, y_test = data["test"]
    if args.limit is not None:
        train_texts, y_train = balanced_sample(train_texts, y_train, args.limit, rng)
        test_texts, y_test = balanced_sample(test_texts, y_test, args.limit, rng)
    del data

    # --- vectorize (cold, then warm) ---------------------------------------
    t = time.perf_counter()
    vec, x_train, x_test = vectorize(train_texts, test_texts)
    vectorize_seconds = time.perf_counter() - t

    t = time.perf_counter()
    vec2, x_train2, x_test2 = vectorize(train_texts, test_texts)
    prep_seconds_warm = time.perf_counter() - t
    same_encoding = bool(np.array_equal(x_train, x_train2) and np.array_equal(x_test, x_test2))
    del vec2, x_train2, x_test2

    train_real_tokens = int(np.count_nonzero(x_train))
    test_real_tokens = int(np.count_nonzero(x_test))
    vocab_size = len(vec.get_vocabulary())

    # --- train -------------------------------------------------------------
    model = build_model()
    epochs = []
    eval_total = 0.0
    for epoch in range(args.epochs):
        t = time.perf_counter()
        hist = model.fit(
            x_train,
            y_train,
            batch_size=BATCH_SIZE,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=True,
            verbose=0,
        )
        t_end = time.perf_counter()
        epoch_seconds = t_end - t
        te = time.perf_counter()
        test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=PREDICT_BATCH, verbose=0)
        eval_seconds = time.perf_counter() - te
        epochs.append(
            {
                "epoch": epoch + 1,
                "epoch_seconds": epoch_seconds,
                "train_tokens_per_s": train_real_tokens / epoch_seconds,
                "train_loss": float(hist.history["loss"][-1]),
                "train_accuracy": float(hist.history["accuracy"][-1]),
                "test_loss": float(test_loss),
                "test_accuracy": float(test_acc),
                "eval_seconds": eval_seconds,
                "wall_seconds_since_start": t_end - T_START,
                "wall_seconds_since_start_excl_eval": t_end - T_START - eval_total,
            }
        )
        eval_total += eval_seconds
        e = epochs[-1]
        print(
            f"epoch {e['epoch']}: {e['epoch_seconds']:.1f}s "
            f"{e['train_tokens_per_s']:,.0f} tok/s "
            f"loss {e['train_loss']:.4f} test_acc {e['test_accuracy']:.4f} "
            f"(wall {e['wall_seconds_since_start']:.1f}s)",
            flush=True,
        )

    # --- batch predict -----------------------------------------------------
    # warm-up on a small slice: one full 512 batch plus a partial one, so
    # both shapes are traced before the timed call
    model.predict(x_test[: PREDICT_BATCH + 88], batch_size=PREDICT_BATCH, verbose=0)
    t = time.perf_counter()
    model.predict(x_test, batch_size=PREDICT_BATCH, verbose=0)
    predict_seconds = time.perf_counter() - t
    predict_reviews_per_s = len(x_test) / predict_seconds

    # --- single-review latency ---------------------------------------------
    x1_np = x_test[:1]
    x1 = tf.constant(x1_np)
    eager = time_calls(lambda: model(x1, training=False), args.latency_calls)
    graph_call = tf.function(lambda x: model(x, training=False))
    graphed = time_calls(lambda: graph_call(x1), args.latency_calls)
    pred1 = time_calls(
        lambda: model.predict(x1_np, batch_size=1, verbose=0),
        args.predict_one_calls,
    )
    latency = {
        "eager_call": ms_stats(eager),
        "tf_function_call": ms_stats(graphed),
        "predict": ms_stats(pred1),
        "note": "one already-encoded review of shape (1, 200); 10 untimed "
        "warm-up calls before each series; eager_call = model(x, "
        "training=False) on a tf.constant, tf_function_call = the same "
        "wrapped in tf.function, predict = model.predict(x, batch_size=1) "
        "on the numpy row",
    }

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    total_seconds = time.perf_counter() - T_START

    result = {
        "benchmark": "peer: Keras 3 / TensorFlow IMDB LSTM",
        "read_seconds": read_seconds,
        "vectorize_seconds": vectorize_seconds,
        "prep_seconds_cold": read_seconds + vectorize_seconds,
        "prep_seconds_warm": prep_seconds_warm,
        "prep_warm_note": "Keras has no parsed/encoded cache, so a second "
        "read+vectorize in one process would measure the same work; warm is "
        "defined as the vectorize step alone (a new TextVectorization, adapt "
        "on train, encode train+test) run a second time in the same process, "
        "after TensorFlow is initialised and the texts are in memory",
        "warm_encoding_identical": same_encoding,
        "epochs": epochs,
        "predict_reviews_per_s": predict_reviews_per_s,
        "predict_seconds": predict_seconds,
        "latency_ms": latency,
        "peak_rss_mb": peak_rss_mb,
        "import_seconds": T_IMPORTED - T_START,
        "total_seconds": total_seconds,
        "data": {
            "path": os.path.abspath(args.data),
            "sha256": sha256(args.data),
            "reviews_read": n_read,
            "train_reviews": int(len(x_train)),
            "test_reviews": int(len(x_test)),
            "train_pos": int(y_train.sum()),
            "test_pos": int(y_test.sum()),
            "train_real_tokens": train_real_tokens,
            "test_real_tokens": test_real_tokens,
            "real_tokens_note": "nonzero ids after TextVectorization "
            "(lowercase, strip punctuation, whitespace split) and "
            "truncation/padding to 200; the OOV id 1 counts as real",
            "vocabulary_size": vocab_size,
        },
        "config": {
            "max_tokens": MAX_TOKENS,
            "output_sequence_length": SEQ_LEN,
            "embedding_dim": EMBED_DIM,
            "lstm_units": LSTM_UNITS,
            "mask_zero": False,
            "optimizer": "adam (Keras defaults, lr 0.001)",
            "loss": "binary_crossentropy",
            "metrics": ["accuracy"],
            "batch_size": BATCH_SIZE,
            "epochs": args.epochs,
            "limit": args.limit,
            "validation_split": None,
            "shuffle": True,
            "predict_batch_size": PREDICT_BATCH,
            "latency_calls": args.latency_calls,
            "predict_one_calls": args.predict_one_calls,
            "evaluate_batch_size": PREDICT_BATCH,
            "jit_compile": bool(model.jit_compile),
            "trainable_params": int(model.count_params()),
        },
        "seed": args.seed,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "numpy": np.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "tf_devices": [d.name for d in tf.config.list_physical_devices()],
            "env": {
                k: os.environ[k]
                for k in (
                    "TF_CPP_MIN_LOG_LEVEL",
                    "TF_ENABLE_ONEDNN_OPTS",
                    "OMP_NUM_THREADS",
                    "CUDA_VISIBLE_DEVICES",
                )
                if k in os.environ
            },
        },
        "keys": KEYS,
        "argv": sys.argv,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    lat = latency
    print(
        f"read {read_seconds:.1f}s ({sum(n_read.values())} reviews) | "
        f"vectorize {vectorize_seconds:.1f}s | prep cold "
        f"{result['prep_seconds_cold']:.1f}s warm {prep_seconds_warm:.1f}s\n"
        f"train {len(x_train)} / test {len(x_test)} reviews, "
        f"{train_real_tokens:,} real train tokens\n"
        f"predict {predict_reviews_per_s:,.0f} reviews/s | latency median/p99 ms: "
        f"eager {lat['eager_call']['median_ms']:.2f}/{lat['eager_call']['p99_ms']:.2f}, "
        f"tf.function {lat['tf_function_call']['median_ms']:.2f}/"
        f"{lat['tf_function_call']['p99_ms']:.2f}, "
        f"predict {lat['predict']['median_ms']:.2f}/{lat['predict']['p99_ms']:.2f}\n"
        f"peak RSS {peak_rss_mb:,.0f} MB | total {total_seconds:.1f}s | "
        f"TF {tf.__version__} Keras {keras.__version__} Python "
        f"{platform.python_version()} -> {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
