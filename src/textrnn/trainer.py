"""The fit loop: epochs of shuffled, length-bucketed batches; gradient clipping and the schedule;
validation every epoch; early stopping with the best weights kept; progress; checkpoints to resume
an interrupted run (checkpoint.py); several processes under DistributedDataParallel
(distributed.py). A batch's loss and gradients, in pieces, are pieces.py's; the optimizer is
optim.py's; validation is prediction (inference.py).

``fit(model, ...)`` is the function; ``Trainer`` holds one run's setup, and ``Loop`` everything the
run carries from step to step, which is what a checkpoint saves besides the tensors.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed, fastrnn, pieces
from .adaptive import resolve_train
from .batching import collate, lengths_of, training_batches
from .checkpoint import Checkpointer, DeferredInterrupt, data_fingerprint, optimizer_to_files, restore, torch_rng_states
from .config import RuntimeConfig, TrainConfig, decided, decided_int, unlabelled_unused
from .errors import CheckpointError, ConfigError, TextRNNError, TrainingInterrupted
from .inference import evaluate_loss, predict_logits
from .models import correct_count, loss_fn, num_outputs
from .optim import balanced_weights, is_encoder, make_optimizer, make_schedule, step_in_parts
from .progress import Progress
from .runtime import collector_frozen, compute_dtype, denormals_flushed, resolve_device, seed_everything, set_threads, worker_pool

log = logging.getLogger("textrnn")

# Where the order of the texts without labels comes from, beside train.seed: a stream of its own,
# so that adding them leaves the labelled batches' order as it was.
UNLABELLED_STREAM = 0x756E6C62


def _fresh_totals() -> dict:
    return {"loss": 0.0, "correct": 0, "seen": 0, "tokens": 0, "seconds": 0.0}


@dataclass
class Loop:
    """Everything the loop carries from step to step; a checkpoint is this plus the tensors."""

    epoch: int = 1
    batch: int = 0
    step: int = 0
    finished: bool = False
    epoch_rng: Mapping[str, Any] | None = None
    totals: dict = field(default_factory=_fresh_totals)
    elapsed: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    waited: int = 0
    history: list = field(default_factory=list)


def fit(
    model: nn.Module,
    train_x: Sequence[np.ndarray],
    train_y: np.ndarray,
    config: TrainConfig,
    val_x: Sequence[np.ndarray] | None = None,
    val_y: np.ndarray | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    runtime: RuntimeConfig | None = None,
    unlabelled_x: Sequence[np.ndarray] | None = None,
) -> list[dict]:
    """Train ``model`` in place; returns the history (one dict per epoch). With validation data the
    weights of the best epoch (by ``config.monitor``) are restored at the end.

    ``unlabelled_x``, encoded texts without labels, train beside the labelled ones through
    ``config.vat`` and ``config.entropy_min``: each step takes as many of them as it has labelled
    texts (fewer when there are fewer), never in the supervised loss (see Trainer._unlabelled).

    With ``checkpoint_dir`` a checkpoint is written at every epoch end and every
    ``runtime.checkpoint_every`` steps; ``resume=True`` continues from it, and the result is the
    same, bit for bit on CPU, as a run that was never interrupted. Ctrl-C then stops at the next
    step with a checkpoint written (:class:`TrainingInterrupted`).

    The model moves to ``runtime.device``. In a process group (torchrun, see distributed.py) each
    process trains on its share of every epoch's batches under DistributedDataParallel; only
    rank 0 writes checkpoints; every process returns the same history and weights."""
    if resume and checkpoint_dir is None:
        raise CheckpointError("resume=True needs the checkpoint_dir of the run to continue.")
    config = resolve_train(config, len(train_x), distributed.current().world_size)  # an "auto" epoch count
    trainer = Trainer(model, train_x, train_y, config, val_x, val_y, progress, on_epoch_end, checkpoint_dir, runtime, unlabelled_x)
    return trainer.run(resume)


def _targets(y: np.ndarray) -> np.ndarray:
    """Class indices (N,) as int64; multi-label 0/1 rows (N, C) as float32."""
    y = np.asarray(y)
    return y.astype(np.float32) if y.ndim == 2 else y.astype(np.int64)


def _finite_parameters(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Trainer:
    """One training run's setup; ``run()`` trains."""

    def __init__(
        self,
        model: nn.Module,
        train_x: Sequence[np.ndarray],
        train_y: np.ndarray,
        config: TrainConfig,
        val_x: Sequence[np.ndarray] | None = None,
        val_y: np.ndarray | None = None,
        progress: bool = True,
        on_epoch_end: Callable[[dict], None] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        runtime: RuntimeConfig | None = None,
        unlabelled_x: Sequence[np.ndarray] | None = None,
    ):
        if unlabelled_x is not None and not (config.vat or config.entropy_min):
            raise unlabelled_unused(config, f"{len(unlabelled_x)} texts without labels")
        self.model, self.train_x, self.config, self.on_epoch_end = model, train_x, config, on_epoch_end
        self.unlabelled_x = unlabelled_x if unlabelled_x is not None and len(unlabelled_x) else None
        self.unlabelled_lengths = lengths_of(unlabelled_x) if unlabelled_x is not None else None
        self._pass: tuple[int, list[np.ndarray]] | None = None  # the unlabelled stream's current pass
        self.runtime = runtime = runtime or RuntimeConfig()
        self.ctx = ctx = distributed.current()
        self.device = device = resolve_device(runtime.device, ctx.local_rank, ctx.world_size)
        self.progress = progress and ctx.is_main
        seed_everything(config.seed)
        random.seed(config.seed)
        set_threads(runtime.num_threads, ctx.local_world_size if ctx.is_distributed else 1)
        if ctx.rank:  # its own dropout masks on each process; the batch order (numpy, below) is shared
            torch.manual_seed(int(np.random.SeedSequence([config.seed, ctx.rank]).generate_state(1)[0]))
        self.rng = np.random.default_rng(config.seed)
        self.train_y = _targets(train_y)
        outputs = num_outputs(model)
        if config.class_weight == "balanced" and self.train_y.ndim == 2:
            raise ConfigError("class_weight='balanced' weighs the classes of single-label data; multi-label data has no such classes.")
        model.to(device)  # in place; nothing moves when it is already there
        weights = balanced_weights(self.train_y, 2 if outputs == 1 else outputs).to(device) if config.class_weight == "balanced" else None
        self.lengths = lengths_of(train_x)
        # every process takes ceil(batches / W) steps an epoch (see distributed.shard)
        self.steps_per_epoch = math.ceil(math.ceil(len(train_x) / config.batch_size) / ctx.world_size)
        self.optimizer = make_optimizer(model, config)
        dtype = compute_dtype(device, runtime.precision)
        self.workers = pieces.workers(device, dtype, ctx)
        self.piece_tokens = pieces.piece_tokens(runtime.micro_batch_tokens, model, device, dtype) if device.type == "cpu" else None
        self.epochs = decided_int(config.epochs, "train.epochs")
        self.patience = decided(config.early_stopping_patience, "train.early_stopping_patience")
        self.schedule = make_schedule(self.optimizer, config, self.steps_per_epoch * self.epochs)
        self.frozen = [p for n, p in model.named_parameters() if is_encoder(n) and p.requires_grad] if config.freeze_encoder_epochs else []
        self.val_x, self.val_y = val_x, (_targets(val_y) if val_y is not None else None)
        self.has_val = val_x is not None and len(val_x) > 0
        self.targets = torch.from_numpy(self.train_y)
        self.ckpt = Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None
        self.fingerprint = data_fingerprint(train_x, self.train_y, val_x, val_y, self.unlabelled_x) if self.ckpt else None
        self.loop = Loop()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.step = pieces.Step(
            model, model, device, dtype, weights, float(config.adversarial), config.vat, config.entropy_min, config.label_smoothing
        )  # "auto": decided in fit()

    # ------------------------------------------------------------------------ the run
    def run(self, resume: bool = False) -> list[dict]:
        if resume:
            if self.ckpt is None:
                raise CheckpointError("resume=True needs the checkpoint_dir of the run to continue.")
            saved, self.best_state = restore(
                self.ckpt, self.model, self.optimizer, self.schedule, self.rng, self._settings(), self.fingerprint, self.ctx, self.device
            )
            self.loop = Loop(**saved)
            log.info(
                "resuming from epoch %d, batch %d (step %d)%s",
                self.loop.epoch,
                self.loop.batch,
                self.loop.step,
                " - training had finished" if self.loop.finished else "",
            )
        if self.ctx.is_distributed:  # never for one process: no wrapper, no hooks, the single-process path as it was
            # It starts by copying rank 0's weights to every process, so they all begin alike.
            self.step.net = DistributedDataParallel(
                self.model, gradient_as_bucket_view=True, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.start = time.perf_counter() - self.loop.elapsed
        with (
            DeferredInterrupt(enabled=self.ckpt is not None) as self.interrupt,
            worker_pool(self.workers) as self.pool,
            denormals_flushed(),
            collector_frozen(),
            pieces.sparse_embeddings(self.model, on=self.workers > 1),
        ):
            epoch = self.loop.epoch
            while not self.loop.finished and epoch <= self.epochs:
                self.loop.epoch = epoch
                self._epoch(epoch)
                epoch += 1
        return self._finish()

    def _finish(self) -> list[dict]:
        for p in self.frozen:
            p.requires_grad_(True)
        if self.ctx.is_distributed:
            # DistributedDataParallel's hooks and its hold on the process group go now, not at exit
            # (a wrapper left to the interpreter's teardown can abort the process as it exits)
            self.step.net = self.model
            gc.collect()
        fastrnn.forget(self.model)  # the fused optimizer moved no version counter
        history = self.loop.history
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            for row in history:
                row["best"] = row["epoch"] == self.loop.best_epoch
        return history

    # ------------------------------------------------------------------------ one epoch
    def _epoch(self, epoch: int) -> None:
        loop, config = self.loop, self.config
        self.model.train()
        for p in self.frozen:  # gradual unfreezing: the head learns first; in one process the encoder's
            p.requires_grad_(epoch > config.freeze_encoder_epochs or self.ctx.is_distributed)  # backward is skipped
        batches = self._batches(epoch)
        tot = loop.totals
        t0 = time.perf_counter() - tot["seconds"]
        bar = Progress(self.steps_per_epoch, f"epoch {epoch}/{self.epochs}", "batch", self.progress)
        bar.update(loop.batch)
        for b in range(loop.batch, len(batches)):
            stopping = self._batch(batches[b], epoch)
            loop.batch, loop.step = b + 1, loop.step + 1
            bar.update(1, loss=tot["loss"] / tot["seen"], accuracy=tot["correct"] / tot["seen"])
            if (
                self.ckpt is not None
                and b + 1 < len(batches)
                and (stopping or (self.runtime.checkpoint_every and loop.step % self.runtime.checkpoint_every == 0))
            ):
                tot["seconds"] = time.perf_counter() - t0
                loop.elapsed = time.perf_counter() - self.start
                self._snapshot(epoch_done=False)
                if stopping:
                    bar.close()
                    raise TrainingInterrupted(
                        f"Training stopped at epoch {epoch}, batch {b + 1} of {len(batches)}; checkpoint saved in {str(self.ckpt.dir)!r}.",
                        self.ckpt.dir,
                    )
        bar.close()
        self._end_epoch(epoch, time.perf_counter() - t0)

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """This process's batches of the epoch: all processes draw the same order, each takes its
        share (all of it when alone). Resuming mid-epoch redraws the epoch's order from its start."""
        loop, rng, ctx = self.loop, self.rng, self.ctx
        resumed_at = None
        if loop.batch == 0:
            loop.epoch_rng = rng.bit_generator.state  # so a resumed run redraws this epoch's order
            loop.totals = _fresh_totals()
        else:
            resumed_at = rng.bit_generator.state
            if loop.epoch_rng is None:
                raise CheckpointError(f"{self._where()} is damaged (epoch_rng: missing).")
            try:
                rng.bit_generator.state = loop.epoch_rng
            except (TypeError, ValueError, KeyError) as e:
                raise CheckpointError(f"{self._where()} is damaged (epoch_rng: {e}).") from None
        batches = distributed.shard(
            training_batches(self.lengths, self.config.batch_size, rng, group=ctx.world_size), ctx.rank, ctx.world_size
        )
        if resumed_at is not None and (rng.bit_generator.state != resumed_at or len(batches) <= loop.batch):
            raise CheckpointError(
                f"{self._where()}: the batch order of epoch {epoch} cannot be redrawn as it "
                f"was; the checkpoint is damaged or from other data."
            )
        return batches

    def _batch(self, idx: np.ndarray, epoch: int) -> bool:
        """One optimizer step on the texts ``idx``; whether a Ctrl-C asks to stop."""
        config, device, ctx = self.config, self.device, self.ctx
        ids, lens = collate([self.train_x[i] for i in idx], equal_length=config.equal_length_batches)
        y = self.targets[idx].to(device)
        ids, lens = ids.to(device), lens.to(device)
        self.optimizer.zero_grad(set_to_none=True)
        parts = pieces.micro_batches(len(idx), ids.size(1), self.piece_tokens, self.workers)
        unlabelled = self._unlabelled(len(idx))
        if self.pool is None:  # one piece, or several whose gradients add up to the batch's
            loss, piece_logits = self.step.one_after_another(ids, lens, y, parts, ctx, unlabelled)
        else:  # side by side, one core each
            loss, piece_logits = self.step.side_by_side(ids, lens, y, parts, self.pool, unlabelled)
        logits = torch.cat(piece_logits)  # (B, C)
        diverged, stopping = not torch.isfinite(loss), self.interrupt.requested
        if ctx.is_distributed:  # every process stops at the same step, or none does
            diverged, stopping = map(bool, distributed.all_reduce([diverged, stopping], op="max"))
        if diverged:
            kept = f"; {self.ckpt.describe()}" if self.ckpt else ""
            raise TextRNNError(
                f"Training diverged: the loss became {loss.item()} at epoch {epoch}, step "
                f"{self.loop.step + 1}{kept}. Try a lower learning rate (received: "
                f"learning_rate={config.learning_rate})."
            )
        self._apply_gradients(epoch)
        tot, n = self.loop.totals, len(idx)
        tot["loss"] += loss.item() * n
        tot["correct"] += correct_count(logits.detach(), y)
        tot["seen"] += n
        tot["tokens"] += int(lens.sum())
        return stopping

    def _unlabelled(self, rows: int) -> pieces.Unlabelled | None:
        """Up to ``rows`` texts without labels for this step: the next batch of an endless stream
        over them, in a new seeded order each pass and length-bucketed as the labelled batches are
        (so equal_length_batches cuts little). The batch is a function of the step and the process
        alone: a resumed run draws the same, and each process of a group its own."""
        if self.unlabelled_x is None or self.unlabelled_lengths is None:
            return None
        ctx, batch_size = self.ctx, self.config.batch_size
        cycle, at = divmod(self.loop.step * ctx.world_size + ctx.rank, math.ceil(len(self.unlabelled_x) / batch_size))
        if self._pass is None or self._pass[0] != cycle:
            rng = np.random.default_rng([self.config.seed, UNLABELLED_STREAM, cycle])
            self._pass = (cycle, training_batches(self.unlabelled_lengths, batch_size, rng))
        idx = self._pass[1][at][:rows]
        ids, lens = collate([self.unlabelled_x[i] for i in idx], equal_length=self.config.equal_length_batches)
        return pieces.Unlabelled(
            ids.to(self.device), lens.to(self.device), pieces.micro_batches(len(idx), ids.size(1), self.piece_tokens, self.workers)
        )

    def _apply_gradients(self, epoch: int) -> None:
        if epoch <= self.config.freeze_encoder_epochs:  # under DDP, which needs every gradient, dropped here
            for p in self.frozen:
                p.grad = None  # the optimizer skips a parameter without a gradient
        if self.config.clip_grad_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        if not step_in_parts(self.optimizer, self.pool, self.workers):
            self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()

    # ------------------------------------------------------------------------ an epoch's end
    def _end_epoch(self, epoch: int, seconds: float) -> None:
        loop, ctx = self.loop, self.ctx
        tot = loop.totals
        loss_sum, correct, seen, tokens = tot["loss"], tot["correct"], tot["seen"], tot["tokens"]
        if ctx.is_distributed:  # the epoch's figures over all processes
            loss_sum, correct, seen, tokens = distributed.all_reduce([loss_sum, correct, seen, tokens])
        seen = max(seen, 1)
        row = {
            "epoch": epoch,
            "loss": loss_sum / seen,
            "accuracy": correct / seen,
            "seconds": seconds,
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "learning_rate": self.optimizer.param_groups[0]["lr"],
        }
        if self.has_val:
            row["val_loss"], row["val_accuracy"] = self._validate()
        row["elapsed"] = time.perf_counter() - self.start
        loop.history.append(row)
        if self.progress:
            log.info(
                "epoch %d/%d  %s",
                epoch,
                self.epochs,
                "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
                + f"  ({seconds:.1f}s, {row['tokens_per_s']:,.0f} tokens/s)",
            )
        if self.on_epoch_end is not None:
            self.on_epoch_end(row)
        stop = self.has_val and self._keep_best(row, epoch)
        loop.finished = stop or epoch == self.epochs
        loop.batch = 0
        loop.elapsed = time.perf_counter() - self.start
        if self.ckpt is not None:
            self._snapshot(epoch_done=True)
            if ctx.is_distributed:  # a Ctrl-C during validation: agree on it
                stopping = bool(distributed.all_reduce([self.interrupt.requested], op="max")[0])
            else:
                stopping = self.interrupt.requested
            if stopping and not loop.finished:
                raise TrainingInterrupted(
                    f"Training stopped after epoch {epoch} of {self.epochs}; checkpoint saved in {str(self.ckpt.dir)!r}.", self.ckpt.dir
                )

    def _keep_best(self, row: dict, epoch: int) -> bool:
        """Keep the best epoch's weights; whether early stopping ends the run here."""
        loop, config = self.loop, self.config
        score = row[config.monitor]
        if loop.best is None:
            improved = True
        elif config.monitor == "val_accuracy" and score == loop.best:  # a tie: the lower validation loss wins
            best_row = next(r for r in loop.history if r["epoch"] == loop.best_epoch)
            improved = row["val_loss"] < best_row["val_loss"]
        else:
            improved = score > loop.best if config.monitor == "val_accuracy" else score < loop.best
        if improved:
            loop.best, loop.best_epoch, loop.waited = score, epoch, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            return False
        loop.waited += 1
        if self.patience and loop.waited >= self.patience:
            log.info(
                "early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                config.monitor,
                loop.waited,
                loop.best,
                loop.best_epoch,
            )
            return True
        return False

    def _validate(self) -> tuple[float, float]:
        """Validation loss and accuracy; with several processes each scores every W-th text and the
        sums are all-reduced, so all processes get the same figures (and take the same decisions)."""
        fastrnn.forget(self.model)  # the fused optimizer moved no version counter: rebuild its tables
        ctx, val_x, val_y, precision = self.ctx, self.val_x, self.val_y, self.runtime.precision
        assert val_x is not None and val_y is not None  # called only with validation data (has_val)
        if not ctx.is_distributed:
            loss, acc, _ = evaluate_loss(self.model, val_x, val_y, precision=precision, workers=self.workers)
            return loss, acc
        idx = np.arange(ctx.rank, len(val_x), ctx.world_size)
        loss_sum = correct = 0.0
        if len(idx):
            logits = torch.from_numpy(predict_logits(self.model, [val_x[i] for i in idx.tolist()], precision=precision))
            t = torch.from_numpy(val_y[idx])
            loss_sum = float(loss_fn(logits, t, reduction="none").sum())
            correct = correct_count(logits, t)
        loss_sum, correct, n = distributed.all_reduce([loss_sum, correct, len(idx)])
        return loss_sum / n, correct / n

    # ------------------------------------------------------------------------ checkpoints
    def _where(self) -> str:
        """The checkpoint folder, quoted, for a message about it (only ever asked for with checkpoints on)."""
        assert self.ckpt is not None
        return repr(str(self.ckpt.dir))

    def _settings(self) -> dict:
        """The settings a resumed run must share with the interrupted one: every train.* setting and
        the runtime ones that change the numbers (device, threads and checkpoint interval do not)."""
        return {
            **dataclasses.asdict(self.config),
            "precision": self.runtime.precision,
            "micro_batch_tokens": self.piece_tokens,  # as decided: "auto" decides by model and precision
        }

    def _snapshot(self, epoch_done: bool) -> None:
        loop, ctx, ckpt = self.loop, self.ctx, self.ckpt
        assert ckpt is not None  # snapshots are taken only with checkpoints on
        if not _finite_parameters(self.model):  # never save a diverged state over a good one
            raise TextRNNError(
                f"Training diverged: the weights are no longer finite at epoch {loop.epoch}, step "
                f"{loop.step}; {ckpt.describe()}. Try a lower learning rate (received: "
                f"learning_rate={self.config.learning_rate})."
            )
        rng_states = distributed.gather_objects(torch_rng_states(self.device))  # every process's dropout RNG
        totals = loop.totals
        if ctx.is_distributed:  # the epoch's running sums over all processes
            sums = distributed.all_reduce([totals["loss"], totals["correct"], totals["seen"], totals["tokens"]])
            totals = {**totals, "loss": sums[0], "correct": int(sums[1]), "seen": int(sums[2]), "tokens": int(sums[3])}
        error = None
        if ctx.is_main:
            try:
                ckpt.save(*self._checkpoint(totals, epoch_done, rng_states))
            except CheckpointError as e:
                if not ctx.is_distributed:
                    raise
                error = str(e)
        if ctx.is_distributed:  # a failed save stops every process, not only rank 0
            error = distributed.broadcast_object(error)
            if error:
                raise CheckpointError(error)

    def _checkpoint(self, totals: dict, epoch_done: bool, rng_states: list) -> tuple[dict, dict[str, Any]]:
        """What a checkpoint holds: the state (JSON) and the tensors."""
        opt_json, opt_tensors = optimizer_to_files(self.optimizer)
        tensors = {**{f"model.{k}": v for k, v in self.model.state_dict().items()}, **opt_tensors}
        for rank, states in enumerate(rng_states):
            tensors.update({(f"rng.{k}" if rank == 0 else f"rng.{k}.rank{rank}"): v for k, v in states.items()})
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        np_legacy = np.random.get_state()
        assert isinstance(np_legacy, tuple)  # the global RandomState's MT19937 gives the legacy tuple
        state = {
            **dataclasses.asdict(self.loop),
            "totals": totals,
            "epoch_done": epoch_done,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.ctx.world_size,
            "config": self._settings(),
            "data": self.fingerprint,
            "optimizer": opt_json,
            "scheduler": self.schedule.state_dict() if self.schedule is not None else None,
            "rng": {
                "numpy": self.rng.bit_generator.state,
                "python": random.getstate(),
                "numpy_legacy": [np_legacy[0], np_legacy[1].tolist(), *np_legacy[2:]],
            },
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        return state, tensors
