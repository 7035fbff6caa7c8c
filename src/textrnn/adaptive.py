"""What ``"auto"`` means: settings decided from the training data before training.

The defaults were first chosen on IMDB (25,000 reviews of ~230 words), where 3 epochs, words seen
twice and 400 tokens serve. On a few thousand sentences of ten words the same numbers stop
training after a few hundred steps while validation accuracy still rises. So a setting left at
``"auto"`` follows what can be seen before training (the number of texts, their lengths, the
number of tokens); a setting given explicitly always wins. The rules and the measurements
behind them are in docs/defaults.md (benchmarks/defaults.py, benchmarks/results/defaults-*.json).

Every decision is logged in one block before training and written into the trained model's config
(and so into the run's config.toml and metrics.json), so a rerun from that config repeats it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .config import AUTO, Config, decided_int

# One onecycle schedule of about this many optimizer steps: ~3 epochs of IMDB at batch 64, ~10
# of a 9,000-sentence set; early stopping (restoring the best epoch) ends a run sooner. At least
# two passes (three until 2026-12-01): a set of over ~30,000 texts already takes more steps than
# the target in two, and SST-2's 67,000 phrases lost nothing on its dev set with two (84.82 against
# 84.59, seeds 0-2, docs/defaults.md) in two thirds of the time.
TARGET_STEPS = 1200
MIN_EPOCHS, MAX_EPOCHS = 2, 30
# Texts cut to the length that covers this share of them, rounded up to a multiple of 8, within
# these bounds: the recurrent layer's time grows with the length, and a review's verdict is in
# its first and last sentences (truncating="head_tail").
LENGTH_QUANTILE = 0.99
MIN_LENGTH, MAX_LENGTH = 8, 400

# Three models averaged where training is cheap: 1,000 texts or more (below, validation is too
# small to tell), at most ENSEMBLE_TOKEN_PASSES tokens over all epochs (the sentence sets, not
# IMDB's 18 million, where one model keeps the default's time). They train side by side for ~1.7x
# one model's time, and cut validation error on every small set measured (docs/defaults.md).
ENSEMBLE_MEMBERS = 3
ENSEMBLE_MIN_TEXTS = 1_000
ENSEMBLE_TOKEN_PASSES = 3_000_000

# Adversarial training (train.adversarial, Miyato et al. 2016: each step also trains on the embedded
# texts pushed by this L2 norm per text where the loss rises most) where data is small: at most
# ADVERSARIAL_MAX_TEXTS texts and ENSEMBLE_TOKEN_PASSES tokens over all epochs. There a model
# overfits within a few epochs and the push regularises it: +2.2 points on SST-5's dev set, seeds 0
# and 1 (docs/defaults.md), at ~1.4x the step time. Above, one pass costs too much for what it gives
# in a default (IMDB's best recipe turns it on: +0.5 for 2x the time).
ADVERSARIAL_NORM = 1.0
ADVERSARIAL_MAX_TEXTS = 20_000

# The one-cycle schedule's peak learning rate (train.learning_rate). Large data (over
# ADVERSARIAL_MAX_TEXTS texts) trains 3 epochs, whose steps keep seeing new texts, and gains from a
# higher peak: on IMDB's validation split, seeds 0-4, 6e-3 beat 3e-3 on every seed, +1.17 mean
# (4e-3: +0.89; 2e-3: -1.20); SST-2, seeds 0-2: +0.26 on its dev set, +0.86 on validation. A few thousand texts
# over ~10 epochs lose with it (SST-5's dev set: -1.75, seeds 0-2), so smaller data keeps 3e-3, as
# do the MLP and a pretrained encoder, whose rates were measured at 3e-3 (docs/defaults.md).
LEARNING_RATE, LARGE_DATA_LEARNING_RATE = 3e-3, 6e-3

# TextClassifier.fit without validation data holds out data.validation_split of this many texts or
# more for early stopping (scikit-learn's HistGradientBoosting does the same above 10,000 rows).
MIN_TEXTS_TO_HOLD_OUT = 500


@dataclass
class Decision:
    key: str  # section.field
    value: Any
    reason: str


def data_summary(lengths: np.ndarray, counts: np.ndarray) -> dict:
    """What the decisions look at: the texts' token lengths and the corpus' token counts."""
    lengths = np.asarray(lengths)
    return {
        "texts": int(lengths.size),
        "tokens": int(lengths.sum()),
        "median_length": float(np.median(lengths)) if lengths.size else 0.0,
        "length_quantile": int(np.quantile(lengths, LENGTH_QUANTILE)) if lengths.size else 0,
        "types": int(np.count_nonzero(counts)),
        "types_seen_once": int(np.count_nonzero(np.asarray(counts) == 1)),
    }


def _max_length(summary: dict) -> Decision:
    q = summary["length_quantile"]
    value = min(MAX_LENGTH, max(MIN_LENGTH, 8 * math.ceil(q / 8)))
    why = f"{LENGTH_QUANTILE:.0%} of the texts have at most {q:,} tokens"
    if value == MAX_LENGTH and q > MAX_LENGTH:
        why += f"; capped at {MAX_LENGTH} for speed, keeping each text's start and end"
    return Decision("text.max_length", value, why)


def epochs_for(texts: int, batch_size: int, world_size: int = 1) -> Decision:
    """The epoch ceiling: one schedule of about TARGET_STEPS optimizer steps."""
    steps = max(1, math.ceil(math.ceil(texts / batch_size) / world_size))
    value = min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_STEPS / steps)))
    return Decision("train.epochs", value, f"about {TARGET_STEPS:,} steps at {steps:,} an epoch (batch {batch_size})")


def patience_for(epochs: int) -> Decision:
    """Early stopping's patience: a third of the epochs, at least 2. A dip of one or two epochs in
    a long schedule is noise on small data (validation recovers as the rate anneals: SST-5's
    0.405, 0.381, 0.399, 0.412), and a quarter stopped there (docs/defaults.md)."""
    return Decision("train.early_stopping_patience", max(2, math.ceil(epochs / 3)), f"a third of the {epochs} epochs, at least 2")


def members_for(config: Config, summary: dict, epochs: int) -> Decision:
    """How many copies of the model to average: ENSEMBLE_MEMBERS on small data, else 1."""
    passes = _token_passes(summary, epochs)
    if config.model.arch != "rnn" or config.pretrain.data or config.pretrain.encoder:
        return Decision("model.members", 1, "one model: an ensemble needs the recurrent model without a pretrained encoder")
    if summary["texts"] < ENSEMBLE_MIN_TEXTS:
        return Decision("model.members", 1, f"one model: under {ENSEMBLE_MIN_TEXTS:,} texts")
    if passes > ENSEMBLE_TOKEN_PASSES:
        return Decision("model.members", 1, f"one model: {passes:,} tokens over {epochs} epochs")
    why = f"averaged, side by side: small data ({passes:,} tokens over {epochs} epochs) trains fast"
    return Decision("model.members", ENSEMBLE_MEMBERS, why)


def _token_passes(summary: dict, epochs: int) -> int:
    """Tokens trained on over all epochs (each text cut to the decided max_length)."""
    return min(summary["tokens"], summary["texts"] * summary.get("max_length", MAX_LENGTH)) * epochs


def adversarial_for(summary: dict, epochs: int) -> Decision:
    """Adversarial training's norm: ADVERSARIAL_NORM on small data, else 0 (off)."""
    passes = _token_passes(summary, epochs)
    if summary["texts"] > ADVERSARIAL_MAX_TEXTS:
        return Decision("train.adversarial", 0.0, f"off: over {ADVERSARIAL_MAX_TEXTS:,} texts, data enough to regularise")
    if passes > ENSEMBLE_TOKEN_PASSES:
        return Decision("train.adversarial", 0.0, f"off: {passes:,} tokens over {epochs} epochs")
    return Decision("train.adversarial", ADVERSARIAL_NORM, "small data: each step also trains on its texts pushed where the loss rises")


