"""Configuration: nested dataclasses, validated on creation, read from TOML, overridden with
dotted ``section.key=value`` strings, and saved into every artifact and results file."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from .errors import ConfigError, did_you_mean, expected_one_of

log = logging.getLogger("textrnn")

CELLS = ("lstm", "gru", "rnn")
ARCHS = ("rnn", "mlp")
POOLINGS = ("last", "max", "mean")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "onecycle", "linear")
MONITORS = ("val_accuracy", "val_loss")
PRECISIONS = ("auto", "float32", "bfloat16")
TASKS = ("auto", "binary", "multiclass", "multilabel")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# A setting whose value is AUTO is decided from the training data when training starts (adaptive.py);
# the decided value is what the trained model's config, the run's config.toml and metrics.json hold.
AUTO = "auto"


def decided(value: int | str | None, name: str) -> int | None:
    """A setting's value once its "auto" has been decided (adaptive.py); "auto" reaching here is a bug."""
    if isinstance(value, str):
        raise ConfigError(f"{name}={value!r} was not decided before use; this is a bug in textrnn, please report it.")
    return value


def decided_int(value: int | str | None, name: str) -> int:
    out = decided(value, name)
    if out is None:
        raise ConfigError(f"{name} cannot be empty.")
    return out


def _positive(obj: Any, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None or value == AUTO:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
            bound = "at least 0" if allow_zero else "greater than 0"
            raise ConfigError(f"{name} must be {bound}. Received: {name}={value!r}")


def _fraction(obj: Any, name: str, low_open: bool = False, high_open: bool = True) -> None:
    value = getattr(obj, name)
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and ((0 < value if low_open else 0 <= value) and (value < 1 if high_open else value <= 1))
    )
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{name} must be in {lo}0, 1{hi}. Received: {name}={value!r}")


@dataclass
class DataConfig:
    """Where the texts come from. ``train``/``test`` are ``imdb``/``imdb:test`` or file paths."""

    train: str = "imdb:train"
    test: str | None = "imdb:test"
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    imdb_path: str | None = None  # else $TEXTRNN_IMDB, else the cache, else download
    limit: int | None = None  # train on a seeded sample of this many rows (quick runs)
    validation_split: float = 0.1
    validation: str | None = None  # a labelled file (e.g. a set's dev file) instead of the split
    cache_tokens: bool = True  # cache tokenized corpora of 1,000+ texts (the slow part of preparation)
    # One label per text ("binary", "multiclass") or a set of labels ("multilabel"); "auto": a set
    # when the labels are lists (JSONL/Parquet), split by label_separator, or from label_columns.
    task: str = AUTO
    label_separator: str | None = None  # a CSV/TSV label cell holding several labels, e.g. "|"
    label_columns: str | None = None  # "a,b,c": several 0/1 columns, one per label (multi-label)
    # Texts without labels that train beside the labelled ones through train.vat and
    # train.entropy_min: "imdb:unsup" (IMDB's 50,000 unlabelled reviews) or data files (their text
    # column; any labels ignored), one or a list. Encoded with the training vocabulary; any text
    # identical to a validation or test text is dropped. None: none.
    unlabelled: list[str] | str | None = None

    def __post_init__(self) -> None:
        _positive(self, "limit")
        if isinstance(self.unlabelled, str):
            self.unlabelled = [self.unlabelled]
        if self.unlabelled is not None and (
            not isinstance(self.unlabelled, list) or not all(isinstance(s, str) and s.strip() for s in self.unlabelled)
        ):
            raise ConfigError(f"unlabelled must be a data source or a list of them. Received: unlabelled={self.unlabelled!r}")
        self.unlabelled = list(self.unlabelled) if self.unlabelled else None  # a copy; an empty list: none
        _fraction(self, "validation_split", low_open=False)
        if self.task not in TASKS:
            raise expected_one_of("task", self.task, TASKS)
        if self.label_separator is not None and (not isinstance(self.label_separator, str) or not self.label_separator):
            raise ConfigError(f"label_separator must be a non-empty string. Received: label_separator={self.label_separator!r}")
        if self.label_columns is not None and not self.columns:
            raise ConfigError(f"label_columns must name columns, comma-separated. Received: label_columns={self.label_columns!r}")

    @property
    def columns(self) -> list[str]:
        """``label_columns`` as a list of names (empty when unset)."""
        return [c.strip() for c in (self.label_columns or "").split(",") if c.strip()]


