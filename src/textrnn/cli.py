"""The ``textrnn`` command: thin commands over the functions of pipeline.py and classifier.py.

Every error a user can cause ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from .classifier import TextClassifier
from .config import Config, TextConfig, parse_assignments
from .datasets import load_data, read_table, sample
from .distributed import shutdown
from .embeddings import train_word2vec
from .errors import ArtifactError, TextRNNError, TrainingInterrupted
from .evaluation import format_report
from .explain import explain, format_text, to_html
from .export import export_onnx
from .pipeline import compare_run, describe, evaluate_run, format_compare, portable_config, resume_run, train_run
from .pretrain import pretrain_texts
from .progress import Progress
from .report import build_report
from .serving import serve
from .streaming import predict_file
from .text import PAD_ID, UNK_ID, Tokenizer, Vocabulary, pad, truncate
from .tracking import Tracker, check_installed, flat_params, log_train_run, parse_backends
from .tune import format_tune, tune_run

log = logging.getLogger("textrnn")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _data_flags(p: argparse.ArgumentParser, train: bool = True) -> None:
    if train:
        p.add_argument(
            "--train",
            metavar="PATH",
            help="training data: imdb, imdb:train, or a .csv/.tsv/.jsonl/.parquet file or a folder of class folders",
        )
        p.add_argument("--test", metavar="PATH", help="held-out data for the final report (default with IMDB: imdb:test); 'none' to skip")
        p.add_argument("--validation", metavar="PATH", help="labelled data that picks the best epoch, instead of a split of --train")
        p.add_argument(
            "--unlabelled",
            action="append",
            metavar="SOURCE",
            help="texts without labels for train.vat and train.entropy_min: imdb:unsup, or a data file (its text column; repeatable)",
        )
    p.add_argument("--text-column", metavar="NAME", help="column holding the text (default: text)")
    p.add_argument("--label-column", metavar="NAME", help="column holding the label (default: label)")
    p.add_argument("--label-separator", metavar="SEP", help="several labels in one CSV/TSV cell, split on SEP, e.g. '|' (multi-label)")
    p.add_argument("--label-columns", metavar="A,B,C", help="several 0/1 columns, one per label (multi-label)")
    p.add_argument("--encoding", metavar="NAME", help="text encoding of data files (default: utf-8; try latin-1)")
    p.add_argument(
        "--imdb-path", metavar="PATH", help="the IMDB archive or its extracted folder (else $TEXTRNN_IMDB, the cache, or a download)"
    )


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="TOML", help="a recipe, e.g. configs/seed.toml")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a setting, e.g. --set model.cell=gru --set train.epochs=2 (repeatable)",
    )
    _data_flags(p)
    p.add_argument("--limit", type=int, metavar="N", help="train on a seeded sample of N texts (quick runs)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _tracking_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-to",
        action="append",
        default=[],
        metavar="BACKEND",
        help="also log the run to tensorboard or mlflow (repeatable, or comma-separated; optional extras)",
    )
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow's store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")


def _tracker(args, name: str, logdir: Path, fresh: bool = True, command: str = "") -> Tracker:
    """The run's tracker for --log-to (none under torchrun but on rank 0); a missing extra is one
    line here, before any training."""
    backends = parse_backends(args.log_to) if os.environ.get("RANK", "0") == "0" else []
    check_installed(backends, args.tracking_uri)
    return Tracker(backends, name, logdir, args.tracking_uri, fresh=fresh, tags={"textrnn.command": command or args.command})


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="textrnn", description="Train, evaluate and use recurrent text classifiers (LSTM/GRU).")
    parser.add_argument("--version", action="version", version=f"textrnn {__import__('textrnn').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "train",
        help="train a model and report on the test split",
        description="Train a classifier (IMDB by default), keep the best epoch by validation accuracy, "
        "report on the test split once, write OUTPUT/model and metrics.",
    )
    _config_flags(p)
    p.add_argument("--output", "-o", metavar="DIR", help="run directory (the model goes to DIR/model; checkpoints to DIR/checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace a model (or an unfinished run) already in DIR")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint, with its saved config")
    _tracking_flags(p)

    p = sub.add_parser("evaluate", help="metrics of a saved model on labelled data")
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("--data", required=True, metavar="PATH", help="imdb:test, or a labelled data file")
    _data_flags(p, train=False)
    p.add_argument("--format", choices=["table", "json"], default="table")

    p = sub.add_parser(
        "predict",
        help="labels and probabilities for new texts",
        description="Predict texts given as arguments, read from --input (one text per line in .txt, or a "
        "table with --text-column), or from stdin when neither is given.",
    )
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--input", "-i", metavar="PATH", help="a .txt file (one text per line) or a .csv/.tsv/.jsonl/.parquet table")
    p.add_argument("--text-column", default="text", metavar="NAME")
    p.add_argument("--format", choices=["text", "json"], default="text", help="json: one JSON object per line")
    p.add_argument("--batch-size", type=_positive_int, default=512)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--output",
        "-o",
        metavar="OUT",
        help="stream --input in chunks into OUT.jsonl or OUT.parquet (memory stays "
        "flat; a stopped run continues where it was when run again)",
    )
    p.add_argument("--chunk-size", type=_positive_int, default=10_000, metavar="N", help="rows per chunk with --output (default: 10000)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --output: continue a stopped run, and fail if there is none (a matching one is continued anyway)",
    )
    p.add_argument("--overwrite", action="store_true", help="with --output: replace OUT and any stopped run's progress")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (a GPU when there is one), cpu, cuda or cuda:N")

    p = sub.add_parser(
        "inspect",
        help="show each preparation step on a text",
        description="Show what the model sees: the cleaned text, the tokens, their ids (unknown words marked) and the padded sequence.",
    )
    p.add_argument("text", nargs="?", help="the text (default: read stdin)")
    p.add_argument("--model", metavar="MODEL_DIR", help="use this model's tokenizer, vocabulary and length")
    p.add_argument("--max-length", type=_positive_int, help="pad/truncate to this length (default: the model's, else 20)")
    p.add_argument("--padding", choices=["post", "pre"], default="post")
    p.add_argument("--truncating", choices=["post", "pre", "head_tail"])

    p = sub.add_parser(
        "word2vec",
        help="train word vectors on texts (e.g. IMDB's unlabelled reviews)",
        description="Train word2vec (gensim) on the given texts, tokenized as textrnn does, and write "
        "them in the word2vec text format, ready for --set model.pretrained_embeddings=FILE.",
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="PATH",
        help="texts to learn from: imdb:unsup, imdb:train, or a data file (repeatable)",
    )
    p.add_argument("--output", "-o", required=True, metavar="FILE")
    p.add_argument("--dim", type=int, default=100, help="vector size (= model.embedding_dim)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--text-column", default="text", metavar="NAME")
    p.add_argument("--imdb-path", metavar="PATH")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser(
        "pretrain",
        help="pretrain the encoder as a language model on unlabelled texts (ULMFiT)",
        description="Train the configured model's embedding and recurrent layer as a language model "
        "(bidirectional: a forward and a backward one) on the given texts, tokenized as textrnn "
        "does, and write the encoder folder, ready for --set pretrain.encoder=DIR.",
    )
    p.add_argument("data", nargs="+", metavar="DATA", help="texts to learn from: imdb:unsup, imdb:train, or a data file")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="the encoder folder to write")
    p.add_argument("--config", metavar="TOML", help="a recipe: its [text] and [model] settings shape the encoder")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a setting, e.g. --set pretrain.epochs=2 (repeatable)",
    )
    p.add_argument("--text-column", metavar="NAME", help="column holding the text (default: text)")
    p.add_argument("--encoding", metavar="NAME", help="text encoding of data files (default: utf-8)")
    p.add_argument("--imdb-path", metavar="PATH", help="the IMDB archive or its extracted folder")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="a seeded sample of N texts from each DATA (quick runs)")
    p.add_argument("--overwrite", action="store_true", help="replace an encoder already in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _tracking_flags(p)

    p = sub.add_parser(
        "tune",
        help="search settings with Optuna, then train and test the best",
        description="Search the settings of the [tune] section of --config (ranges and choices) with a TPE sampler "
        "and a median pruner, scoring each trial on the validation split (never the test split); write "
        "OUTPUT/trials.csv, best.toml and search.png, then train the best settings in OUTPUT/best and test them.",
    )
    _config_flags(p)
    p.add_argument("--trials", type=_positive_int, default=20, metavar="N", help="finished trials the study holds in all (default: 20)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="start no trial after this long")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="the study (study.db, SQLite) and its files")
    p.add_argument("--resume", action="store_true", help="continue the study in DIR (or join it from another process)")
    p.add_argument("--overwrite", action="store_true", help="delete a study already in DIR and start again")
    _tracking_flags(p)

    p = sub.add_parser(
        "compare",
        help="the recurrent model and the order-blind MLP side by side",
        description="Train the configured RNN and a bag-of-embeddings MLP on the same data and report both.",
    )
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="TOML",
        help="also train this recipe on the same data, e.g. configs/seed.toml (repeatable)",
    )
    _config_flags(p)
    p.add_argument("--output", "-o", metavar="DIR", help="keep both runs, compare.json and compare.png here")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP, with a web page",
        description="Start the HTTP app: POST /predict, POST /explain, GET /health, GET /model, the API "
        "docs at /docs and a page at / to try the model in a browser.",
    )
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_positive_int, default=8000)
    p.add_argument(
        "--runtime", choices=["torch", "onnx"], default="torch", help="onnx: run the exported file with onnxruntime (see textrnn export)"
    )
    p.add_argument("--onnx", metavar="FILE", help="the ONNX file for --runtime onnx (default: MODEL_DIR/model.onnx)")
    p.add_argument("--max-text-chars", type=_positive_int, default=50_000, metavar="N", help="longest text accepted (default: 50000)")
    p.add_argument("--max-batch", type=_positive_int, default=128, metavar="N", help="most texts in one /predict request (default: 128)")
    p.add_argument("--max-body-bytes", type=_positive_int, default=1_000_000, metavar="N", help="largest request body (default: 1000000)")

    p = sub.add_parser(
        "explain",
        help="which words made the prediction (occlusion)",
        description="Predict a text and score each token: the change in the predicted label's probability "
        "when the token is replaced by <unk>.",
    )
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("text", nargs="?", help="the text (default: read stdin)")
    p.add_argument("--html", metavar="FILE", help="also write the highlighted text as a self-contained HTML page")
    p.add_argument("--top", type=_positive_int, metavar="N", help="print only the N tokens with the largest scores")
    p.add_argument("--format", choices=["text", "json"], default="text")

    p = sub.add_parser(
        "report",
        help="one HTML page about a training run",
        description="Write a self-contained HTML report of a run: config, metrics, plots, and a sample of "
        "misclassified test texts with their highlights.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="the --output directory of textrnn train")
    p.add_argument("--output", "-o", metavar="FILE", help="where to write the page (default: RUN_DIR/report.html)")
    p.add_argument("--examples", type=int, default=10, metavar="N", help="misclassified test texts to show (default: 10; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample of misclassified texts")

    p = sub.add_parser(
        "export",
        help="export a model to ONNX",
        description="Write the network as ONNX (dynamic batch and sequence length; inputs ids and lengths, "
        "int64) and check it against PyTorch with onnxruntime.",
    )
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("--onnx", metavar="FILE", help="the ONNX file to write (default: MODEL_DIR/model.onnx)")
    p.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset version (default: 17)")
    return parser


def _resolve_config(args) -> "Config":
    config = Config.from_toml(args.config) if args.config else Config()
    sets = {}
    if args.train:
        sets["data.train"] = args.train
        if not args.train.startswith("imdb") and args.test is None:
            sets["data.test"] = None  # your own data: no IMDB test set unless asked
    if args.test is not None:
        sets["data.test"] = None if args.test.lower() == "none" else args.test
    for flag, key in (
        ("text_column", "data.text_column"),
        ("label_column", "data.label_column"),
        ("validation", "data.validation"),
        ("label_separator", "data.label_separator"),
        ("label_columns", "data.label_columns"),
        ("encoding", "data.encoding"),
        ("imdb_path", "data.imdb_path"),
        ("limit", "data.limit"),
        ("unlabelled", "data.unlabelled"),
    ):
        if getattr(args, flag, None) is not None:
            sets[key] = getattr(args, flag)
    # in one override: --unlabelled is checked with the --set train.vat that it needs
    sets.update(parse_assignments(args.overrides))
    return config.override(sets) if sets else config


def _cmd_train(args) -> int:
    if args.resume:
        given = [
            flag
            for flag, value in (
                ("--config", args.config),
                ("--set", args.overrides),
                ("--train", args.train),
                ("--test", args.test),
                ("--validation", args.validation),
                ("--unlabelled", args.unlabelled),
                ("--text-column", args.text_column),
                ("--label-column", args.label_column),
                ("--label-separator", args.label_separator),
                ("--label-columns", args.label_columns),
                ("--encoding", args.encoding),
                ("--imdb-path", args.imdb_path),
                ("--limit", args.limit),
                ("--overwrite", args.overwrite),
            )
            if value
        ]
        if given:
            raise TextRNNError(f"--resume continues a run with the config saved in it; drop {', '.join(given)}.")
        if args.output and Path(args.output).resolve() != Path(args.resume).resolve():
            raise TextRNNError(
                f"--resume writes to the run it continues; drop --output (received: --output "
                f"{args.output!r} with --resume {args.resume!r})."
            )
        run = Path(args.resume)
        with _tracker(args, run.resolve().name, run / "tensorboard", fresh=False) as tracker:
            report = resume_run(args.resume, progress=not args.quiet, on_epoch_end=tracker.log_epoch)
            log_train_run(tracker, report, run)
    elif not args.output:
        raise TextRNNError("train needs --output DIR (or --resume RUN_DIR to continue an interrupted run).")
    else:
        config, run = _resolve_config(args), Path(args.output)
        with _tracker(args, run.resolve().name, run / "tensorboard") as tracker:
            tracker.log_params(flat_params(portable_config(config).to_dict(), skip_auto=True))  # "auto" ones once decided
            report = train_run(config, args.output, overwrite=args.overwrite, progress=not args.quiet, on_epoch_end=tracker.log_epoch)
            log_train_run(tracker, report, run)
    if "model_dir" in report:  # under torchrun, rank 0 alone reports
        print(describe(report))
    return 0


def _cmd_word2vec(args) -> int:
    t = TextConfig()
    tokenizer = Tokenizer.from_config(t)
    texts = [
        x for spec in args.data for x in load_data(spec, text_column=args.text_column, label_column=None, imdb_path=args.imdb_path).texts
    ]
    log.info("word2vec: %d texts", len(texts))
    path = train_word2vec(
        (tokenizer(x) for x in texts), args.output, dim=args.dim, epochs=args.epochs, min_count=args.min_count, seed=args.seed
    )
    print(f"wrote {path}: use --set model.pretrained_embeddings={path} --set model.embedding_dim={args.dim}")
    return 0


def _cmd_pretrain(args) -> int:
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise TextRNNError("pretrain runs in one process; run it without torchrun.")
    config = Config.from_toml(args.config) if args.config else Config()
    sets = {f"data.{k}": getattr(args, k) for k in ("text_column", "encoding", "imdb_path", "limit") if getattr(args, k)}
    config = config.override(sets) if sets else config
    config = config.override(args.overrides) if args.overrides else config
    if Path(args.output).exists() and not args.overwrite:  # before any work
        raise ArtifactError(f"{args.output!r} already exists; choose another --output or pass --overwrite.")
    out = Path(args.output)  # the encoder folder is written whole at the end: TensorBoard's events go beside it
    tracker = _tracker(args, out.resolve().name, out.with_name(out.name + ".tensorboard"))
    d, texts = config.data, []
    for spec in args.data:
        if spec.lower().replace(" ", "") == "imdb:test":
            log.warning("pretrain: imdb:test is the held-out test split; a model pretrained on it has read the texts it is tested on")
        data = load_data(spec, text_column=d.text_column, label_column=None, imdb_path=d.imdb_path, encoding=d.encoding)
        texts += (sample(data, d.limit, config.train.seed) if d.limit else data).texts
    with tracker:
        tracker.log_params(flat_params(config.to_dict()))
        path = pretrain_texts(texts, config, args.output, progress=not args.quiet, overwrite=args.overwrite, on_epoch_end=tracker.log_epoch)
        tracker.log_artifacts(path, "encoder")
    m = config.model
    print(
        f"wrote {path}: fine-tune it with --set pretrain.encoder={path}, and the model settings it was "
        f"pretrained with (the same --config, or --set model.cell={m.cell} --set model.embedding_dim={m.embedding_dim} "
        f"--set model.hidden_size={m.hidden_size} --set model.num_layers={m.num_layers} "
        f"--set model.bidirectional={str(m.bidirectional).lower()})"
    )
    return 0


def _cmd_tune(args) -> int:
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise TextRNNError("tune runs in one process; run it without torchrun.")
    if not args.config:
        raise TextRNNError("tune needs --config FILE with a [tune] section: the settings to search.")
    out = Path(args.output)
    tracker = _tracker(args, f"tune {out.resolve().name}", out / "tensorboard" / "study", fresh=not args.resume)
    config = _resolve_config(args)
    with tracker:
        result = tune_run(
            args.config, config, out, args.trials, args.timeout, args.resume, args.overwrite, tracker, progress=not args.quiet
        )
    print(format_tune(result))
    print(describe(result["report"]))
    return 0


def _cmd_compare(args) -> int:
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise TextRNNError("compare runs in one process; under torchrun, use train (once per model).")

    result = compare_run(_resolve_config(args), args.output, progress=not args.quiet, overwrite=args.overwrite, recipes=args.recipe)
    print(format_compare(result))
    return 0


def _cmd_evaluate(args) -> int:
    keys = ("text_column", "label_column", "label_separator", "label_columns", "encoding", "imdb_path")
    data = {k: getattr(args, k) for k in keys if getattr(args, k)}
    m = evaluate_run(args.model, args.data, data)
    print(json.dumps(m, indent=2) if args.format == "json" else format_report(m, f"{args.data}"))
    return 0


def _read_texts(args) -> list[str]:
    if args.texts and args.input:
        raise TextRNNError("Give texts as arguments or with --input, not both.")
    if args.texts:
        return list(args.texts)
    if args.input:
        path = Path(args.input)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise TextRNNError(f"Input file not found: {str(path)!r}")
            return path.read_text(encoding="utf-8", errors="replace").splitlines()
        return read_table(path, text_column=args.text_column, label_column=None).texts
    if sys.stdin is None or sys.stdin.isatty():
        raise TextRNNError("No texts: give them as arguments, with --input FILE, or on stdin.")
    return sys.stdin.read().splitlines()


def _predict_proba(clf, texts: list[str], batch_size: int, progress: bool):
    """predict_proba in chunks under a bar on a terminal; on a pipe, one line at the end."""
    if not progress or len(texts) <= batch_size:
        return clf.predict_proba(texts, batch_size=batch_size)
    t0, chunk, parts = time.perf_counter(), batch_size * 4, []
    with Progress(len(texts), "predict", "text") as bar:
        for start in range(0, len(texts), chunk):
            parts.append(clf.predict_proba(texts[start : start + chunk], batch_size=batch_size))
            bar.update(len(parts[-1]))
    seconds = time.perf_counter() - t0
    log.info("predicted %d texts in %.1fs (%.0f texts/s)", len(texts), seconds, len(texts) / max(seconds, 1e-9))
    return np.concatenate(parts)


def _cmd_predict(args) -> int:
    if args.output:
        return _stream_predict(args)
    stray = [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite)) if on]
    if stray:
        raise TextRNNError(f"{' and '.join(stray)} only apply with --output.")
    clf = TextClassifier.load(args.model, device=args.device)
    texts = _read_texts(args)
    proba = _predict_proba(clf, texts, args.batch_size, progress=bool(args.input) and not args.quiet)
    out = sys.stdout
    for text, p, label in zip(texts, proba, clf.labels_from(proba)):
        short = text if len(text) <= 70 else text[:67] + "..."
        if args.format == "json":
            key = "labels" if clf.multilabel_ else "label"
            out.write(
                json.dumps({"text": text, key: label, "probabilities": {str(c): round(float(v), 6) for c, v in zip(clf.classes_, p)}})
            )
            out.write("\n")
        elif clf.multilabel_:  # the labels over their thresholds, each with its probability
            shown = ", ".join(f"{c} {v:.4f}" for c, v in zip(clf.classes_, p) if c in label) or "(none)"
            out.write(f"{shown}\t{short}\n")
        else:
            i = int(p.argmax())
            out.write(f"{clf.classes_[i]}\t{p[i]:.4f}\t{short}\n")
    return 0


def _stream_predict(args) -> int:
    if not args.input or args.texts:
        raise TextRNNError("--output streams a file: give it with --input (and no texts as arguments).")
    predict_file(
        args.model,
        args.input,
        args.output,
        text_column=args.text_column,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    return 0


def _cmd_inspect(args) -> int:
    text = args.text if args.text is not None else (sys.stdin.read() if sys.stdin and not sys.stdin.isatty() else None)
    if text is None:
        raise TextRNNError("No text: give it as an argument or on stdin.")
    if args.model:
        clf = TextClassifier.load(args.model)
        tokenizer, vocab, tcfg = clf.tokenizer_, clf.vocab_, clf.config_.text
        source = f"the vocabulary of {args.model} ({len(vocab):,} tokens)"
    else:
        tcfg = TextConfig()
        tokenizer = Tokenizer(tcfg.lower, tcfg.strip_html, tcfg.normalize)
        vocab = Vocabulary.build([tokenizer(text)])
        source = "a vocabulary built from this text alone (pass --model to use a trained model's)"
    max_length = args.max_length or (tcfg.length if args.model else 20)
    truncating = args.truncating or tcfg.truncating
    tokens = tokenizer(text)
    ids = vocab.encode(tokens)
    cut = truncate(ids, max_length, truncating, tcfg.head_fraction)
    padded, lengths = pad([cut], max_length, padding=args.padding, truncating=truncating, head_fraction=tcfg.head_fraction)
    unknown = [t for t, i in zip(tokens, ids) if i == UNK_ID]
    print(f"1. raw text ({len(text)} characters)\n   {text!r}")
    print(
        f"2. cleaned (lower={tokenizer.lower}, strip_html={tokenizer.strip_html}, normalize={tokenizer.normalize})\n"
        f"   {tokenizer.clean(text)!r}"
    )
    print(f"3. tokens ({len(tokens)})\n   {tokens}")
    print(
        f"4. ids from {source}; unknown words -> {UNK_ID} (<unk>), marked *\n   "
        + " ".join(f"{t}={i}{'*' if i == UNK_ID else ''}" for t, i in zip(tokens, ids))
    )
    if unknown:
        print(f"   unknown: {sorted(set(unknown))}")
    print(f"5. truncated to max_length={max_length} ({truncating}): {len(cut)} ids kept of {len(ids)}")
    print(f"6. padded ({args.padding}, <pad>={PAD_ID}) to {max_length}: real length {int(lengths[0])}\n   {padded[0].tolist()}")
    return 0


def _cmd_serve(args) -> int:
    serve(
        args.model,
        host=args.host,
        port=args.port,
        runtime=args.runtime,
        onnx_path=args.onnx,
        max_text_chars=args.max_text_chars,
        max_batch=args.max_batch,
        max_body_bytes=args.max_body_bytes,
    )
    return 0


def _cmd_explain(args) -> int:
    text = args.text if args.text is not None else (sys.stdin.read() if sys.stdin and not sys.stdin.isatty() else None)
    if text is None:
        raise TextRNNError("No text: give it as an argument or on stdin.")
    result = explain(TextClassifier.load(args.model), text)
    if args.format == "json":
        print(json.dumps(result))
    else:
        print(format_text(result, top=args.top))
    if args.html:
        Path(args.html).write_text(to_html(result), encoding="utf-8")
        log.info("wrote %s", args.html)
    return 0


def _cmd_report(args) -> int:
    path = build_report(args.run, args.output, examples=args.examples, seed=args.seed)
    print(path)
    return 0


def _cmd_export(args) -> int:
    result = export_onnx(args.model, args.onnx, opset=args.opset)
    diff = result["max_abs_diff"]
    print(result["path"] + ("" if diff is None else f"  (onnxruntime vs PyTorch: max |difference| {diff:.2e})"))
    return 0


COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "inspect": _cmd_inspect,
    "compare": _cmd_compare,
    "serve": _cmd_serve,
    "explain": _cmd_explain,
    "report": _cmd_report,
    "export": _cmd_export,
    "word2vec": _cmd_word2vec,
    "pretrain": _cmd_pretrain,
    "tune": _cmd_tune,
}


_LEVEL_SET = {"level": logging.NOTSET}  # the level main() last gave textrnn's logger


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed, one line)
        return int(e.code or 0)
    if not args.command:
        parser.print_help()
        return 2

    # under torchrun only rank 0 talks; the others report warnings and errors only
    quiet = getattr(args, "quiet", False) or os.environ.get("RANK", "0") != "0"
    # textrnn's own lines at INFO; other libraries' (matplotlib's "generated new fontManager") only
    # from WARNING up, as the root logger's level leaves them
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    textrnn_log = logging.getLogger("textrnn")
    if textrnn_log.level in (logging.NOTSET, _LEVEL_SET["level"]):  # a level set by someone else (a test) stays
        _LEVEL_SET["level"] = logging.WARNING if quiet else logging.INFO
        textrnn_log.setLevel(_LEVEL_SET["level"])
    try:
        return COMMANDS[args.command](args)
    except TextRNNError as e:
        print(f"textrnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:  # a missing or unreadable path, a full disk: one line, never a traceback
        where = f": {e.filename!r}" if e.filename else ""
        print(f"textrnn {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if isinstance(e, TrainingInterrupted) and e.checkpoint_dir is not None:
            print(
                f"textrnn {args.command}: interrupted: {e} Continue with: textrnn train --resume {Path(e.checkpoint_dir).parent}",
                file=sys.stderr,
            )
        else:
            print(f"textrnn {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # leave the process group torchrun's train joined
            shutdown()


if __name__ == "__main__":
    sys.exit(main())
