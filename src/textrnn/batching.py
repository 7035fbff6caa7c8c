"""Batches of encoded texts: length-bucketed for training, length-sorted for inference.

Training batches group texts of similar length, and with ``equal_length=True`` each batch is cut to
its shortest text, so every sequence in it has one length and no padding at all: PyTorch's recurrent
layers then take their fast path instead of the packed one (which falls back to slow per-step work
on CPU when lengths differ). Texts are sorted within random chunks, so the few tokens cut per text
are few; inference never cuts anything.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def lengths_of(sequences: Sequence[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))


def training_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, chunk: int = 50, group: int = 1) -> list[np.ndarray]:
    """Index batches for one epoch: shuffle, sort by length inside chunks of ``chunk`` batches,
    split, shuffle the batch order. Similar lengths per batch; a different grouping every epoch.

    With ``group=W`` (W processes, see distributed.shard) runs of W neighbouring batches, of
    similar lengths, are shuffled as units, so the W batches trained at the same step cost about
    the same and no process waits long for the slowest. A last, shorter run stays at the end.
    ``group=1`` is the plain shuffle (the same draws, the same order)."""
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    span = batch_size * chunk
    for start in range(0, len(order), span):
        part = order[start : start + span]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    full = len(batches) // group
    return [batches[g * group + j] for g in rng.permutation(full) for j in range(group)] + batches[full * group :]


def inference_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Longest first, so each batch packs texts of near-equal length."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(sequences: Sequence[np.ndarray], equal_length: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-padded ids (B, T) int64 and lengths (B,). With ``equal_length`` every text is cut to the
    batch's shortest (keeping its end, where reviews give their verdict) so there is no padding."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if equal_length:
        T = max(int(lengths.min()), 1)
        ids = np.zeros((len(sequences), T), dtype=np.int64)
        for i, s in enumerate(sequences):
            if len(s):
                ids[i] = s[len(s) - T :]
        return torch.from_numpy(ids), torch.full((len(sequences),), T, dtype=torch.int64)
    ids, lengths = pad_batch(sequences)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def pad_batch(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Post-padded ids (B, T) int64 and lengths (B,), in NumPy (what the ONNX runtime takes)."""
    lengths = lengths_of(sequences)
    ids = np.zeros((len(sequences), max(int(lengths.max(initial=0)), 1)), dtype=np.int64)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = s
    return ids, lengths