@dataclass
class TextConfig:
    """Tokenizer and vocabulary settings; they travel with the model."""

    lower: bool = True
    strip_html: bool = True
    normalize: str | None = "NFKC"
    max_vocab_size: int | None = 30000  # counts <pad> and <unk>
    min_freq: int = 2  # words seen once become <unk>: better on every set measured (docs/defaults.md)
    max_length: int | str = AUTO  # "auto": from the texts' lengths (adaptive.py)
    truncating: str = "head_tail"  # post | pre | head_tail
    head_fraction: float = 0.25  # with head_tail: share of max_length kept from the start

    def __post_init__(self) -> None:
        _positive(self, "max_vocab_size", "min_freq", "max_length")
        if self.max_vocab_size is not None and self.max_vocab_size < 3:
            raise ConfigError(f"max_vocab_size must be at least 3. Received: max_vocab_size={self.max_vocab_size}")
        if self.truncating not in ("post", "pre", "head_tail"):
            raise expected_one_of("truncating", self.truncating, ("post", "pre", "head_tail"))
        _fraction(self, "head_fraction", high_open=False)

    @property
    def length(self) -> int:
        """``max_length`` once decided (a trained model's config always has it)."""
        return decided_int(self.max_length, "text.max_length")


@dataclass
class ModelConfig:
    """Embedding -> LSTM | GRU | RNN -> pooling -> Dense (``arch="rnn"``), or the order-blind
    bag-of-embeddings MLP (``arch="mlp"``)."""

    arch: str = "rnn"
    cell: str = "lstm"  # or '+'-joined, e.g. "lstm+gru": an ensemble (see models.Ensemble)
    # Copies of the model, each its own initialisation, trained side by side and averaged (an
    # ensemble); "auto": 3 on small data, where they cost seconds and cut the variance, else 1
    # (adaptive.py). With a '+'-joined cell, each copy holds one model of each cell.
    members: int | str = AUTO
    embedding_dim: int = 64
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.2  # between recurrent layers and before the output layer
    embedding_dropout: float = 0.2  # drops whole embedding channels (spatial dropout)
    pooling: str = "last+max+mean"  # '+'-joined subset of last, max, mean; "concat" = all three
    pretrained_embeddings: str | None = None
    embeddings_format: str = "auto"
    freeze_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise expected_one_of("arch", self.arch, ARCHS)
        if not isinstance(self.cell, str) or not self.cell or any(c not in CELLS for c in self.cell.split("+")):
            bad = next((c for c in str(self.cell).split("+") if c not in CELLS), self.cell)
            raise ConfigError(
                f"Expected one of {{'gru', 'lstm', 'rnn'}}, or several '+'-joined for an ensemble "
                f"(e.g. 'lstm+gru'). Received: cell={self.cell!r}." + did_you_mean(str(bad), CELLS)
            )
        _positive(self, "embedding_dim", "hidden_size", "num_layers", "members")
        _fraction(self, "dropout")
        _fraction(self, "embedding_dropout")
        if self.pooling == "concat":
            self.pooling = "last+max+mean"
        parts = self.pooling.split("+") if isinstance(self.pooling, str) else [self.pooling]
        if not parts or any(p not in POOLINGS for p in parts) or len(set(parts)) != len(parts):
            bad = next((p for p in parts if p not in POOLINGS), self.pooling)
            raise ConfigError(
                f"pooling must be '+'-joined names from {{'last', 'max', 'mean'}} or 'concat'. "
                f"Received: pooling={self.pooling!r}" + did_you_mean(str(bad), POOLINGS)
            )
        if self.embeddings_format not in ("auto", "glove", "word2vec", "word2vec-binary", "fasttext"):
            raise expected_one_of("embeddings_format", self.embeddings_format, ("auto", "glove", "word2vec", "word2vec-binary", "fasttext"))

    @property
    def poolings(self) -> list[str]:
        return self.pooling.split("+")

    @property
    def cells(self) -> list[str]:
        """One cell per member: ``["lstm"]`` for a single model, ``["lstm", "gru"]`` for "lstm+gru",
        ``["lstm"] * 3`` for ``members=3``. ``members="auto"`` counts as 1 until training decides it."""
        return self.cell.split("+") * (self.members if isinstance(self.members, int) else 1)


