"""ULMFiT-style pretraining of the classifier's encoder (embedding + recurrent layer) as a
language model on unlabelled texts, and the encoder folder it writes.

The texts become one stream of token ids: the documents in a seeded random order, each followed
by ``<pad>`` (id 0) as the document boundary. The classifier never feeds ``<pad>`` to its
recurrent layer and its embedding row is zero, so the LM reads a boundary as "nothing here" and
learns to predict where a document ends. The stream is cut into B parallel rows, read in chunks
of ``pretrain.bptt`` tokens with the recurrent state carried (detached) from chunk to
chunk: truncated backpropagation through time. The first 1% of the stream (at most 200,000
tokens) is held out for the validation perplexity.

``LanguageModel`` builds ``embedding`` and ``rnn`` exactly as ``RNNClassifier`` does, so their
tensors load into the classifier unchanged. A unidirectional rnn (any number of layers) is a
forward LM: the state at t has read tokens up to t and predicts t+1. A bidirectional rnn (one
layer) is two LMs sharing the embedding, as in ELMo: the forward weights (``weight_ih_l0``...)
read left to right and predict the next token; the ``_reverse`` weights read right to left, as
``nn.LSTM`` applies them, and predict the previous token. Each direction has its own adaptive
softmax (Grave et al., 2017): the 2,000 most frequent tokens get a full softmax, rarer ones a
cheaper projected one, which keeps a 30,000-word output affordable on a CPU.

An encoder folder (written to a temporary sibling and renamed into place)::

    config.json          format + version, library versions, the full Config, the pretraining
                         settings, the history (loss and perplexity per epoch, validation perplexity)
    vocab.txt            the vocabulary, which the fine-tuned classifier takes as its own
    weights.safetensors  the embedding.* and rnn.* tensors, named as in RNNClassifier
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, cast

import numpy as np
import torch
import torch.nn as nn

from . import __version__
from .config import Config, ModelConfig, TrainConfig, check_pretrainable
from .datasets import unlabelled_texts
from .embeddings import train_word2vec
from .errors import ConfigError, DataError, TextRNNError
from .io import ENCODER as ENCODER_FOLDER
from .io import atomic_folder, cache_dir, content_key, read_folder, save_tensors
from .models import _RUN, RNNClassifier, SpatialDropout, recurrent_layer
from .optim import ENCODER, make_optimizer, make_schedule
from .progress import track
from .runtime import compute_dtype, denormals_flushed, resolve_device, seed_everything, set_threads
from .text import PAD_ID, TokenizedCorpus, Tokenizer, Vocabulary, tokenize_cached

log = logging.getLogger("textrnn")

FORMAT, FORMAT_VERSION, FILES = ENCODER_FOLDER.format, ENCODER_FOLDER.version, ENCODER_FOLDER.files
CLIP_GRAD_NORM = 1.0  # fixed, not train.clip_grad_norm: a fine-tuning setting must not retrain the encoder


def cutoffs(vocab_size: int) -> list[int]:
    """Adaptive-softmax cluster bounds: 2,000 tokens in the head, the next 8,000, then the rest."""
    return [c for c in (2000, 10000) if c < vocab_size - 1] or [max(1, vocab_size // 2)]


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int, dropout: float = 0.1):
        """``dropout`` (pretrain.dropout) on the embeddings and on the recurrent outputs."""
        super().__init__()
        check_pretrainable(config)
        self.config = c = config
        self.embedding = nn.Embedding(vocab_size, c.embedding_dim, padding_idx=PAD_ID)  # as RNNClassifier's
        self.rnn = recurrent_layer(c)  # as RNNClassifier's: the encoder's tensors load into it one to one
        self.embedding_dropout = SpatialDropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.directions = 2 if c.bidirectional else 1
        self.softmax = nn.ModuleList(  # one per direction
            nn.AdaptiveLogSoftmaxWithLoss(c.hidden_size, vocab_size, cutoffs(vocab_size), div_value=4.0) for _ in range(self.directions)
        )

    def run(self, direction: int, x: torch.Tensor, state=None):
        """One direction's states over ``x`` (B, T, E), read in x's own order, from ``state``
        (None: zeros); returns (B, T, H) and the state to continue from."""
        if self.directions == 1:
            return self.rnn(x, state)  # every layer at once
        if state is None:
            h0 = x.new_zeros(1, x.size(0), self.config.hidden_size)  # (1, B, H)
            state = (h0, h0) if self.config.cell == "lstm" else h0
        # the direction's own weights, as RNNClassifier._encode_mixed runs them; cuDNN copies them into
        # one buffer first, and warns: a copy of one layer's weights per call, small next to the step
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "RNN module weights are not part of single contiguous")
            weights = self.rnn.all_weights[direction]  # [w_ih, w_hh, b_ih, b_hh]
            out, *h = _RUN[self.config.cell](x, state, weights, True, 1, 0.0, self.training, False, True)
        return out, (tuple(h) if self.config.cell == "lstm" else h[0])  # (B, T, H)

    def loss(self, direction: int, ids: torch.Tensor, targets: torch.Tensor, state=None, bf16: bool = False, bf16_all: bool = False):
        """Mean negative log-likelihood of ``targets`` (B, T), each the token after its input in
        ``ids`` (B, T) in this direction's reading order; and the state to carry on. ``bf16``:
        bfloat16 autocast of the softmax (CUDA); ``bf16_all``: of the embedding and the recurrent
        layer (a CPU with native bfloat16, runtime.precision "auto"), the softmax staying float32."""
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16_all):
            x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
            out, state = self.run(direction, x, state)  # (B, T, H)
        out = self.dropout(out.float()).reshape(-1, out.size(-1))  # (B*T, H)
        # bfloat16 for the softmax only (cuDNN RNNs take bfloat16 only lately): 1.14x at hidden 1024 on an H100.
        # Not under CPU autocast: AdaptiveLogSoftmaxWithLoss then mixes float32 and bfloat16 and fails.
        with torch.autocast(out.device.type, dtype=torch.bfloat16, enabled=bf16):
            nll = self.softmax[direction](out, targets.reshape(-1)).loss
        return nll.float(), state

    @torch.no_grad()
    def log_probs(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Per direction (B, T, V) log-probabilities, aligned with the text: the forward LM's at t
        has read ids[:, :t+1] and predicts t+1; the backward LM's at t has read ids[:, t:] and
        predicts t-1."""
        x = self.embedding(ids)  # (B, T, E)
        states = [self.run(0, x)[0]] + ([self.run(1, x.flip(1))[0].flip(1)] if self.directions == 2 else [])
        heads = cast(list[nn.AdaptiveLogSoftmaxWithLoss], list(self.softmax))  # a ModuleList yields plain Modules
        return [head.log_prob(h.reshape(-1, h.size(-1))).view(*ids.shape, -1) for head, h in zip(heads, states)]


