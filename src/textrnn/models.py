"""The networks: ``RNNClassifier`` (Embedding -> LSTM|GRU|RNN -> pooling -> Dense) and
``BagOfEmbeddings`` (the order-blind MLP baseline). Both map ``(ids, lengths)`` to logits.

Inputs are post-padded: real tokens first, ``<pad>`` (id 0) after. Padding never reaches a
prediction: a batch whose texts all have one length runs the recurrent layer directly (PyTorch's
fast oneDNN path); in a mixed batch each direction starts at a real token (see ``_encode_mixed``),
and max/mean pooling are masked. Two classes get one
logit (sigmoid); more get one per class (softmax).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

# Every forward takes two optional keywords, both for training only:
#   generator       the torch.Generator its dropout masks come from (default: torch's global one)
#   embedding_hook  a function through which the embedded texts (B, T, E) pass, each model's in
#                   turn (an ensemble has several), before dropout: adversarial training reads them,
#                   then perturbs them (pieces.py)
Hook = Callable[[torch.Tensor], torch.Tensor]

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclasses.dataclass(frozen=True)
class Words:
    """What made a first recurrent layer's input, when it is each token's embedding times at most a
    dropout mask per text: the token ids (B, T), the embedding, and the mask (B, 1, E), None when
    there is none. A kernel may then project each distinct word (of the batch; with a mask, of
    each text) once instead of every position."""

    ids: torch.Tensor
    embedding: nn.Embedding
    mask: torch.Tensor | None = None


# A faster float32 CPU path for the recurrent layer in training, installed by fastrnn.py (which
# builds on this module, so this one cannot import it): fn(rnn, x, words) -> (outputs, last states)
# where it applies, else None; words: what made x (Words), or None when x came otherwise (an
# adversarial push). None here: PyTorch's layer always.
TrainingKernel = Callable[[nn.RNNBase, torch.Tensor, "Words | None"], "tuple[torch.Tensor, torch.Tensor] | None"]
training_kernel: TrainingKernel | None = None
# Max pooling over time with gradients by the C kernel (fastrnn.max_over_time): fn(x) -> (B, D), or
# None where it does not apply.
max_kernel: Callable[[torch.Tensor], "torch.Tensor | None"] | None = None
# The cells' functions on explicit weights (one layer, one direction): they return the outputs, then the final state(s)
_RUN: dict[str, Callable[..., tuple[torch.Tensor, ...]]] = {"lstm": torch.lstm, "gru": torch.gru, "rnn": torch.rnn_tanh}


def output_size(num_classes: int, multilabel: bool = False) -> int:
    """One logit for two classes (sigmoid), one per class otherwise (softmax); one per label (a
    sigmoid each) for multi-label data."""
    return num_classes if multilabel else 1 if num_classes == 2 else num_classes


def loss_fn(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Binary cross-entropy on one logit for two classes, categorical cross-entropy otherwise;
    binary cross-entropy on each label for multi-label targets ((N, C) 0/1 floats). With
    ``label_smoothing`` e the target of each sigmoid or softmax is (1 - e) x its label + e / 2
    (e / C over a softmax's C classes), as in Keras' losses."""
    e = label_smoothing
    if targets.dim() == 2:  # multi-label: one sigmoid per label
        soft = targets.to(logits.dtype) * (1 - e) + e / 2
        per = F.binary_cross_entropy_with_logits(logits, soft, reduction="none").mean(1)
        return per.mean() if reduction == "mean" else per
    if logits.size(1) == 1:
        soft = targets.to(logits.dtype) * (1 - e) + e / 2
        per = F.binary_cross_entropy_with_logits(logits.squeeze(1), soft, reduction="none")
    else:
        per = F.cross_entropy(logits, targets, reduction="none", label_smoothing=e)
    if class_weights is not None:
        per = per * class_weights[targets]
    return per.mean() if reduction == "mean" else per


