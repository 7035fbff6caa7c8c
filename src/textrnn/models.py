"""The networks: ``RNNClassifier`` (Embedding -> LSTM|GRU|RNN -> pooling -> Dense) and
``BagOfEmbeddings`` (the order-blind MLP baseline). Both map ``(ids, lengths)`` to logits.

Inputs are post-padded: real tokens first, ``<pad>`` (id 0) after. Padding never reaches a
prediction: a batch whose texts all have one length runs the recurrent layer directly (PyTorch's
fast oneDNN path); a mixed batch is packed, and max/mean pooling are masked. Two classes get one
logit (sigmoid); more get one per class (softmax).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import ModelConfig

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def output_size(num_classes: int) -> int:
    return 1 if num_classes == 2 else num_classes


class SpatialDropout(nn.Dropout):
    """Drops whole embedding channels for a whole text (Keras' SpatialDropout1D): dropping single
    positions would let the recurrent layer see through the gaps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, E)
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * mask


def masked_pool(out: torch.Tensor, lengths: torch.Tensor, poolings: list[str],
                last: torch.Tensor | None = None) -> torch.Tensor:
    """Concatenate the requested poolings of ``out`` (B, T, D) over the real positions only."""
    B, T, D = out.shape
    parts = []
    full = bool((lengths == T).all())
    if not full:
        mask = (torch.arange(T, device=out.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
    for p in poolings:
        if p == "last":
            parts.append(last)
        elif p == "max":
            parts.append(out.amax(1) if full else out.masked_fill(~mask, float("-inf")).amax(1))
        elif p == "mean":
            s = out.sum(1) if full else (out * mask).sum(1)
            parts.append(s / lengths.clamp(min=1).unsqueeze(1).to(out.dtype))
    return torch.cat(parts, dim=1)


class RNNClassifier(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int, num_classes: int):
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(vocab_size, c.embedding_dim, padding_idx=0)
        self.embedding_dropout = SpatialDropout(c.embedding_dropout)
        self.rnn = _CELLS[c.cell](c.embedding_dim, c.hidden_size, num_layers=c.num_layers, batch_first=True,
                                  bidirectional=c.bidirectional, dropout=c.dropout if c.num_layers > 1 else 0.0)
        directions = 2 if c.bidirectional else 1
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size * directions * len(c.poolings), output_size(num_classes))

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position states (B, T, dirs*H), zero past each length, and the last real state (B, dirs*H)."""
        B, T = ids.shape
        lengths = lengths.clamp(min=1)  # an empty text is one <pad>: defined, and the same every time
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        if bool((lengths == T).all()):
            out, h = self.rnn(x)  # (B, T, dirs*H)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, h = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        h = h[0] if isinstance(h, tuple) else h  # LSTM: (h_n, c_n)
        dirs = 2 if self.config.bidirectional else 1
        # h_n: (layers*dirs, B, H) -> top layer's final state, each direction: its last real step.
        last = h.view(self.config.num_layers, dirs, B, -1)[-1].transpose(0, 1).reshape(B, -1)  # (B, dirs*H)
        return out, last

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, last = self.encode(ids, lengths)
        pooled = masked_pool(out, lengths.clamp(min=1), self.config.poolings, last)  # (B, P)
        return self.head(self.dropout(pooled))  # (B, C)


class BagOfEmbeddings(nn.Module):
    """The order-blind baseline: the same embedding, pooled (mean and/or max, never ``last``),
    then one hidden layer and the output. It sees which words occur, not in what order."""

    def __init__(self, config: ModelConfig, vocab_size: int, num_classes: int):
        super().__init__()
        self.config = config
        self.poolings = [p for p in config.poolings if p != "last"] or ["mean"]
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=0)
        self.embedding_dropout = SpatialDropout(config.embedding_dropout)
        self.hidden = nn.Linear(config.embedding_dim * len(self.poolings), config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, output_size(num_classes))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        pooled = masked_pool(x, lengths.clamp(min=1), self.poolings)  # (B, P*E)
        return self.head(self.dropout(torch.relu(self.hidden(pooled))))  # (B, C)


def build_model(config: ModelConfig, vocab_size: int, num_classes: int) -> nn.Module:
    cls = BagOfEmbeddings if config.arch == "mlp" else RNNClassifier
    return cls(config, vocab_size, num_classes)