def _detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def batchify(stream: np.ndarray, rows: int) -> torch.Tensor:
    """The stream as ``rows`` contiguous parallel streams (rows, L); the tail that does not divide is dropped."""
    length = len(stream) // rows
    return torch.from_numpy(np.ascontiguousarray(stream[: rows * length].reshape(rows, length)))


def chunks(data: torch.Tensor, bptt: int):
    """(inputs, targets), each (B, T <= bptt): every target is the token after its input in ``data``'s order."""
    for i in range(0, data.size(1) - 1, bptt):
        T = min(bptt, data.size(1) - 1 - i)
        yield data[:, i : i + T].long(), data[:, i + 1 : i + 1 + T].long()


def readings(data: torch.Tensor, directions: int) -> list[torch.Tensor]:
    """What each direction reads: the rows as they are, and (backward LM) each row reversed."""
    return [data, data.flip(1)][:directions]


def merge(corpora: list[TokenizedCorpus]) -> TokenizedCorpus:
    """One corpus of several: their token types united, their ids remapped."""
    index: dict[str, int] = {}
    ids, offsets = [], [np.zeros(1, dtype=np.int64)]
    for c in corpora:
        lut = np.fromiter((index.setdefault(t, len(index)) for t in c.types), dtype=np.int32, count=len(c.types))
        ids.append(lut[c.ids] if len(c.ids) else c.ids.astype(np.int32))
        offsets.append(c.offsets[1:] + sum(len(i) for i in ids[:-1]))
    return TokenizedCorpus(list(index), np.concatenate(ids), np.concatenate(offsets))