def kl_divergence(target: torch.Tensor, logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Mean over texts of KL(p_target || p_logits), the distributions the logits stand for: one
    sigmoid (one logit), a softmax (several), or a sigmoid per label (``multilabel``, summed over
    the labels). An ensemble's (M, B, C) logits: each member against its own target, averaged."""
    if logits.dim() == 3:  # an ensemble's members, each against its own target (or the one given)
        target = target.expand_as(logits) if target.dim() == 2 else target
        return torch.stack([kl_divergence(t, lg, multilabel) for t, lg in zip(target, logits)]).mean()
    if multilabel or logits.size(1) == 1:
        p = torch.sigmoid(target)
        per = p * (F.logsigmoid(target) - F.logsigmoid(logits)) + (1 - p) * (F.logsigmoid(-target) - F.logsigmoid(-logits))
        return per.sum(1).mean()
    log_t = F.log_softmax(target, dim=1)
    return (log_t.exp() * (log_t - F.log_softmax(logits, dim=1))).sum(1).mean()


def entropy(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Mean over texts of the entropy of the distribution the logits stand for: one sigmoid (one
    logit), a softmax (several), or a sigmoid per label (``multilabel``: the label set's entropy,
    the labels' own summed, as kl_divergence sums them). An ensemble's (M, B, C) logits: each
    member's own, averaged, as each member trains on its own loss. Entropy minimisation (Grandvalet
    & Bengio 2005) lowers it on texts without labels: confident predictions away from the data."""
    if logits.dim() == 3:
        return torch.stack([entropy(member, multilabel) for member in logits]).mean()
    if multilabel or logits.size(1) == 1:
        p = torch.sigmoid(logits)
        return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).sum(1).mean()
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    return (logits.squeeze(1) > 0).long() if logits.size(1) == 1 else logits.argmax(1)


def correct_count(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Texts predicted right; for multi-label targets each text counts the share of its labels
    predicted right (Keras' binary accuracy), so accuracy = this / texts either way."""
    if targets.dim() == 2:
        return float(((logits > 0) == (targets > 0.5)).float().mean(1).sum())
    return float((predicted_class(logits) == targets).sum())


def dropout(x: torch.Tensor, p: float, mask_shape: tuple[int, ...] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout (training only), its mask broadcast from ``mask_shape`` (default: x's) and
    drawn from ``generator`` (default: torch's global one). Training pieces that run side by side
    in threads (pieces.py) each pass their own, seeded in order, so a run is the same whichever
    thread finishes first."""
    if p == 0:
        return x
    if generator is None and mask_shape is None:
        return F.dropout(x, p, training=True)
    mask = x.new_empty(mask_shape or x.shape).bernoulli_(1 - p, generator=generator).div_(1 - p)
    return x * mask


def _embedded(embedding: nn.Embedding, ids: torch.Tensor, hook: Hook | None) -> torch.Tensor:
    x = embedding(ids)
    return x if hook is None else hook(x)


class Dropout(nn.Dropout):
    """nn.Dropout, drawing from ``generator`` when one is given."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return dropout(x, self.p, generator=generator) if self.training else x


class SpatialDropout(nn.Dropout):
    """Drops whole embedding channels for a whole text (Keras' SpatialDropout1D): dropping single
    positions would let the recurrent layer see through the gaps."""

    def mask(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The scaled mask (B, 1, E) for x (B, T, E), drawn from ``generator``; None outside
        training or at p = 0."""
        if not self.training or self.p == 0:
            return None
        return x.new_empty((x.size(0), 1, x.size(2))).bernoulli_(1 - self.p, generator=generator).div_(1 - self.p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # x: (B, T, E)
        mask = self.mask(x, generator)
        return x if mask is None else x * mask


def _max_over_time(x: torch.Tensor) -> torch.Tensor:
    """Each channel's maximum over the positions of ``x`` (B, T, D). With gradients, by max and its
    indices: its backward scatters B x D values into zeros, where amax's compares every position
    with the maximum, counts the ties and casts the mask: a training piece of the default model runs
    1.04-1.07x faster in float32 (benchmarks/max_pool.py, results/max-pool-2026-11-30.json). On a
    CPU in float32 the C kernel finds them (max_kernel: one pass, where torch.max's indices cost ~20x
    amax). A tie (rare in float32) sends the whole gradient to one of its positions (the first)
    instead of sharing it: another valid subgradient. Without gradients (prediction), amax: no
    indices to keep."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.amax(1)
    fast = max_kernel(x) if max_kernel is not None else None
    return fast if fast is not None else x.max(1).values


def masked_pool(out: torch.Tensor, lengths: torch.Tensor, poolings: list[str], last: torch.Tensor | None = None) -> torch.Tensor:
    """Concatenate the requested poolings of ``out`` (B, T, D) over the real positions only."""
    B, T, D = out.shape
    parts: list[torch.Tensor] = []
    full = bool((lengths == T).all())
    if not full:
        mask = (torch.arange(T, device=out.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
    for p in poolings:
        if p == "last":
            assert last is not None  # RNNClassifier passes it; BagOfEmbeddings never pools "last"
            parts.append(last)
        elif p == "max":
            parts.append(_max_over_time(out if full else out.masked_fill(~mask, float("-inf"))))
        elif p == "mean":
            s = out.sum(1) if full else (out * mask).sum(1)
            parts.append(s / lengths.clamp(min=1).unsqueeze(1).to(out.dtype))
    return torch.cat(parts, dim=1)


def recurrent_layer(c: ModelConfig) -> nn.RNNBase:
    """The configured LSTM, GRU or RNN (batch first; dropout only between stacked layers): the
    classifier's, and the language model's that pretrains it (pretrain.py)."""
    return _CELLS[c.cell](
        c.embedding_dim,
        c.hidden_size,
        num_layers=c.num_layers,
        batch_first=True,
        bidirectional=c.bidirectional,
        dropout=c.dropout if c.num_layers > 1 else 0.0,
    )


class RNNClassifier(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int, num_classes: int, multilabel: bool = False):
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(vocab_size, c.embedding_dim, padding_idx=0)
        self.embedding_dropout = SpatialDropout(c.embedding_dropout)
        self.rnn = recurrent_layer(c)
        directions = 2 if c.bidirectional else 1
        self.dropout = Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size * directions * len(c.poolings), output_size(num_classes, multilabel))

    def encode(
        self, ids: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None, embedding_hook: Hook | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position states (B, T, dirs*H), exact up to each length, and the last real state (B, dirs*H)."""
        B, T = ids.shape
        lengths = lengths.clamp(min=1)  # an empty text is one <pad>: defined, and the same every time
        x = _embedded(self.embedding, ids, embedding_hook)  # (B, T, E)
        mask = self.embedding_dropout.mask(x, generator)
        x = x if mask is None else x * mask
        # nn.LSTM's own dropout between layers draws from the global generator: not in training
        inner_dropout = self.training and self.config.num_layers > 1 and self.config.dropout > 0
        if bool((lengths == T).all()) and not inner_dropout:
            # without an adversarial push the kernel may project each distinct word once
            words = Words(ids, self.embedding, mask) if embedding_hook is None else None
            fast = training_kernel(self.rnn, x, words) if training_kernel is not None else None
            if fast is not None:  # float32 training on a CPU: the C kernel (fastrnn.lstm_train)
                return fast
            out, h = self.rnn(x)  # (B, T, dirs*H): one call, PyTorch's fast path
            h = h[0] if isinstance(h, tuple) else h  # LSTM: (h_n, c_n)
            dirs = 2 if self.config.bidirectional else 1
            # h_n: (layers*dirs, B, H) -> the top layer's final state of each direction
            last = h.view(self.config.num_layers, dirs, B, -1)[-1].transpose(0, 1).reshape(B, -1)  # (B, dirs*H)
            return out, last
        return self._encode_mixed(x, lengths, generator)

    def _encode_mixed(
        self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts of different lengths, post-padded, without packing (packed input leaves PyTorch's
        fast CPU path: slower at inference, benchmarks/results/cpu-notes-2026-11-27.md). The forward direction reads real
        tokens before any pad, so its states up to each length are exact; the backward direction
        runs on each text reversed within its own length, so it too starts at a real token."""
        B, T, _ = x.shape
        c = self.config
        steps = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
        valid = steps < lengths.unsqueeze(1)  # (B, T)
        rev = torch.where(valid, lengths.unsqueeze(1) - 1 - steps, steps)  # (B, T) reversal within length
        run = _RUN[c.cell]
        dirs = 2 if c.bidirectional else 1
        for layer in range(c.num_layers):
            parts = []
            for d in range(dirs):
                weights = self.rnn.all_weights[layer * dirs + d]  # [w_ih, w_hh, b_ih, b_hh]
                inp = x if d == 0 else x.gather(1, rev.unsqueeze(-1).expand_as(x))
                h0 = x.new_zeros(1, B, c.hidden_size)
                hx = (h0, h0) if c.cell == "lstm" else h0
                out = run(inp, hx, weights, True, 1, 0.0, self.training, False, True)[0]  # (B, T, H)
                if d == 1:
                    out = out.gather(1, rev.unsqueeze(-1).expand_as(out))  # back in text order
                parts.append(out)
            x = torch.cat(parts, dim=2)  # (B, T, dirs*H)
            if layer < c.num_layers - 1 and c.dropout and self.training:
                x = dropout(x, c.dropout, generator=generator)
        out = x * valid.unsqueeze(-1).to(x.dtype)  # zero past each length, as packing would
        H = c.hidden_size
        last = [out[:, :, :H].gather(1, (lengths - 1).view(B, 1, 1).expand(B, 1, H)).squeeze(1)]  # (B, H)
        if c.bidirectional:
            last.append(out[:, 0, H:])  # the backward direction ends at the first token
        return out, torch.cat(last, dim=1)  # (B, T, dirs*H), (B, dirs*H)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None, embedding_hook: Hook | None = None
    ) -> torch.Tensor:
        out, last = self.encode(ids, lengths, generator, embedding_hook)
        return self.classify(masked_pool(out, lengths.clamp(min=1), self.config.poolings, last), generator)

    def classify(self, pooled: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The head on pooled states (B, P) -> logits (B, C); inference.py feeds it fastrnn's pooling."""
        return self.head(self.dropout(pooled, generator))  # (B, C)


class BagOfEmbeddings(nn.Module):
    """The order-blind baseline: the same embedding, pooled (mean and/or max, never ``last``),
    then one hidden layer and the output. It sees which words occur, not in what order."""

    def __init__(self, config: ModelConfig, vocab_size: int, num_classes: int, multilabel: bool = False):
        super().__init__()
        self.config = config
        self.poolings = [p for p in config.poolings if p != "last"] or ["mean"]
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=0)
        self.embedding_dropout = SpatialDropout(config.embedding_dropout)
        self.hidden = nn.Linear(config.embedding_dim * len(self.poolings), config.hidden_size)
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, output_size(num_classes, multilabel))

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None, embedding_hook: Hook | None = None
    ) -> torch.Tensor:
        x = self.embedding_dropout(_embedded(self.embedding, ids, embedding_hook), generator)  # (B, T, E)
        pooled = masked_pool(x, lengths.clamp(min=1), self.poolings)  # (B, P*E)
        return self.head(self.dropout(torch.relu(self.hidden(pooled)), generator))  # (B, C)


class Ensemble(nn.Module):
    """Recurrent classifiers of one shape, one per cell of ``cell="lstm+gru"`` (say), each with
    its own embedding and initialisation. They train side by side on the same batches, each on
    its own loss (the training forward returns their logits stacked, (M, B, C)); a prediction
    averages their logits. Averaging models that err differently is the cheapest accuracy there is."""

    def __init__(self, config: ModelConfig, vocab_size: int, num_classes: int, multilabel: bool = False):
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(
            RNNClassifier(dataclasses.replace(config, cell=cell, members=1), vocab_size, num_classes, multilabel) for cell in config.cells
        )

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None, embedding_hook: Hook | None = None
    ) -> torch.Tensor:
        logits = torch.stack([m(ids, lengths, generator, embedding_hook) for m in self.members])  # (M, B, C)
        return logits if self.training else logits.mean(0)  # (M, B, C) | (B, C)


Single = RNNClassifier | BagOfEmbeddings  # a model that is not an ensemble


def members(model: nn.Module) -> list[Single]:
    """The single models in ``model``: its members for an ensemble, else itself."""
    # an ensemble's ModuleList holds RNNClassifiers, and any other model build_model makes is a single one
    return cast(list[Single], list(model.members) if isinstance(model, Ensemble) else [model])


def num_outputs(model: nn.Module) -> int:
    return members(model)[0].head.out_features


def build_model(config: ModelConfig, vocab_size: int, num_classes: int, multilabel: bool = False) -> nn.Module:
    if config.arch == "mlp":
        return BagOfEmbeddings(config, vocab_size, num_classes, multilabel)
    if len(config.cells) > 1:
        return Ensemble(config, vocab_size, num_classes, multilabel)
    return RNNClassifier(config, vocab_size, num_classes, multilabel)