def learning_rate_for(config: Config, texts: int) -> Decision:
    """The peak learning rate: LARGE_DATA_LEARNING_RATE for the recurrent model on large data, else LEARNING_RATE."""
    if config.model.arch != "rnn" or config.pretrain.encoder or config.pretrain.data:
        return Decision("train.learning_rate", LEARNING_RATE, "the rate measured for the MLP and for a pretrained encoder")
    if texts <= ADVERSARIAL_MAX_TEXTS:
        return Decision("train.learning_rate", LEARNING_RATE, f"{texts:,} texts: many epochs, a gentler peak")
    why = f"large data ({texts:,} texts, over {ADVERSARIAL_MAX_TEXTS:,}): few epochs, a higher peak"
    return Decision("train.learning_rate", LARGE_DATA_LEARNING_RATE, why)


def decide(config: Config, lengths: np.ndarray, counts: np.ndarray, world_size: int = 1) -> tuple[Config, list[Decision], dict]:
    """``config`` with its "auto" settings decided from the training texts' token ``lengths`` and
    the corpus' token ``counts``; the decisions; the summary they came from."""
    summary = data_summary(lengths, counts)
    decisions = []
    length = config.text.max_length
    if length == AUTO:
        decisions.append(_max_length(summary))
        length = decisions[-1].value
    if config.train.epochs == AUTO:
        decisions.append(epochs_for(summary["texts"], config.train.batch_size, world_size))
    epochs = decisions[-1].value if config.train.epochs == AUTO else decided_int(config.train.epochs, "train.epochs")
    if config.train.early_stopping_patience == AUTO:
        decisions.append(patience_for(epochs))
    if config.model.members == AUTO:
        decisions.append(members_for(config, {**summary, "max_length": length}, epochs))
    if config.train.adversarial == AUTO:
        decisions.append(adversarial_for({**summary, "max_length": length}, epochs))
    if config.train.learning_rate == AUTO:
        decisions.append(learning_rate_for(config, summary["texts"]))
    if decisions:
        config = config.override({d.key: d.value for d in decisions})
    return config, decisions, summary


def resolve_train(train_config: Any, texts: int, world_size: int = 1) -> Any:
    """A TrainConfig with an "auto" epoch count and patience decided (for callers of the trainer itself)."""
    if train_config.epochs == AUTO:
        train_config = replace(train_config, epochs=epochs_for(texts, train_config.batch_size, world_size).value)
    if train_config.early_stopping_patience == AUTO:
        train_config = replace(train_config, early_stopping_patience=patience_for(train_config.epochs).value)
    if train_config.adversarial == AUTO:  # the texts' lengths are not known here: off
        train_config = replace(train_config, adversarial=0.0)
    if train_config.learning_rate == AUTO:  # the model is not known here: the rate for any model
        train_config = replace(train_config, learning_rate=LEARNING_RATE)
    return train_config


def describe(decisions: list[Decision], summary: dict) -> str:
    """The block printed before training."""
    head = (
        f"decided from the data ({summary['texts']:,} texts, median {summary['median_length']:.0f} tokens, "
        f"{summary['types']:,} distinct words); set any of these to override:"
    )
    lines = [head]
    for d in decisions:
        reason = f"at most: {d.reason}; early stopping keeps the best epoch" if d.key == "train.epochs" else d.reason
        lines.append(f"  {d.key:<29} {d.value:>4}   {reason}")
    return "\n".join(lines)