def token_stream(documents: list[np.ndarray], seed: int) -> np.ndarray:
    """The documents in a seeded random order, each followed by the boundary ``<pad>``: one int32 stream."""
    boundary = np.array([PAD_ID], dtype=np.int32)
    order = np.random.default_rng(seed).permutation(len(documents))
    return np.concatenate([part for i in order for part in (documents[i], boundary)]).astype(np.int32)


@torch.no_grad()
def evaluate(lm: LanguageModel, stream: np.ndarray, rows: int, bptt: int, bf16: bool = False, bf16_all: bool = False) -> float:
    """Mean negative log-likelihood per token over ``stream``, both directions, states carried."""
    lm.eval()
    rows = max(1, min(rows, len(stream) // (bptt + 1)))
    data = batchify(stream, rows).to(lm.embedding.weight.device)
    total, count = 0.0, 0
    for d, reading in enumerate(readings(data, lm.directions)):
        state = None
        for x, y in chunks(reading, bptt):
            nll, state = lm.loss(d, x, y, state, bf16, bf16_all)
            total, count = total + float(nll) * y.numel(), count + y.numel()
    return total / count if count else float("nan")


def fit_language_model(lm: LanguageModel, stream: np.ndarray, config: Config, show_progress: bool = True, on_epoch_end=None) -> list[dict]:
    """Train ``lm`` in place on ``stream`` with truncated BPTT, AdamW and a one-cycle rate, on
    ``runtime.device``; returns one history row per epoch, each also given to ``on_epoch_end(row)``."""
    with denormals_flushed():
        return _fit_language_model(lm, stream, config, show_progress, on_epoch_end)


def _advance(schedule, done: int, total_steps: int, budget: float | None, started: float) -> int:
    """Step the one-cycle rate after a training step; with a time ``budget`` it follows the steps or
    the clock, whichever is further on. Returns the steps the schedule has taken."""
    if not budget:
        schedule.step()
        return done + 1
    target = max(done + 1, math.ceil(total_steps * (time.perf_counter() - started) / budget))
    while done < min(target, total_steps - 1):
        schedule.step()
        done += 1
    return done


def _epoch_row(epoch: int, epochs: int, loss: float, val_loss: float, seconds: float, tokens: int) -> dict:
    row = {
        "epoch": epoch,
        "loss": loss,
        "perplexity": math.exp(loss),
        "val_loss": val_loss,
        "val_perplexity": math.exp(val_loss),
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / max(seconds, 1e-9),
    }
    log.info(
        "pretrain: epoch %d/%d  perplexity %.1f  val_perplexity %.1f  (%.0fs, %.0f tokens/s)",
        epoch,
        epochs,
        row["perplexity"],
        row["val_perplexity"],
        seconds,
        row["tokens_per_s"],
    )
    return row


def _fit_language_model(lm: LanguageModel, stream: np.ndarray, config: Config, show_progress: bool, on_epoch_end=None) -> list[dict]:
    p, r = config.pretrain, config.runtime
    device = resolve_device(r.device)
    set_threads(r.num_threads)
    seed_everything(config.train.seed)
    n_val = min(max(len(stream) // 100, 2 * (p.bptt + 1)), 200_000, len(stream) // 4)
    val, train = stream[:n_val], stream[n_val : n_val + (p.max_tokens or len(stream))]
    rows = max(1, min(p.batch_size, len(train) // (p.bptt + 1)))
    data = batchify(train, rows).to(device)  # (B, L)
    if data.size(1) < 2:
        raise DataError(f"Too few tokens to pretrain a language model: {len(stream)} in all. Give it more texts.")
    steps = math.ceil((data.size(1) - 1) / p.bptt)
    lm.to(device)
    opt = TrainConfig(optimizer="adamw", learning_rate=p.learning_rate, weight_decay=0.01, schedule="onecycle")
    optimizer = make_optimizer(lm, opt)
    total_steps = steps * p.epochs
    schedule = make_schedule(optimizer, opt, total_steps)
    budget = p.max_seconds
    started = time.perf_counter()
    done = 0  # steps taken, or (with a time budget) the share of the cycle that the clock has used, in steps
    bf16 = p.bf16_softmax and device.type == "cuda"
    bf16_all = device.type == "cpu" and compute_dtype(device, r.precision) == torch.bfloat16  # runtime.precision, as fit
    log.info(
        "pretrain: %d training tokens in %d streams of %d, %d validation tokens, %d steps an epoch on %s",
        data.numel(),
        rows,
        data.size(1),
        len(val),
        steps,
        device,
    )
    history = []
    for epoch in range(1, p.epochs + 1):
        lm.train()
        states = [None] * lm.directions
        total, count, t0 = torch.zeros((), device=device), 0, time.perf_counter()
        pairs: Iterable[tuple[Any, ...]] = zip(*(chunks(r, p.bptt) for r in readings(data, lm.directions)))
        if show_progress:
            pairs = track(pairs, steps, f"pretrain {epoch}/{p.epochs}", " chunks", data.numel())
        for step, pair in enumerate(pairs, 1):
            loss = torch.zeros((), device=device)  # the directions' mean loss: 0 + x is x, bit for bit
            for d, (x, y) in enumerate(pair):
                nll, states[d] = lm.loss(d, x, y, states[d], bf16, bf16_all)
                states[d] = _detach(states[d])  # carry the state, not the graph
                loss = loss + nll / lm.directions
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(lm.parameters(), CLIP_GRAD_NORM)
            optimizer.step()
            done = _advance(schedule, done, total_steps, budget, started)
            total, count = total + loss.detach() * y.numel(), count + y.numel()
            out_of_time = bool(budget and time.perf_counter() - started >= budget)
            if step % max(1, steps // 10) == 0 or step == steps or out_of_time:  # reading the loss waits for a GPU: not every step
                if not math.isfinite(value := float(loss.detach())):
                    raise TextRNNError(
                        f"Pretraining diverged: the loss became {value} at epoch {epoch}, step {step}. Try a "
                        f"lower pretrain.learning_rate (received: {p.learning_rate})."
                    )
                if show_progress and not sys.stderr.isatty():  # on a terminal the bar shows progress
                    log.info("pretrain: epoch %d, step %d/%d, loss %.3f", epoch, step, steps, float(total) / count)
            if out_of_time:
                log.info("pretrain: pretrain.max_seconds=%s reached at epoch %d, step %d/%d", budget, epoch, step, steps)
                break
        val_loss = evaluate(lm, val, rows, p.bptt, bf16, bf16_all)
        history.append(_epoch_row(epoch, p.epochs, float(total) / count, val_loss, time.perf_counter() - t0, count))
        if on_epoch_end is not None:  # experiment tracking (tracking.py)
            on_epoch_end(history[-1])
        if out_of_time:
            break
    lm.eval()
    return history


def pretrain_settings(config: Config, tokenizer: Tokenizer) -> dict:
    """Everything that shapes the encoder: the key of its cache, saved in its config.json."""
    m, t = config.model, config.text
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer": tokenizer.to_dict(),
        "max_vocab_size": t.max_vocab_size,
        "min_freq": t.min_freq,
        **{k: getattr(m, k) for k in ("cell", "embedding_dim", "hidden_size", "num_layers", "bidirectional")},
        "dropout": m.dropout if m.num_layers > 1 else None,  # only between recurrent layers
        **{
            f"pretrain_{k}": v for k, v in vars(config.pretrain).items() if k not in ("data", "encoder", "word2vec_data", "word2vec_epochs")
        },
        "seed": config.train.seed,
        "precision": config.runtime.precision,
    }


def pretrain(
    corpora: list[TokenizedCorpus],
    config: Config,
    output: str | os.PathLike,
    progress: bool = True,
    overwrite: bool = False,
    on_epoch_end=None,
) -> Path:
    """Pretrain the configured encoder on the tokenized ``corpora`` and write its folder to ``output``."""
    m, t = config.model, config.text
    check_pretrainable(m)
    corpus = merge(corpora)
    vocab = corpus.vocabulary(max_size=t.max_vocab_size, min_freq=t.min_freq)
    stream = token_stream(corpus.encode(vocab, max_length=sys.maxsize), config.train.seed)
    torch.manual_seed(config.train.seed)
    lm = LanguageModel(m, len(vocab), config.pretrain.dropout)
    log.info(
        "pretrain: a %s%s language model (embedding %d, hidden %d, %d layer(s)) on %d texts, %d tokens, vocabulary %d",
        "bidirectional " if m.bidirectional else "",
        m.cell.upper(),
        m.embedding_dim,
        m.hidden_size,
        m.num_layers,
        len(corpus),
        len(stream),
        len(vocab),
    )
    history = fit_language_model(lm, stream, config, progress, on_epoch_end)
    tokenizer = Tokenizer.from_config(t)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": {"textrnn": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "config": config.to_dict(),
        "pretrain": pretrain_settings(config, tokenizer),
        "tokenizer": tokenizer.to_dict(),
        "texts": len(corpus),
        "tokens": len(stream),
        "history": history,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in lm.state_dict().items() if k.split(".")[0] in ENCODER}
    return save_encoder(output, meta, vocab, state, overwrite)


def pretrain_texts(
    texts: list[str], config: Config, output: str | os.PathLike, progress: bool = True, overwrite: bool = False, on_epoch_end=None
) -> Path:
    """``pretrain`` on raw texts (the ``textrnn pretrain`` command); ``on_epoch_end(row)`` gets each epoch's history row."""
    t = config.text
    cache = cache_dir() / "tokens" if config.data.cache_tokens else None
    return pretrain([tokenize_cached(texts, Tokenizer.from_config(t), cache)], config, output, progress, overwrite, on_epoch_end)


def with_unlabelled(config: Config, texts: list[str], spec: str) -> tuple[Tokenizer, list[TokenizedCorpus]]:
    """The training texts and the unlabelled texts of ``spec`` (any data spec: "imdb:unsup", a
    file), tokenized through the token cache."""
    d = config.data
    extra = unlabelled_texts(spec, text_column=d.text_column, imdb_path=d.imdb_path, encoding=d.encoding)
    tokenizer = Tokenizer.from_config(config.text)
    return tokenizer, [
        tokenize_cached(list(texts), tokenizer, cache_dir() / "tokens"),
        tokenize_cached(extra, tokenizer, cache_dir() / "tokens"),
    ]


def corpora_key(settings, corpora: list[TokenizedCorpus]) -> str:
    """The cache key of what is learnt from ``corpora`` with ``settings``: same texts, same key."""
    return content_key(settings, *(a for c in corpora for a in (c.ids, c.offsets, "\n".join(c.types))))


def pretrained_encoder(config: Config, texts: list[str], progress: bool = True) -> Path:
    """An encoder pretrained on ``texts`` plus the unlabelled ``config.pretrain.data``,
    cached by content (token ids, settings, seed): the same texts and settings train only once."""
    if not config.pretrain.data:
        raise ConfigError('Pretraining an encoder needs pretrain.data, the unlabelled texts (e.g. "imdb:unsup").')
    tokenizer, corpora = with_unlabelled(config, texts, config.pretrain.data)
    path = cache_dir() / "encoders" / f"encoder-{corpora_key(pretrain_settings(config, tokenizer), corpora)}"
    if (path / "config.json").is_file():  # the folder is renamed into place whole: if it is there, it is complete
        log.info("pretrain: reusing %s", path)
        return path
    return pretrain(corpora, config, path, progress, overwrite=True)


def word2vec_vectors(config: Config, texts: list[str]) -> Path:
    """Word vectors trained on ``texts`` plus the unlabelled ``config.pretrain.word2vec_data``, in
    the word2vec text format, cached by content: the same texts and settings train only once."""
    m, p = config.model, config.pretrain
    if not p.word2vec_data:
        raise ConfigError('Training word2vec vectors needs pretrain.word2vec_data, the unlabelled texts (e.g. "imdb:unsup").')
    tokenizer, corpora = with_unlabelled(config, texts, p.word2vec_data)
    key = corpora_key([m.embedding_dim, p.word2vec_epochs, tokenizer.to_dict(), config.train.seed], corpora)
    path = cache_dir() / "vectors" / f"word2vec-{key}.txt"
    if path.is_file():
        log.info("word2vec: reusing %s", path)
        return path

    def sentences():
        for c in corpora:
            types = np.array(c.types, dtype=object)
            for start, end in zip(c.offsets[:-1], c.offsets[1:]):
                yield types[c.ids[start:end]].tolist()

    log.info("word2vec: training %d-dimensional vectors on %d texts", m.embedding_dim, sum(len(c) for c in corpora))
    path.parent.mkdir(parents=True, exist_ok=True)
    return train_word2vec(sentences(), path, dim=m.embedding_dim, epochs=p.word2vec_epochs, seed=config.train.seed)


# ------------------------------------------------------------------------------- the folder


def save_encoder(path: str | os.PathLike, meta: dict, vocab: Vocabulary, state: dict[str, torch.Tensor], overwrite: bool = False) -> Path:
    """Write the folder atomically: a temporary sibling renamed into place (the old one kept on failure)."""
    with atomic_folder(path, overwrite, what="another --output") as tmp:
        (tmp / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        vocab.save(tmp / "vocab.txt")
        save_tensors(state, tmp / "weights.safetensors", FORMAT)
    return Path(path)


@dataclass
class Encoder:
    """A pretrained encoder folder, read: its metadata, vocabulary and embedding/rnn tensors."""

    path: Path
    meta: dict
    vocab: Vocabulary
    state: dict[str, torch.Tensor]

    def load_into(self, model: nn.Module, tokenizer: Tokenizer) -> None:
        """Copy the tensors into ``model``'s embedding and rnn, refusing another tokenizer or any shape mismatch."""
        if not isinstance(model, RNNClassifier):
            given = cast(ModelConfig, model.config)  # every model of models.py carries its ModelConfig
            raise ConfigError(
                f"A pretrained encoder initialises one recurrent model (model.arch='rnn' and a single "
                f"model.cell). Received: arch={given.arch!r}, cell={given.cell!r}"
            )
        trained = self.meta.get("tokenizer")
        if trained != tokenizer.to_dict():
            key = next((k for k in tokenizer.to_dict() if (trained or {}).get(k) != getattr(tokenizer, k)), "lower")
            raise ConfigError(
                f"The pretrained encoder {str(self.path)!r} was trained with text.{key}="
                f"{(trained or {}).get(key)!r}, but this config has text.{key}={getattr(tokenizer, key)!r}; "
                f"fine-tune with the text settings it was pretrained with."
            )
        expected = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in ENCODER}
        for k in [*expected, *(k for k in self.state if k not in expected)]:  # the model's order: the weights first
            got = tuple(self.state[k].shape) if k in self.state else "absent"
            want = tuple(expected[k].shape) if k in expected else "absent"
            if got != want:
                m = self.meta.get("config", {}).get("model", {})
                pretrained = ", ".join(
                    f"{n}={m.get(n)!r}" for n in ("arch", "cell", "embedding_dim", "hidden_size", "num_layers", "bidirectional")
                )
                raise ConfigError(
                    f"The pretrained encoder {str(self.path)!r} does not fit the model: its {k} has shape "
                    f"{got}, the model's {want}. Set the model as it was pretrained: {pretrained}."
                )
        with torch.no_grad():
            for k, v in expected.items():
                v.copy_(self.state[k])  # state_dict tensors share the parameters' storage


def load_encoder(path: str | os.PathLike) -> Encoder:
    """Read an encoder folder, with the checks of every saved folder (io.read_folder)."""
    art = read_folder(path, ENCODER_FOLDER)
    return Encoder(art.path, art.meta, art.vocab, art.state)