def check_pretrainable(model: "ModelConfig") -> None:
    """Language-model pretraining needs the recurrent model; bidirectional, one layer only."""
    if model.arch != "rnn" or len(model.cells) > 1:
        raise ConfigError(
            f"Language-model pretraining needs model.arch='rnn', a single model.cell and model.members=1. "
            f"Received: arch={model.arch!r}, cell={model.cell!r}, members={model.members!r}"
        )
    if model.bidirectional and model.num_layers > 1:
        raise ConfigError(
            f"Language-model pretraining of a bidirectional model needs num_layers=1 (a second layer "
            f"would show each direction the tokens it predicts). Received: num_layers={model.num_layers} "
            f"with bidirectional=true; use num_layers=1 or bidirectional=false."
        )


@dataclass
class TrainConfig:
    optimizer: str = "adam"
    learning_rate: float | str = AUTO  # "auto": 6e-3 on large data (over 20,000 texts), else 3e-3 (adaptive.py)
    weight_decay: float = 0.0
    schedule: str = "onecycle"  # constant | onecycle | linear (decay to 0)
    epochs: int | str = AUTO  # "auto": a ceiling from the data's size (adaptive.py); early stopping ends sooner
    batch_size: int = 64
    clip_grad_norm: float | None = 1.0
    class_weight: str | None = None  # None | "balanced"
    early_stopping_patience: int | str | None = AUTO  # epochs without improvement; "auto": a third of the epochs, at least 2
    monitor: str = "val_accuracy"
    seed: int = 0
    equal_length_batches: bool = True  # trim each training batch to its shortest text: PyTorch's fast path
    # Fine-tuning a pretrained encoder (ULMFiT): the embedding and recurrent layers learn at
    # learning_rate x this (discriminative rates; < 1 keeps them nearer what pretraining found),
    # and stay frozen, the head alone training, for the first freeze_encoder_epochs epochs.
    encoder_lr_multiplier: float = 1.0
    freeze_encoder_epochs: int = 0
    # Adversarial training (Goodfellow et al. 2015; Miyato et al. 2016, on text): each step also
    # trains on the embedded texts pushed by this L2 norm (per text) in the direction that raises
    # the loss most. 0 = off. It costs about two steps' time (cpu-notes in benchmarks/results/).
    # "auto": 1.0 on small data, where it regularises most and costs seconds, else 0 (adaptive.py).
    adversarial: float | str = AUTO
    # Virtual adversarial training (Miyato, Dai & Goodfellow 2017): each step also minimises the KL
    # between the prediction on the embedded texts and on them pushed by this L2 norm (per text) in
    # the direction that changes the prediction most (one power iteration); needs no labels. 0 = off.
    # About three steps' time. With data.unlabelled, also on as many texts without labels a step.
    vat: float = 0.0
    # Entropy minimisation (Grandvalet & Bengio 2005; with VAT on text, Sachan et al. 2019): adds
    # this times the mean entropy of the prediction (each ensemble member's own) on the step's texts
    # without labels (data.unlabelled), or, when there are none, on its labelled texts. 0 = off.
    entropy_min: float = 0.0
    # The training targets' smoothing (Szegedy et al. 2016): each sigmoid's or softmax's target is
    # (1 - this) x the label + this / the number of outcomes. 0 = off; validation loss is the plain one.
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise expected_one_of("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise expected_one_of("schedule", self.schedule, SCHEDULES)
        if self.monitor not in MONITORS:
            raise expected_one_of("monitor", self.monitor, MONITORS)
        if self.class_weight not in (None, "balanced"):
            raise expected_one_of("class_weight", self.class_weight, ("balanced",))
        _positive(self, "learning_rate", "epochs", "batch_size", "clip_grad_norm")
        _positive(self, "weight_decay", "early_stopping_patience", "freeze_encoder_epochs", "adversarial", "vat", allow_zero=True)
        _positive(self, "entropy_min", allow_zero=True)
        _fraction(self, "label_smoothing")
        _positive(self, "encoder_lr_multiplier")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer. Received: seed={self.seed!r}")


@dataclass
class PretrainConfig:
    """What is learnt from unlabelled texts before the classifier (pretrain.py): word2vec vectors
    that start the embedding, or a language-model encoder (ULMFiT) that starts the embedding and
    the recurrent layer. Both are cached by content: a rerun reuses them."""

    # word2vec vectors trained on the training texts plus these unlabelled ones (e.g. "imdb:unsup")
    word2vec_data: str | None = None
    word2vec_epochs: int = 5
    # a language model pretrained on the training texts plus these unlabelled ones, then fine-tuned
    # as the classifier's encoder; ``encoder`` is such an encoder folder itself (set by the run, or
    # by you after ``textrnn pretrain``)
    data: str | None = None
    encoder: str | None = None
    epochs: int = 1
    bptt: int = 70  # tokens per truncated-backpropagation chunk
    batch_size: int = 64  # parallel streams
    learning_rate: float = 3e-3
    dropout: float = 0.1  # on the embeddings and on the recurrent outputs
    max_tokens: int | None = None  # train on at most this many tokens of the stream (budgets)
    max_seconds: float | None = None  # stop after this long; the rate's cycle follows the clock
    bf16_softmax: bool = False  # bfloat16 autocast of the softmax on CUDA (ignored on CPU)

    def __post_init__(self) -> None:
        _positive(self, "word2vec_epochs", "epochs", "bptt", "batch_size", "learning_rate", "max_tokens", "max_seconds")
        _fraction(self, "dropout")


@dataclass
class RuntimeConfig:
    """Where and how the arithmetic runs; none of it is what is learnt (except precision's rounding)."""

    # auto = cuda when torch sees a GPU, else cpu; or cpu, cuda, cuda:N. Under torchrun, auto and
    # cuda mean the GPU of the process's LOCAL_RANK. Checked for availability when training starts.
    device: str = "auto"
    num_threads: int | None = None  # torch threads; None = one per core
    # Arithmetic of the forward pass: "float32"; "bfloat16" (autocast: weights and optimizer stay
    # float32); "auto" = bfloat16 on a CPU that computes it natively (avx512_bf16 or AMX), where it
    # trains faster at the same validation accuracy (runtime.compute_dtype), else float32.
    precision: str = "auto"
    # On a CPU, a batch of more tokens than this runs in pieces of at most this many, accumulating
    # one gradient: the same step, faster, as each piece's activations stay in cache (pieces.py).
    # "auto": 6000, or one piece per core where the float32 C kernel trains an LSTM whose first
    # layer projects each distinct word of a piece once (pieces.piece_tokens); None: one piece per core
    micro_batch_tokens: int | str | None = AUTO
    checkpoint_every: int | None = 200  # steps between checkpoints (with a run dir); also at every epoch end

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ConfigError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Received: device={self.device!r}"
                + did_you_mean(str(self.device), ("auto", "cpu", "cuda"))
            )
        if self.precision not in PRECISIONS:
            raise expected_one_of("precision", self.precision, PRECISIONS)
        _positive(self, "num_threads", "checkpoint_every", "micro_batch_tokens")


