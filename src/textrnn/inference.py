"""Prediction: a model's logits for encoded texts, in length-sorted batches, on the CPU side by
side (one batch per core) or on a GPU; through the C kernel (fastrnn) where it applies. Training
validates with the same code; nothing here imports the trainer."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from . import fastrnn
from .batching import collate, inference_batches, lengths_of
from .models import correct_count, loss_fn, members, num_outputs
from .progress import track
from .runtime import autocast, denormals_flushed, device_of, inference_dtype, worker_pool

# On a CPU a batch's activations must stay in cache, so a CPU runs any batch_size in batches of at
# most this many texts (the results are the same); a GPU takes batch_size as it is. fastrnn's
# kernel runs one small matrix product per step, so it wants wide batches. The measurements behind
# both: benchmarks/results/cpu-notes-2026-11-27.md.
CPU_INFERENCE_BATCH = 64
FAST_CPU_INFERENCE_BATCH = 512


def forward(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Logits (B, C) of ``model`` in eval mode: each recurrent member through the C kernel where it
    applies (CPU inference on a batch of texts), else PyTorch's path; an ensemble's averaged."""
    logits = [fastrnn.forward(m, ids, lengths) if fastrnn.applies(m, ids) else m(ids, lengths) for m in members(model)]
    return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)


def predict_logits(
    model: nn.Module, sequences: Sequence[np.ndarray], batch_size: int = 512, precision: str = "auto", workers: int | None = None
) -> np.ndarray:
    """Logits (N, C) in input order. Batches are length-sorted, so padding is minimal and masked.
    On a CPU the batches run side by side, ``workers`` of them (default: one per torch thread),
    each on one core (see ``runtime.worker_pool``)."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    dtype = inference_dtype(device, precision)
    lengths = lengths_of(sequences)
    if device.type == "cpu":
        fast = all(fastrnn.supports(m) for m in members(model))
        batch_size = min(batch_size, FAST_CPU_INFERENCE_BATCH if fast else CPU_INFERENCE_BATCH)
    batches = inference_batches(lengths, batch_size)
    out = np.empty((len(sequences), num_outputs(model)), dtype=np.float32)

    def run(idx: np.ndarray) -> np.ndarray:  # inference mode, autocast and denormals are per thread: set here
        with torch.inference_mode(), autocast(device, dtype), denormals_flushed():
            ids, lens = collate([sequences[i] for i in idx])
            # .to and .cpu return the tensor itself when it is already there: no copy on CPU
            return forward(model, ids.to(device), lens.to(device)).float().cpu().numpy()

    workers = min(workers or torch.get_num_threads(), len(batches)) if device.type == "cpu" else 1
    try:
        with worker_pool(workers) as pool:
            results = pool.map(run, batches) if pool is not None else map(run, batches)
            for idx, logits in zip(batches, track(results, len(batches), "predicting", unit=" batches", texts=len(sequences))):
                out[idx] = logits
    finally:
        model.train(was_training)
    return out


def evaluate_loss(
    model: nn.Module, sequences, targets: np.ndarray, batch_size: int = 512, precision: str = "auto", workers: int | None = None
) -> tuple[float, float, np.ndarray]:
    logits = predict_logits(model, sequences, batch_size, precision, workers)
    t = torch.from_numpy(targets)
    lg = torch.from_numpy(logits)
    loss = float(loss_fn(lg, t)) if len(targets) else float("nan")
    acc = correct_count(lg, t) / len(targets) if len(targets) else float("nan")
    return loss, acc, logits
