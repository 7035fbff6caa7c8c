"""``TextClassifier``: tokenizer + vocabulary + network + labels, as one estimator in
scikit-learn's manner, saved as one pickle-free directory.

The artifact directory::

    config.json         format + version, library versions, the full Config, training summary
    vocab.txt           one token per line, line number = id
    labels.json         the class labels, in output order
    weights.safetensors the network's tensors
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import __version__, adaptive, distributed
from .config import FLAT_KEYS, Config, unlabelled_unused
from .datasets import drop_copies, load_unlabelled, train_validation_split
from .embeddings import load_pretrained
from .errors import ArtifactError, ConfigError, DataError, NotFittedError, did_you_mean
from .evaluation import best_thresholds, checked_thresholds, compute_metrics, multilabel_metrics, predicted_labels, probabilities
from .inference import predict_logits
from .io import MODEL, atomic_folder, cache_dir, read_folder, save_tensors
from .models import RNNClassifier, build_model, members
from .pretrain import Encoder, load_encoder
from .runtime import resolve_device
from .text import TokenizedCorpus, Tokenizer, encode_texts, tokenize_cached
from .trainer import fit as fit_model

log = logging.getLogger("textrnn")

FORMAT, FORMAT_VERSION, FILES = MODEL.format, MODEL.version, MODEL.files


def _check_texts(texts: Any, name: str = "texts") -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise DataError(
            f"{name} must be a list of strings, not a single string. Received: {name}={texts[:40]!r}; "
            f"wrap it in a list: [{texts[:20]!r}...]"
        )
    try:
        texts = list(texts)
    except TypeError:
        raise DataError(f"{name} must be a list of strings. Received: {type(texts).__name__}") from None
    return ["" if t is None else t if isinstance(t, str) else str(t) for t in texts]


def _normalize_labels(labels: Sequence) -> list:
    """Labels as given, but all str if some are not ints (sorting a mix would fail)."""
    labels = list(labels)
    if any(l is None or (isinstance(l, float) and np.isnan(l)) for l in labels):
        rows = [i + 1 for i, l in enumerate(labels) if l is None or (isinstance(l, float) and np.isnan(l))][:5]
        raise DataError(f"Some labels are missing (rows {', '.join(map(str, rows))}).")
    labels = [l.item() if isinstance(l, np.generic) else l for l in labels]
    if all(isinstance(l, int) and not isinstance(l, bool) for l in labels):
        return labels
    return [str(l) for l in labels]


def is_multilabel(labels: Sequence) -> bool:
    """Whether ``labels`` are label sets (lists or tuples: multi-label data)."""
    return any(isinstance(l, (list, tuple, set, frozenset)) for l in labels)


def label_sets(labels: Sequence) -> list[tuple]:
    """Each label as a sorted tuple of label names (a single label becomes a set of one)."""
    out = []
    for row, l in enumerate(labels, start=1):
        if l is None or (isinstance(l, float) and np.isnan(l)):
            raise DataError(f"Some labels are missing (row {row}).")
        items = l if isinstance(l, (list, tuple, set, frozenset)) else [l]
        names = tuple(sorted({str(x.item() if isinstance(x, np.generic) else x).strip() for x in items}))
        if not names:
            raise DataError(f"Row {row} has an empty label set; give every text at least one label (e.g. 'none' for texts with none).")
        out.append(names)
    return out


def classes_of(labels: Sequence, task: str = "auto") -> tuple[list, list, bool]:
    """(labels normalized, the sorted classes, multi-label?) for ``data.task``; one line naming the
    conflict when the labels contradict an explicit task."""
    multilabel = task == "multilabel" or (task == "auto" and is_multilabel(labels))
    if is_multilabel(labels) and not multilabel:
        raise DataError(f"The labels are lists (several labels per text) but data.task={task!r}; use data.task='multilabel' or 'auto'.")
    labels = label_sets(labels) if multilabel else _normalize_labels(labels)
    classes = sorted(set().union(*labels)) if multilabel else sorted(set(labels))
    if task == "binary" and len(classes) != 2:
        raise DataError(f"data.task='binary' needs two classes. Received {len(classes)}: {', '.join(map(repr, classes[:6]))}")
    return labels, classes, multilabel


def match_labels(labels: Sequence, classes: Sequence) -> list:
    """``labels`` in the type of ``classes``; a DataError names any label not among them."""
    labels = _normalize_labels(labels)
    # an int-labelled model asked about "1" (from a CSV) still understands it
    if all(isinstance(c, int) for c in classes):
        labels = [int(l) if isinstance(l, str) and l.strip().lstrip("-").isdigit() else l for l in labels]
    else:
        labels = [str(l) for l in labels]
    known = set(classes)
    unknown = sorted({repr(l) for l in labels if l not in known})
    if unknown:
        raise DataError(f"Labels the model was not trained on: {', '.join(unknown[:5])}. The model knows: {', '.join(map(repr, classes))}")
    return labels


def _hold_out(texts: list[str], labels: list, split: float | str | None, config: Config) -> tuple[list[str], list, tuple | None]:
    """(training texts, labels, validation data) after ``fit``'s ``validation_split``."""
    if split == "auto":
        split = config.data.validation_split if len(texts) >= adaptive.MIN_TEXTS_TO_HOLD_OUT else None
    if not split:
        return texts, labels, None
    if isinstance(split, str):
        raise DataError(f"validation_split must be a fraction in (0, 1) or 'auto'. Received: validation_split={split!r}")
    train, val = train_validation_split(texts, labels, split, config.train.seed)
    return train.texts, train.labels, (val.texts, val.labels)