# Settings that moved section (2026-11-29): old dotted name -> new. Old configs, --set keys and
# saved artifacts keep working, with one notice per key.
MOVED = {
    **{f"model.{k}": f"pretrain.{k}" for k in ("word2vec_data", "word2vec_epochs")},
    "model.pretrain_data": "pretrain.data",
    "model.pretrained_encoder": "pretrain.encoder",
    **{
        f"model.pretrain_{k}": f"pretrain.{k}"
        for k in ("epochs", "bptt", "batch_size", "learning_rate", "dropout", "max_tokens", "max_seconds")
    },
    "model.pretrain_bf16": "pretrain.bf16_softmax",
    **{f"train.{k}": f"runtime.{k}" for k in ("device", "num_threads", "precision", "micro_batch_tokens", "checkpoint_every")},
}
_noticed: set[str] = set()
# Sections of a recipe that another command reads and a Config leaves out: [tune], the search
# space of textrnn tune (tune.py), so that `textrnn train --config` takes the same file.
OTHER_SECTIONS = ("tune",)


def _moved(old: str, source: str, notify: bool = True) -> str:
    new = MOVED[old]
    if notify and old not in _noticed:
        _noticed.add(old)
        log.warning("%s: %s is now %s; read as that (rename it to silence this notice).", source, old, new)
    return new


