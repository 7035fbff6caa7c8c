"""The fit loop: optimizer, schedule, gradient clipping, class weights, validation every epoch,
early stopping with the best weights kept, progress, and inference in length-sorted batches."""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .batching import collate, inference_batches, lengths_of, training_batches
from .config import TrainConfig
from .errors import TextRNNError

log = logging.getLogger("textrnn")


def set_threads(num_threads: int | None) -> None:
    """One thread per available core unless told otherwise."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(num_threads or cores)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = config.learning_rate, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=max(total_steps, 1),
                                                   pct_start=0.25, anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
    if config.schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(total_steps, 1)))
    return None


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None,
            reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on one logit for two classes, categorical cross-entropy otherwise."""
    if logits.size(1) == 1:
        per = F.binary_cross_entropy_with_logits(logits.squeeze(1), targets.to(logits.dtype), reduction="none")
    else:
        per = F.cross_entropy(logits, targets, reduction="none")
    if class_weights is not None:
        per = per * class_weights[targets]
    return per.mean() if reduction == "mean" else per


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    return (logits.squeeze(1) > 0).long() if logits.size(1) == 1 else logits.argmax(1)


def balanced_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    w = len(targets) / (num_classes * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


@torch.inference_mode()
def predict_logits(model: nn.Module, sequences: Sequence[np.ndarray], batch_size: int = 512) -> np.ndarray:
    """Logits (N, C) in input order. Batches are length-sorted, so padding is minimal and masked."""
    was_training = model.training
    model.eval()
    out = None
    lengths = lengths_of(sequences)
    for idx in inference_batches(lengths, batch_size):
        ids, lens = collate([sequences[i] for i in idx])
        logits = model(ids, lens).float().numpy()
        if out is None:
            out = np.empty((len(sequences), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    model.train(was_training)
    if out is None:
        out = np.empty((0, 1), dtype=np.float32)
    return out


def evaluate_loss(model: nn.Module, sequences, targets: np.ndarray, batch_size: int = 512) -> tuple[float, float, np.ndarray]:
    logits = predict_logits(model, sequences, batch_size)
    t = torch.from_numpy(targets)
    lg = torch.from_numpy(logits)
    loss = float(loss_fn(lg, t)) if len(targets) else float("nan")
    acc = float((predicted_class(lg) == t).float().mean()) if len(targets) else float("nan")
    return loss, acc, logits


class _Progress:
    """A tqdm bar on a terminal; on a pipe (CI logs) one plain line per epoch instead."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)

    def update(self, n: int, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(model: nn.Module, train_x: Sequence[np.ndarray], train_y: np.ndarray, config: TrainConfig,
        val_x: Sequence[np.ndarray] | None = None, val_y: np.ndarray | None = None,
        progress: bool = True, on_epoch_end: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place; returns the history (one dict per epoch). With validation data the
    weights of the best epoch (by ``config.monitor``) are restored at the end."""
    seed_everything(config.seed)
    set_threads(config.num_threads)
    rng = np.random.default_rng(config.seed)
    train_y = np.asarray(train_y, dtype=np.int64)
    num_outputs = model.head.out_features
    num_classes = 2 if num_outputs == 1 else num_outputs
    weights = balanced_weights(train_y, num_classes) if config.class_weight == "balanced" else None
    lengths = lengths_of(train_x)
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config, steps_per_epoch * config.epochs)
    has_val = val_x is not None and len(val_x) > 0
    better = (lambda a, b: a > b) if config.monitor == "val_accuracy" else (lambda a, b: a < b)
    best, best_state, best_epoch, waited = None, None, 0, 0
    history: list[dict] = []
    targets_all = torch.from_numpy(train_y)
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        total_loss, correct, seen, tokens = 0.0, 0, 0, 0
        bar = _Progress(steps_per_epoch, f"epoch {epoch}/{config.epochs}", progress)
        for idx in training_batches(lengths, config.batch_size, rng):
            ids, lens = collate([train_x[i] for i in idx], equal_length=config.equal_length_batches)
            y = targets_all[idx]
            logits = model(ids, lens)  # (B, C)
            loss = loss_fn(logits, y, weights)
            if not torch.isfinite(loss):
                raise TextRNNError(f"Training diverged: the loss became {float(loss)} at epoch {epoch}. "
                                   f"Try a lower learning rate (received: learning_rate={config.learning_rate}).")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            n = len(idx)
            total_loss += loss.item() * n
            correct += int((predicted_class(logits.detach()) == y).sum())
            seen += n
            tokens += int(lens.sum())
            bar.update(1, loss=total_loss / seen, accuracy=correct / seen)
        bar.close()
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1),
               "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9),
               "learning_rate": optimizer.param_groups[0]["lr"]}
        if has_val:
            row["val_loss"], row["val_accuracy"], _ = evaluate_loss(model, val_x, np.asarray(val_y, dtype=np.int64))
        row["elapsed"] = time.perf_counter() - start
        history.append(row)
        if progress:
            log.info("epoch %d/%d  %s", epoch, config.epochs,
                     "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
                     + f"  ({seconds:.1f}s, {row['tokens_per_s']:,.0f} tokens/s)")
        if on_epoch_end is not None:
            on_epoch_end(row)
        if has_val:
            score = row[config.monitor]
            if best is None or better(score, best):
                best, best_epoch, waited = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if config.early_stopping_patience and waited >= config.early_stopping_patience:
                    log.info("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                             config.monitor, waited, best, best_epoch)
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
        for row in history:
            row["best"] = row["epoch"] == best_epoch
    return history