def _unlabelled_pool(config: Config, unlabelled, held_out: Sequence[str], validation_data: tuple | None) -> list[str] | None:
    """The texts without labels that train beside the labelled ones: ``unlabelled``, else those of
    ``data.unlabelled``; less any identical to a validation text or one of ``held_out`` (the test
    texts), which one log line counts. None when there are none to look at."""
    train = config.train
    if unlabelled is None:
        unlabelled = load_unlabelled(config.data)
        if unlabelled is None:
            return None
    else:
        unlabelled = _check_texts(unlabelled, "unlabelled")
        if not (train.vat or train.entropy_min):
            raise unlabelled_unused(train, f"unlabelled={len(unlabelled)} texts")
    validation = _check_texts(validation_data[0], "validation texts") if validation_data is not None else []
    pool, dropped = drop_copies(unlabelled, validation, _check_texts(held_out, "held_out"))
    (log.info if pool else log.warning)(
        "unlabelled: %d of %d texts train beside the labelled ones (vat, entropy_min); %d identical to a validation or test text dropped%s",
        len(pool),
        len(unlabelled),
        dropped,
        "" if pool else ": none to train on",
    )
    return pool


class TextClassifier:
    """A recurrent text classifier.

    Settings are a :class:`textrnn.Config`, or its fields by name (``cell="gru"``, ``epochs=2``,
    ``max_length=200``...), or both (the names override the config). Fitted state ends in ``_``.
    """

    meta_: dict  # the saved folder's config.json: set by load, absent from a classifier fitted here
    multilabel_: bool = False  # several labels per text (set by fit and load)
    thresholds_: list[float]  # multi-label only: each label's probability threshold

    def __init__(self, config: Config | None = None, **params: Any):
        self.config = config if config is not None else Config()
        self.params = params
        self._resolved_config()  # validate now, as Keras does, not at fit time

    def _resolved_config(self) -> Config:
        unknown = [k for k in self.params if k not in FLAT_KEYS]
        if unknown:
            raise ConfigError(f"Unknown setting {unknown[0]!r}." + did_you_mean(unknown[0], FLAT_KEYS))
        return self.config.override({FLAT_KEYS[k]: v for k, v in self.params.items()})

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        texts,
        labels,
        validation_data: tuple | None = None,
        validation_split: float | str | None = "auto",
        progress: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        on_epoch_end=None,
        unlabelled: Sequence[str] | None = None,
        held_out: Sequence[str] = (),
    ) -> "TextClassifier":
        """Train on ``texts`` and ``labels``. With ``checkpoint_dir``, checkpoints are written there
        (every ``runtime.checkpoint_every`` steps and at each epoch end) and ``resume=True`` continues
        an interrupted fit from them, with the same result as an uninterrupted one.
        ``on_epoch_end(row)`` is called with each epoch's history row (the model is usable in it).

        Without ``validation_data``, ``validation_split="auto"`` holds out ``data.validation_split``
        (10%, stratified, seeded) of 500 texts or more to pick the best epoch and stop early, as
        ``textrnn train`` does; ``validation_split=0`` trains on every text.

        ``unlabelled``: texts without labels (default: those of ``data.unlabelled``) that train
        beside the labelled ones through ``train.vat`` and ``train.entropy_min``, encoded with the
        training vocabulary; any identical to a validation text or to one of ``held_out`` (say, the
        test texts) is dropped."""
        config = self._resolved_config()
        texts = _check_texts(texts)
        labels, classes, config = self._set_classes(list(labels), config)
        if len(texts) != len(labels):
            raise DataError(f"texts and labels must have the same length. Received: {len(texts)} texts and {len(labels)} labels")
        if validation_data is None:
            texts, labels, validation_data = _hold_out(texts, labels, validation_split, config)
        self.config_ = config
        pool = _unlabelled_pool(config, unlabelled, held_out, validation_data)
        self.tokenizer_ = Tokenizer.from_config(config.text)
        encoder = None
        if config.pretrain.encoder:  # read first: a bad folder fails before any work
            encoder = load_encoder(config.pretrain.encoder)
        ctx = distributed.current()
        if ctx.is_main:
            corpus = self._tokenize(texts)
            config, decided = self._decide(config, corpus, ctx.world_size)
            t = config.text
            # with a pretrained encoder, its vocabulary: its embedding rows follow those ids
            vocab = encoder.vocab if encoder else corpus.vocabulary(max_size=t.max_vocab_size, min_freq=t.min_freq)
        # Under torchrun: decided and built once, by rank 0, and sent to the others, so an id means the
        # same word in every process. Rank 0 has tokenized first and filled the token cache the others read.
        self.vocab_, config, self.decided_ = distributed.broadcast_object((vocab, config, decided) if ctx.is_main else None)
        self.config_ = config
        t = config.text
        if not ctx.is_main:
            corpus = self._tokenize(texts)
        train_x = corpus.encode(self.vocab_, t.length, t.truncating, t.head_fraction)
        train_y = self._targets(labels)
        unlabelled_x = self._encode_many(pool) if pool else None
        val_x = val_y = None
        if validation_data is not None:
            val_texts, val_labels = validation_data
            val_x = self._encode_many(_check_texts(val_texts, "validation texts"))
            val_y = self._targets(val_labels)
        torch.manual_seed(config.train.seed)
        self.model_ = build_model(config.model, len(self.vocab_), len(classes), self.multilabel_)
        self.embedding_coverage_ = self._load_pretrained(config)
        if encoder is not None:
            self._start_from(encoder, config)
        self.history_ = fit_model(
            self.model_,
            train_x,
            train_y,
            config.train,
            val_x,
            val_y,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            on_epoch_end=on_epoch_end,
            runtime=config.runtime,
            unlabelled_x=unlabelled_x,
        )
        self.model_.eval()
        if self.multilabel_:  # each label's threshold: the best F1 on validation, else 0.5
            self.thresholds_ = [0.5] * len(classes) if val_x is None or val_y is None else best_thresholds(val_y, self._proba(val_x))
        return self

    def _start_from(self, encoder: Encoder, config: Config) -> None:
        """The model's embedding and recurrent layer from a pretrained encoder."""
        encoder.load_into(self.model_, self.tokenizer_)
        assert isinstance(self.model_, RNNClassifier)  # load_into refuses any other model
        self.model_.embedding.weight.requires_grad_(not config.model.freeze_embeddings)
        log.info("pretrained encoder: embedding and %s from %s (vocabulary %d)", config.model.cell.upper(), encoder.path, len(self.vocab_))

    def _set_classes(self, labels: list, config: Config) -> tuple[list, list, Config]:
        """The labels normalized, the classes (and the index, multilabel_), ``data.task`` decided."""
        labels, classes, multilabel = classes_of(labels, config.data.task)
        if len(classes) < 2:
            raise DataError(f"Training needs at least two {'labels' if multilabel else 'classes'}. Received only: {classes!r}")
        if config.data.task == "auto":
            config = config.override({"data.task": "multilabel" if multilabel else "binary" if len(classes) == 2 else "multiclass"})
        self.classes_, self.multilabel_ = classes, multilabel
        self._index = {c: i for i, c in enumerate(classes)}
        return labels, classes, config

    def _proba(self, encoded: list[np.ndarray], batch_size: int = 512) -> np.ndarray:
        logits = predict_logits(self.model_, encoded, batch_size, self.config_.runtime.precision)
        return probabilities(logits, self.multilabel_)

    def _decide(self, config: Config, corpus: TokenizedCorpus, world_size: int) -> tuple[Config, dict]:
        """``config`` with its "auto" settings decided from the training corpus, logged in one block."""
        config, decisions, summary = adaptive.decide(config, np.diff(corpus.offsets), corpus.counts(), world_size)
        if decisions:
            log.info("%s", adaptive.describe(decisions, summary))
        return config, {"data": summary, "settings": {d.key: {"value": d.value, "reason": d.reason} for d in decisions}}

    def _load_pretrained(self, config: Config) -> float | None:
        m = config.model
        if not m.pretrained_embeddings:
            return None
        alignment = load_pretrained(m.pretrained_embeddings, self.vocab_.tokens, m.embeddings_format, seed=config.train.seed)
        if alignment.matrix.shape[1] != m.embedding_dim:
            raise ConfigError(
                f"The pretrained vectors have {alignment.matrix.shape[1]} dimensions but "
                f"model.embedding_dim={m.embedding_dim}; set model.embedding_dim={alignment.matrix.shape[1]}."
            )
        for member in members(self.model_):  # every member of an ensemble starts from the vectors
            with torch.no_grad():
                member.embedding.weight.copy_(torch.from_numpy(alignment.matrix))
            member.embedding.weight.requires_grad_(not m.freeze_embeddings)
        log.info(
            "pretrained embeddings: %d of %d vocabulary words found (%.1f%%)", alignment.found, alignment.total, 100 * alignment.coverage
        )
        return alignment.coverage

    # ------------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("This TextClassifier is not fitted yet: call fit(texts, labels) or textrnn.load(path).")

    def _tokenize(self, texts: list[str]) -> TokenizedCorpus:
        cache = None
        if self.config_.data.cache_tokens and len(texts) >= 1000:
            cache = cache_dir() / "tokens"
        return tokenize_cached(texts, self.tokenizer_, cache)

    def _encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """``encode`` through the token cache: for training, validation and evaluation sets."""
        t = self.config_.text
        return self._tokenize(texts).encode(self.vocab_, t.length, t.truncating, t.head_fraction)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text, truncated as configured (unpadded)."""
        self._check_fitted()
        t = self.config_.text
        return encode_texts(_check_texts(texts), self.tokenizer_, self.vocab_, t.length, t.truncating, t.head_fraction)

    def _targets(self, labels) -> np.ndarray:
        """Class indices (N,), or for a multi-label model 0/1 rows (N, C)."""
        if not self.multilabel_:
            labels = match_labels(labels, self.classes_)
            return np.array([self._index[l] for l in labels], dtype=np.int64)
        sets = label_sets(labels)
        unknown = sorted({repr(l) for s in sets for l in s if l not in self._index})
        if unknown:
            known = ", ".join(map(repr, self.classes_))
            raise DataError(f"Labels the model was not trained on: {', '.join(unknown[:5])}. The model knows: {known}")
        y = np.zeros((len(sets), len(self.classes_)), dtype=np.float32)
        for i, s in enumerate(sets):
            y[i, [self._index[l] for l in s]] = 1.0
        return y

    def decision_function(self, texts, batch_size: int = 512) -> np.ndarray:
        """Raw logits (N, C)."""
        self._check_fitted()
        return predict_logits(self.model_, self.encode(texts), batch_size, self.config_.runtime.precision)

    def predict_proba(self, texts, batch_size: int = 512) -> np.ndarray:
        """(N, K) probabilities, columns in ``classes_`` order; rows sum to 1 (for a multi-label
        model: each label's own probability)."""
        return probabilities(self.decision_function(texts, batch_size), self.multilabel_)

    def predict(self, texts, batch_size: int = 512) -> list:
        """The class of each text; for a multi-label model, the list of its labels at or above
        their thresholds (``thresholds_``)."""
        return self.labels_from(self.predict_proba(texts, batch_size))

    def labels_from(self, proba: np.ndarray) -> list:
        """Predictions from probabilities: the top class, or (multi-label) the labels over threshold."""
        return predicted_labels(proba, self.classes_, self.thresholds_ if self.multilabel_ else None)

    def metrics(self, y: np.ndarray, proba: np.ndarray) -> dict:
        """The metrics of probabilities against targets (from ``_targets``)."""
        if self.multilabel_:
            return multilabel_metrics(y, proba, self.classes_, self.thresholds_)
        return compute_metrics(y, proba, self.classes_)

    def evaluate(self, texts, labels, batch_size: int = 512) -> dict:
        """Loss, accuracy, precision/recall/F1 (macro and per class), ROC-AUC, confusion matrix."""
        texts = _check_texts(texts)
        self._check_fitted()
        if len(texts) != len(labels):
            raise DataError(f"texts and labels must have the same length. Received: {len(texts)} texts and {len(labels)} labels")
        y = self._targets(labels)
        return self.metrics(y, self._proba(self._encode_many(texts), batch_size))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = False, extra: dict | None = None) -> Path:
        """Write the artifact directory atomically: a temporary sibling folder renamed into place."""
        self._check_fitted()
        with atomic_folder(path, overwrite) as tmp:
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "versions": {"textrnn": __version__, "torch": torch.__version__, "python": platform.python_version()},
                "config": self.config_.to_dict(),
                "history": getattr(self, "history_", []),
                "embedding_coverage": getattr(self, "embedding_coverage_", None),
                "decided": getattr(self, "decided_", None),
                "thresholds": getattr(self, "thresholds_", None),
                **(extra or {}),
            }
            (tmp / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            self.vocab_.save(tmp / "vocab.txt")
            (tmp / "labels.json").write_text(json.dumps(self.classes_), encoding="utf-8")
            save_tensors(self.model_.state_dict(), tmp / "weights.safetensors", FORMAT)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "TextClassifier":
        """Read an artifact directory. Never unpickles; a damaged or foreign folder is an ArtifactError.
        The weights are read on the CPU, then moved to ``device`` (as ``runtime.device``: auto, cpu,
        cuda, cuda:N), where prediction then runs."""
        art = read_folder(path, MODEL)
        assert art.classes is not None  # a model folder always has its labels.json
        self = cls(art.config)
        self.config_ = art.config
        self.classes_ = art.classes
        self._index = {c: i for i, c in enumerate(art.classes)}
        self.multilabel_ = art.config.data.task == "multilabel"
        if self.multilabel_:
            self.thresholds_ = checked_thresholds(art.meta.get("thresholds"), len(art.classes), art.path)
        self.tokenizer_ = Tokenizer.from_config(art.config.text)
        self.vocab_ = art.vocab
        self.history_ = art.meta.get("history", [])
        self.embedding_coverage_ = art.meta.get("embedding_coverage")
        self.meta_ = art.meta
        self.model_ = build_model(art.config.model, len(self.vocab_), len(art.classes), self.multilabel_)
        state, expected = art.state, self.model_.state_dict()
        bad = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
        extra = [k for k in state if k not in expected]
        if bad or extra:
            k = (bad or extra)[0]
            got = tuple(state[k].shape) if k in state else "absent"
            raise ArtifactError(
                f"{str(art.path)!r}: weights do not match the config: {k} has shape {got}, "
                f"expected {tuple(expected[k].shape) if k in expected else 'absent'}"
            )
        self.model_.load_state_dict(state)
        self.model_.to(resolve_device(device))  # no copy when that is the CPU
        self.model_.eval()
        return self


def load(path: str | os.PathLike, device: str = "auto") -> TextClassifier:
    """Load a saved model directory: ``textrnn.load("runs/imdb/model")``; ``device="cuda"`` to
    predict on a GPU (``auto``, the default: a GPU when torch sees one)."""
    return TextClassifier.load(path, device=device)