def _move_old_keys(d: dict, source: str, notify: bool = True) -> dict:
    """A copy of the sections ``d`` with settings of their old sections moved to the new ones."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for old in MOVED:
        section, key = old.split(".")
        if isinstance(d.get(section), dict) and key in d[section]:
            new_section, new_key = _moved(old, source, notify).split(".")
            value = d[section].pop(key)
            target = d.setdefault(new_section, {})
            if isinstance(target, dict):
                target.setdefault(new_key, value)
    return d


def check_pretrain(model: "ModelConfig", pretrain: PretrainConfig) -> None:
    """The two ways of pretraining exclude each other; the language model needs a pretrainable model."""
    if (pretrain.data or pretrain.encoder) and (pretrain.word2vec_data or model.pretrained_embeddings):
        raise ConfigError(
            "A pretrained encoder (pretrain.data or pretrain.encoder) and pretrained vectors "
            "(pretrain.word2vec_data or model.pretrained_embeddings) both initialise the "
            "embedding; set one of them to none."
        )
    if pretrain.data:
        check_pretrainable(model)


def unlabelled_unused(train: TrainConfig, received: str) -> ConfigError:
    """The error for texts without labels given with nothing to train on them (``received``: what was given)."""
    return ConfigError(
        f"data.unlabelled feeds train.vat and train.entropy_min; set one. Received: {received} with "
        f"train.vat={train.vat!r} and train.entropy_min={train.entropy_min!r}"
    )


def check_unlabelled(data: DataConfig, train: TrainConfig) -> None:
    """Texts without labels train only through virtual adversarial training or entropy minimisation."""
    if data.unlabelled and not (train.vat or train.entropy_min):
        raise unlabelled_unused(train, f"data.unlabelled={data.unlabelled!r}")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    SECTIONS = ("data", "text", "model", "train", "pretrain", "runtime")

    def __post_init__(self) -> None:
        check_pretrain(self.model, self.pretrain)
        check_unlabelled(self.data, self.train)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config", notify: bool = True) -> "Config":
        """``notify=False`` maps settings of their old sections without a notice (a saved artifact
        of before: nothing for its user to rename)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a table of sections. Received: {type(d).__name__}")
        d = _move_old_keys(d, source, notify)
        d = {k: v for k, v in d.items() if k not in OTHER_SECTIONS}
        unknown = [k for k in d if k not in cls.SECTIONS]
        if unknown:
            raise ConfigError(
                f"{source}: unknown section {unknown[0]!r}; sections are {', '.join(cls.SECTIONS)}."
                + did_you_mean(unknown[0], cls.SECTIONS)
            )
        parts = {}
        for name in cls.SECTIONS:
            section_cls = _SECTION_TYPES[name]
            values = d.get(name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{name}] must be a table. Received: {values!r}")
            known = {f.name for f in fields(section_cls)}
            for key in values:
                if key not in known:
                    raise ConfigError(f"{source}: unknown setting {name}.{key}." + did_you_mean(key, known))
            try:
                typed = {k: _coerce(section_cls, k, v, f"{name}.{k}") for k, v in values.items()}
                parts[name] = section_cls(**typed)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        return cls(**parts)

    @classmethod
    def from_toml(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file not found: {str(path)!r}")
        try:
            d = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        return cls.from_dict(d, source=str(path))

    def to_toml(self) -> str:

        # TOML has no null: an unset optional value is written as the string "none", read back as None.
        def none_as_string(d):
            return {k: none_as_string(v) if isinstance(v, dict) else ("none" if v is None else v) for k, v in d.items()}

        return tomli_w.dumps(none_as_string(self.to_dict()))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def override(self, assignments: list[str] | dict[str, Any]) -> "Config":
        """A new config with ``section.key=value`` assignments applied (values parsed as TOML
        scalars where they parse, else taken as strings)."""
        d = self.to_dict()
        items = assignments.items() if isinstance(assignments, dict) else [_split_assignment(a) for a in assignments]
        for dotted, value in items:
            dotted = _moved(dotted, "override") if dotted in MOVED else dotted
            section, _, key = dotted.partition(".")
            if section not in self.SECTIONS or not key:
                raise ConfigError(
                    f"Overrides look like section.key=value with section in {', '.join(self.SECTIONS)}. "
                    f"Received: {dotted!r}." + did_you_mean(section, self.SECTIONS)
                )
            d[section][key] = _parse_value(value) if isinstance(value, str) and not isinstance(assignments, dict) else value
        return Config.from_dict(d, source="override", notify=False)


_SECTION_TYPES = {
    "data": DataConfig,
    "text": TextConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "pretrain": PretrainConfig,
    "runtime": RuntimeConfig,
}

# Flat keyword names accepted by TextClassifier(...) -> "section.field": every field by its name
# (the first section wins), and the [pretrain] ones also as pretrain_<name> (pretrain_epochs) and
# by their names of before (pretrained_encoder, pretrain_bf16).
FLAT_KEYS: dict[str, str] = {}
for _section, _cls in _SECTION_TYPES.items():
    for _f in fields(_cls):
        flat = f"pretrain_{_f.name}" if _section == "pretrain" and not _f.name.startswith("word2vec") else _f.name
        FLAT_KEYS.setdefault(flat, f"{_section}.{_f.name}")
for _old, _new in MOVED.items():
    FLAT_KEYS.setdefault(_old.split(".")[1], _new)


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``section.key=value`` strings as {dotted key: value parsed as override() parses it}: to apply
    them in one override with other settings, so that no setting is checked half-applied."""
    return {key: _parse_value(value) for key, value in map(_split_assignment, assignments)}


def _split_assignment(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"Overrides look like section.key=value. Received: {text!r}")
    key, _, value = text.partition("=")
    return key.strip(), value.strip()


def _parse_value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(section_cls: type, key: str, value: Any, name: str) -> Any:
    """Accept ints for floats; reject wrong types with a message naming the setting."""
    ftype = str(next(f.type for f in fields(section_cls) if f.name == key))
    if value is None or (isinstance(value, str) and value.strip().lower() == "none" and "None" in ftype):
        if "None" in ftype:
            return None
        raise ConfigError(f"{name} cannot be empty.")
    if ftype.startswith("int | str"):  # a number, or "auto" (decided from the data)
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        if (
            isinstance(value, str)
            or isinstance(value, bool)
            or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
        ):
            raise ConfigError(f"{name} must be an integer or 'auto'. Received: {name}={value!r}")
        return int(value)
    if ftype.startswith("float | str"):  # a number, or "auto"
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name} must be a number or 'auto'. Received: {name}={value!r}")
    if ftype.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false. Received: {name}={value!r}")
    if ftype.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name} must be a number. Received: {name}={value!r}")
    if ftype.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name} must be an integer. Received: {name}={value!r}")
    if ftype.startswith("str"):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string. Received: {name}={value!r}")
    return value
