"""The fit loop: optimizer, schedule, gradient clipping, class weights, validation every epoch,
early stopping with the best weights kept, progress, checkpoints to resume an interrupted run,
and inference in length-sorted batches.

A checkpoint folder (``RUN/checkpoint``)::

    state.json                 format + version, epoch and step, counters, history, best-so-far,
                               RNG states (numpy, Python), optimizer settings, scheduler state,
                               and the name of the tensors file below. Written last: the commit.
    tensors-NNNNNN.safetensors model weights, best weights, optimizer tensors, torch RNG state
    config.toml                (written by pipeline.train_run) the run's config, read by --resume

Each save writes a new tensors file, then replaces ``state.json`` (temp file + ``os.replace``), then
deletes the older tensors file: a kill at any moment leaves one complete, consistent checkpoint.
Nothing is pickled; loading reads JSON and safetensors only.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import hashlib
import json
import logging
import math
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed, fastrnn, models
from .text import progress
from .batching import collate, inference_batches, lengths_of, training_batches
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, TextRNNError, TrainingInterrupted
from .runtime import (autocast, compute_dtype, device_of, inference_dtype, resolve_device, seed_everything,  # noqa: F401
                      set_threads)

log = logging.getLogger("textrnn")


def micro_batches(rows: int, length: int, max_tokens: int | None, min_pieces: int = 1) -> list[slice]:
    """The pieces a training batch of ``rows`` texts of ``length`` tokens runs in: one, unless it
    holds more than ``max_tokens`` (then as few pieces of equal size as keep each within that many
    tokens) or ``min_pieces`` asks for more (one per worker, see fit); at least 8 texts each.
    Measured on this project's 2-core CPU (ms a step of 64 texts, whole -> in pieces of 16 to 32):
    the seed model at 180 tokens 29.1 -> 21.0; the default model at 180 tokens 46.3 -> 29.2, at 250
    76.4 -> 46.5, at 400 99.2 -> 71.3: oneDNN's recurrent layer slows down once a batch's activations
    leave the cache. Short batches stay whole (at 60 tokens pieces cost time: 8.1 -> 9.2 ms)."""
    count = max(math.ceil(rows * length / max_tokens) if max_tokens else 1, min_pieces)
    count = math.ceil(count / min_pieces) * min_pieces  # as many for each worker (3 pieces on 2 cores: 0.8x)
    count = min(count, max(1, rows // 8))  # pieces of equal size: no small remainder
    if count <= 1:
        return [slice(0, rows)]
    per = math.ceil(rows / count)
    return [slice(i, min(i + per, rows)) for i in range(0, rows, per)]


def piece_workers(device: torch.device, dtype: torch.dtype, ctx: distributed.Context) -> int:
    """How many training pieces run side by side, each on one core: on a CPU in bfloat16, one per
    torch thread. Measured on 2 cores (seed model, 64 x 180 tokens, pieces of 32): bfloat16 879k
    tokens/s side by side vs 720k one after the other on both cores; float32 the other way round
    (457k vs 585k: oneDNN's one-thread float32 recurrent kernel is slow), so float32 stays as it
    was. On IMDB's mixed lengths the gain is smaller (short batches gain nothing from pieces).
    Not under DDP, whose processes already share out the cores and whose gradient hooks need
    backward()."""
    if device.type != "cpu" or dtype != torch.bfloat16 or ctx.is_distributed:
        return 1
    return torch.get_num_threads()


ENCODER = ("embedding", "rnn")  # the layers a pretrained encoder gives (see pretrain.py)


def is_encoder(name: str) -> bool:
    """Whether the parameter ``name`` (``rnn.weight_ih_l0``, ``members.0.embedding.weight``) is an encoder's."""
    return any(part in ENCODER for part in name.split("."))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = config.learning_rate, config.weight_decay
    if config.encoder_lr_multiplier != 1.0:  # discriminative rates (ULMFiT): the encoder's group first
        encoder = [p for n, p in model.named_parameters() if p.requires_grad and is_encoder(n)]
        ids = {id(p) for p in encoder}
        params = [g for g in ({"params": encoder, "lr": lr * config.encoder_lr_multiplier},
                              {"params": [p for p in params if id(p) not in ids]}) if g["params"]]
    if config.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
        # The fused kernel updates all parameters in one pass: measured 1.6x faster training
        # steps on CPU for the course's model, whose 2.6M embedding weights dominate the update.
        try:
            return cls(params, lr=lr, weight_decay=wd, fused=True)
        except (RuntimeError, TypeError, ValueError):  # older torch: no fused CPU kernel
            return cls(params, lr=lr, weight_decay=wd)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    if config.schedule == "onecycle":
        total = max(total_steps, 1)
        # torch divides by (pct_start * total - 1): zero for 4 steps in all; warm up for 2 steps then
        pct_start = 0.25 if total != 4 else 0.5
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
                                                   pct_start=pct_start, anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
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


# On a CPU a batch's activations must stay in cache: measured here (2 cores, IMDB-like lengths),
# the seed model predicts 6,839 reviews/s in batches of 512, 11,405 in 256, 15,797 in 64 and 16,654
# in 32; the default model 2,377 / 3,623 / 6,731 / 6,230. So a CPU runs any batch_size in batches of
# at most this many texts (the results are the same); a GPU takes batch_size as it is.
CPU_INFERENCE_BATCH = 64
# fastrnn's kernel runs one small matrix product per step, so it wants wide batches: the seed
# model, one core, bfloat16, 24,023 reviews/s in batches of 512 against 12,892 in 64.
FAST_CPU_INFERENCE_BATCH = 512


_pinned_lock = threading.Lock()
_pinned = {"holders": 0, "threads": 1}  # pools open now, and the thread count to restore after the last


@contextlib.contextmanager
def _one_thread_per_worker(workers: int):
    """A pool of ``workers`` threads, each running its batches on one core (torch's intra-op threads
    set to 1, restored after; ``None`` for one worker). On 2 cores two batches of 64 side by side
    predict 1.5-2x the reviews/s of one batch at a time on both cores: a 64-row recurrent step is
    too small to share out. Held for a whole fit (see piece_workers): changing the thread count
    every step would rebuild oneDNN's kernels (measured: it loses the gain). Pools opened at once
    from several threads (a server's requests) share the setting: the last to close restores it."""
    if workers <= 1:
        yield None
        return
    from concurrent.futures import ThreadPoolExecutor

    with _pinned_lock:
        if _pinned["holders"] == 0:
            _pinned["threads"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _pinned["holders"] += 1
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="textrnn-worker") as pool:
            yield pool
    finally:
        with _pinned_lock:
            _pinned["holders"] -= 1
            if _pinned["holders"] == 0:
                torch.set_num_threads(_pinned["threads"])


def adversarial_pushes(grads: Sequence[torch.Tensor], lengths: torch.Tensor, epsilon: float) -> list[torch.Tensor]:
    """For each (B, T, E) gradient of the loss with respect to embedded texts, the push of L2 norm
    ``epsilon`` per text along it (over the text's real positions only): to first order, the change
    of that size that raises the loss most (Miyato et al. 2016). No gradient, no push."""
    pushes = []
    for g in grads:
        valid = torch.arange(g.shape[1], device=g.device)[None, :] < lengths.clamp(min=1)[:, None]  # (B, T)
        g = g * valid.unsqueeze(-1).to(g.dtype)
        norm = g.flatten(1).norm(dim=1).clamp(min=1e-12)  # (B,)
        pushes.append((epsilon * g / norm[:, None, None]).detach())
    return pushes


def _step_in_parts(optimizer: torch.optim.Optimizer, pool, parts: int) -> bool:
    """``optimizer.step()`` for fused Adam or AdamW on the CPU, with the update of every large
    parameter split by rows into ``parts`` that run side by side in ``pool`` (one core each): the
    same elementwise arithmetic, on all cores instead of one (the seed model's 2.6M embedding
    weights: 1.14 ms a step on one core). Returns False, having done nothing, where that does not
    apply: no pool, another optimizer or option, or no state yet (the first step makes it)."""
    if pool is None or not isinstance(optimizer, torch.optim.Adam):
        return False
    jobs: list[list] = [[] for _ in range(parts)]
    steps = []
    for group in optimizer.param_groups:
        if not group.get("fused") or group["amsgrad"] or group["maximize"] or group.get("capturable") \
                or group.get("differentiable") or torch.is_tensor(group["lr"]):
            return False
        lists = [([], [], [], [], []) for _ in range(parts)]  # params, grads, exp_avgs, exp_avg_sqs, steps
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state.get(p)
            if not state or p.grad.is_sparse or p.device.type != "cpu":
                return False
            steps.append(state["step"])
            tensors = (p, p.grad, state["exp_avg"], state["exp_avg_sq"])
            if p.dim() and p.shape[0] >= parts and p.numel() >= 1 << 16:
                for k, piece in enumerate(zip(*(t.tensor_split(parts) for t in tensors))):  # row views
                    for dest, t in zip(lists[k], (*piece, state["step"])):
                        dest.append(t)
            else:
                for dest, t in zip(lists[0], (*tensors, state["step"])):
                    dest.append(t)
        for k in range(parts):
            jobs[k].append((group, lists[k]))
    decoupled = isinstance(optimizer, torch.optim.AdamW) or optimizer.defaults.get("decoupled_weight_decay", False)
    update = torch._fused_adamw_ if decoupled else torch._fused_adam_

    def run(job) -> None:
        for group, (params, grads, exp_avgs, exp_avg_sqs, state_steps) in job:
            if params:
                beta1, beta2 = group["betas"]
                update(params, grads, exp_avgs, exp_avg_sqs, [], state_steps, amsgrad=False, lr=group["lr"],
                       beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                       maximize=False, grad_scale=None, found_inf=None)

    torch._foreach_add_(steps, 1)  # once per parameter, as Adam.step does
    list(pool.map(run, jobs))
    optimizer._opt_called = True  # what the step wrapper of an LR scheduler records
    return True


def _sum_gradients(param: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """The pieces' gradients summed in order. Sparse embedding gradients (each piece's rows) are
    added straight into one dense zero tensor: measured 2.8 -> ~1 ms a step for the seed model's
    20,000 x 128 embedding, against adding the sparse tensors and making the sum dense."""
    if not grads[0].is_sparse:
        return functools.reduce(torch.add, grads)
    dense = torch.zeros_like(param)
    for g in grads:
        dense.index_add_(0, g._indices()[0], g._values())
    return dense


def predict_logits(model: nn.Module, sequences: Sequence[np.ndarray], batch_size: int = 512,
                   precision: str = "auto", workers: int | None = None) -> np.ndarray:
    """Logits (N, C) in input order. Batches are length-sorted, so padding is minimal and masked.
    On a CPU the batches run side by side, ``workers`` of them (default: one per torch thread),
    each on one core (see ``_one_thread_per_worker``)."""
    from .models import members, num_outputs

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

    def run(idx: np.ndarray) -> np.ndarray:  # inference mode and autocast are per thread: set here
        with torch.inference_mode(), autocast(device, dtype):
            ids, lens = collate([sequences[i] for i in idx])
            # .to and .cpu return the tensor itself when it is already there: no copy on CPU
            return model(ids.to(device), lens.to(device)).float().cpu().numpy()

    workers = min(workers or torch.get_num_threads(), len(batches)) if device.type == "cpu" else 1
    try:
        with _one_thread_per_worker(workers) as pool:
            results = pool.map(run, batches) if pool is not None else map(run, batches)
            for idx, logits in zip(batches, progress(results, len(batches), "predicting", unit=" batches",
                                                     texts=len(sequences))):
                out[idx] = logits
    finally:
        model.train(was_training)
    return out


def evaluate_loss(model: nn.Module, sequences, targets: np.ndarray, batch_size: int = 512,
                  precision: str = "auto", workers: int | None = None) -> tuple[float, float, np.ndarray]:
    logits = predict_logits(model, sequences, batch_size, precision, workers)
    t = torch.from_numpy(targets)
    lg = torch.from_numpy(logits)
    loss = float(loss_fn(lg, t)) if len(targets) else float("nan")
    acc = float((predicted_class(lg) == t).float().mean()) if len(targets) else float("nan")
    return loss, acc, logits


def _validate(model: nn.Module, val_x, val_y: np.ndarray, ctx: distributed.Context,
              precision: str = "auto", workers: int | None = None) -> tuple[float, float]:
    """Validation loss and accuracy; with several processes each scores every W-th text and the
    sums are all-reduced, so all processes get the same figures (and take the same decisions)."""
    if not ctx.is_distributed:
        loss, acc, _ = evaluate_loss(model, val_x, val_y, precision=precision, workers=workers)
        return loss, acc
    idx = np.arange(ctx.rank, len(val_x), ctx.world_size)
    loss_sum = correct = 0.0
    if len(idx):
        logits = torch.from_numpy(predict_logits(model, [val_x[i] for i in idx], precision=precision))
        t = torch.from_numpy(val_y[idx])
        loss_sum = float(loss_fn(logits, t, reduction="none").sum())
        correct = float((predicted_class(logits) == t).sum())
    loss_sum, correct, n = distributed.all_reduce([loss_sum, correct, len(idx)])
    return loss_sum / n, correct / n


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



# ------------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "textrnn-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FILE = "state.json"
_TENSORS_FILE = re.compile(r"tensors-\d{6,}\.safetensors")
# Settings that may differ on resume without changing a single number of the result.
_RESUME_FREE = ("num_threads", "checkpoint_every", "device")


def data_fingerprint(train_x: Sequence[np.ndarray], train_y: np.ndarray, val_x=None, val_y=None) -> str:
    """A digest of the encoded training and validation data: resuming on other data is refused."""
    h = hashlib.blake2b(digest_size=16)
    for seqs, ys in ((train_x, train_y), (val_x or [], val_y if val_y is not None else [])):
        h.update(lengths_of(seqs).tobytes())
        if len(seqs):
            h.update(np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]).tobytes())
        h.update(np.asarray(ys, dtype=np.int64).tobytes())
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class Checkpointer:
    """Writes and reads one run's checkpoint folder (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.saved: dict | None = None  # what the last good checkpoint holds (epoch, batch, step)

    # --------------------------------------------------------------------------- writing
    def save(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Commit one checkpoint atomically; on failure the previous one stays as it was."""
        from safetensors.torch import save_file

        tmp_files: list[Path] = []
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            seq = (self.saved or {}).get("seq", 0) + 1
            name = f"tensors-{seq:06d}.safetensors"
            fd, tmp = tempfile.mkstemp(prefix=".tensors-", suffix=".tmp", dir=self.dir)
            os.close(fd)
            tmp_files.append(Path(tmp))
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata={"format": CHECKPOINT_FORMAT})
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / name)
            state = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "seq": seq, "tensors": name, **state}
            fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.dir)
            tmp_files.append(Path(tmp))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / STATE_FILE)  # the commit
            _fsync_dir(self.dir)
        except OSError as e:
            for t in tmp_files:
                t.unlink(missing_ok=True)
            previous = (f"the previous checkpoint (epoch {self.saved['epoch']}, step {self.saved['step']}) is intact"
                        if self.saved else "no checkpoint was written")
            raise CheckpointError(f"Could not write a checkpoint to {str(self.dir)!r} ({e.strerror or e}); {previous}.") from None
        self.saved = {"seq": seq, "epoch": state["epoch"], "batch": state["batch"], "step": state["step"]}
        for old in self.dir.iterdir():  # older tensors files and temp files left by a killed save
            if old.name != name and (_TENSORS_FILE.fullmatch(old.name) or old.name.startswith((".tensors-", ".state-"))):
                old.unlink(missing_ok=True)

    def describe(self) -> str:
        if not self.saved:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (epoch {self.saved['epoch']}, step {self.saved['step']}) is kept in {str(self.dir)!r}"

    # --------------------------------------------------------------------------- reading
    def load(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(state, tensors) of the committed checkpoint. Refuses anything not written by us."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.dir / STATE_FILE
        if not path.is_file():
            raise CheckpointError(f"No checkpoint to resume: {str(path)!r} does not exist.")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise CheckpointError(f"{str(path)!r} is damaged or not a textrnn checkpoint (not JSON: {e}).") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"{str(path)!r} is not a textrnn checkpoint. Received: format={got!r}")
        version = state.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version > CHECKPOINT_VERSION:
            raise CheckpointError(f"{str(path)!r} was written by a newer textrnn (format_version={version!r}; "
                                  f"this one reads up to {CHECKPOINT_VERSION}).")
        name = state.get("tensors")
        # A name, never a path: a checkpoint cannot make us read outside its folder.
        if not isinstance(name, str) or not _TENSORS_FILE.fullmatch(name):
            raise CheckpointError(f"{str(path)!r} names an invalid tensors file. Received: tensors={name!r}")
        if (self.dir / name).resolve().parent != self.dir.resolve():
            raise CheckpointError(f"{str(self.dir / name)!r} is a link to a file outside the checkpoint folder; refusing to read it.")
        try:
            tensors = load_file(str(self.dir / name))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{str(self.dir / name)!r} is missing, damaged or not a safetensors file ({e}).") from None
        self.saved = {k: state.get(k) for k in ("seq", "epoch", "batch", "step")}
        return state, tensors


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """The optimizer's state dict split into JSON (settings, plain values) and tensors."""
    sd = optimizer.state_dict()
    tensors, values = {}, {}
    for idx, per_param in sd["state"].items():
        for key, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = v
            else:
                values.setdefault(str(idx), {})[key] = v
    return {"param_groups": sd["param_groups"], "values": values}, tensors


def _optimizer_from_files(saved: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, values in saved["values"].items():
        state.setdefault(int(idx), {}).update(values)
    # JSON turned tuples (Adam's betas) into lists
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class _DeferredInterrupt:
    """While checkpointing is on, the first Ctrl-C only asks the loop to stop at the next step
    boundary (where a consistent checkpoint can be written); a second one stops at once."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self.previous = None

    def _handler(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)
        log.warning("Ctrl-C: stopping after this step to write a checkpoint (press Ctrl-C again to stop at once)")

    def __enter__(self) -> "_DeferredInterrupt":
        if self.enabled:
            self.previous = signal.getsignal(signal.SIGINT)
            if self.previous is None:  # installed from C; restore the Python default
                self.previous = signal.default_int_handler
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled and not self.requested:
            signal.signal(signal.SIGINT, self.previous)


def _torch_rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch RNG states: the CPU's, and the GPU's when it trains on one."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _finite_parameters(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def fit(model: nn.Module, train_x: Sequence[np.ndarray], train_y: np.ndarray, config: TrainConfig,
        val_x: Sequence[np.ndarray] | None = None, val_y: np.ndarray | None = None,
        progress: bool = True, on_epoch_end: Callable[[dict], None] | None = None,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = False) -> list[dict]:
    """Train ``model`` in place; returns the history (one dict per epoch). With validation data the
    weights of the best epoch (by ``config.monitor``) are restored at the end.

    With ``checkpoint_dir`` a checkpoint is written at every epoch end and every
    ``config.checkpoint_every`` steps; ``resume=True`` continues from it, and the result is the
    same, bit for bit on CPU, as a run that was never interrupted. Ctrl-C then stops at the next
    step with a checkpoint written (:class:`TrainingInterrupted`).

    The model moves to ``config.device``. In a process group (torchrun, see distributed.py) each
    process trains on its share of every epoch's batches under DistributedDataParallel; only
    rank 0 writes checkpoints; every process returns the same history and weights."""
    if resume and checkpoint_dir is None:
        raise CheckpointError("resume=True needs the checkpoint_dir of the run to continue.")
    ctx = distributed.current()
    device = resolve_device(config.device, ctx.local_rank, ctx.world_size)
    progress = progress and ctx.is_main
    seed_everything(config.seed)
    random.seed(config.seed)
    set_threads(config.num_threads, ctx.local_world_size if ctx.is_distributed else 1)
    if ctx.rank:  # its own dropout masks on each process; the batch order (numpy, below) is shared
        torch.manual_seed(int(np.random.SeedSequence([config.seed, ctx.rank]).generate_state(1)[0]))
    rng = np.random.default_rng(config.seed)
    train_y = np.asarray(train_y, dtype=np.int64)
    from .models import num_outputs

    outputs = num_outputs(model)
    num_classes = 2 if outputs == 1 else outputs
    model.to(device)  # in place; nothing moves when it is already there
    weights = balanced_weights(train_y, num_classes).to(device) if config.class_weight == "balanced" else None
    lengths = lengths_of(train_x)
    # every process takes ceil(batches / W) steps an epoch (see distributed.shard)
    steps_per_epoch = math.ceil(math.ceil(len(train_x) / config.batch_size) / ctx.world_size)
    optimizer = make_optimizer(model, config)
    dtype = compute_dtype(device, config.precision)
    workers = piece_workers(device, dtype, ctx)
    embeddings = [mod for mod in model.modules() if isinstance(mod, nn.Embedding)]  # see the pieces side by side
    sparse_before = [mod.sparse for mod in embeddings]
    schedule = make_schedule(optimizer, config, steps_per_epoch * config.epochs)
    frozen = [p for n, p in model.named_parameters() if is_encoder(n) and p.requires_grad] if config.freeze_encoder_epochs else []
    has_val = val_x is not None and len(val_x) > 0
    better = (lambda a, b: a > b) if config.monitor == "val_accuracy" else (lambda a, b: a < b)
    targets_all = torch.from_numpy(train_y)
    ckpt = Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = data_fingerprint(train_x, train_y, val_x, val_y) if ckpt else None
    settings = dataclasses.asdict(config)

    # Everything the loop carries from step to step; a checkpoint is this plus the tensors.
    loop = {"epoch": 1, "batch": 0, "step": 0, "finished": False, "epoch_rng": None,
            "totals": {"loss": 0.0, "correct": 0, "seen": 0, "tokens": 0, "seconds": 0.0}, "elapsed": 0.0,
            "best": None, "best_epoch": 0, "waited": 0, "history": []}
    best_state = None
    if resume:
        loop, best_state = _restore(ckpt, model, optimizer, schedule, rng, settings, fingerprint, ctx, device)
        log.info("resuming from epoch %d, batch %d (step %d)%s", loop["epoch"], loop["batch"], loop["step"],
                 " - training had finished" if loop["finished"] else "")
    net = model
    if ctx.is_distributed:  # never for one process: no wrapper, no hooks, the single-process path as it was
        from torch.nn.parallel import DistributedDataParallel

        # It starts by copying rank 0's weights to every process, so they all begin alike.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      gradient_as_bucket_view=True)

    def snapshot(epoch_done: bool) -> None:
        if not _finite_parameters(model):  # never save a diverged state over a good one
            raise TextRNNError(f"Training diverged: the weights are no longer finite at epoch {loop['epoch']}, step "
                               f"{loop['step']}; {ckpt.describe()}. Try a lower learning rate (received: "
                               f"learning_rate={config.learning_rate}).")
        rng_states = distributed.gather_objects(_torch_rng_states(device))  # every process's dropout RNG
        totals = loop["totals"]
        if ctx.is_distributed:  # the epoch's running sums over all processes
            t = loop["totals"]
            sums = distributed.all_reduce([t["loss"], t["correct"], t["seen"], t["tokens"]])
            totals = {**t, "loss": sums[0], "correct": int(sums[1]), "seen": int(sums[2]), "tokens": int(sums[3])}
        error = None
        if ctx.is_main:
            opt_json, opt_tensors = _optimizer_to_files(optimizer)
            tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors}
            for rank, states in enumerate(rng_states):
                tensors.update({(f"rng.{k}" if rank == 0 else f"rng.{k}.rank{rank}"): v for k, v in states.items()})
            if best_state is not None:
                tensors.update({f"best.{k}": v for k, v in best_state.items()})
            np_legacy = np.random.get_state()
            state = {**loop, "totals": totals, "epoch_done": epoch_done, "steps_per_epoch": steps_per_epoch,
                     "world_size": ctx.world_size, "config": settings, "data": fingerprint, "optimizer": opt_json,
                     "scheduler": schedule.state_dict() if schedule is not None else None,
                     "rng": {"numpy": rng.bit_generator.state, "python": random.getstate(),
                             "numpy_legacy": [np_legacy[0], np_legacy[1].tolist(), *np_legacy[2:]]},
                     "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            try:
                ckpt.save(state, tensors)
            except CheckpointError as e:
                if not ctx.is_distributed:
                    raise
                error = str(e)
        if ctx.is_distributed:  # a failed save stops every process, not only rank 0
            error = distributed.broadcast_object(error)
            if error:
                raise CheckpointError(error)

    def forward_loss(ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor,
                     module: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(device, dtype):
            logits = (module or net)(ids, lens).float()  # (b, C), or (M, b, C) from an ensemble
        if logits.dim() == 3:  # each member on its own loss; the ensemble's prediction for the accuracy
            return torch.stack([loss_fn(member, y, weights) for member in logits]).mean(), logits.mean(0)
        return loss_fn(logits, y, weights), logits

    def piece_loss(ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor, rows: slice, batch_rows: int):
        """This piece's share of the batch's mean loss, and its logits (b, C)."""
        ids, lens, y = ids[rows], lens[rows], y[rows]
        if not config.adversarial:
            part, logits = forward_loss(ids, lens, y)
        else:
            part, logits = adversarial_loss(ids, lens, y)
        return part * (len(logits) / batch_rows), logits

    def adversarial_loss(ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor):
        """The loss on the texts plus the loss on their embeddings moved by ``config.adversarial``
        (L2, per text) along the gradient of the first: Miyato et al.'s adversarial training."""
        embedded: list[torch.Tensor] = []

        def read(x: torch.Tensor) -> torch.Tensor:
            if not x.requires_grad:  # a frozen embedding: its output still gets a gradient
                x = x.detach().requires_grad_()
            embedded.append(x)
            return x

        with models.embedding_hook(read):  # under DDP through the bare model: one DDP forward a step
            clean, logits = forward_loss(ids, lens, y, model)
        pushes = iter(adversarial_pushes(torch.autograd.grad(clean, embedded, retain_graph=True), lens,
                                         config.adversarial))
        with models.embedding_hook(lambda x: x + next(pushes).to(x.dtype)):
            pushed, _ = forward_loss(ids, lens, y)
        return clean + pushed, logits

    start = time.perf_counter() - loop["elapsed"]
    history = loop["history"]
    with _DeferredInterrupt(enabled=ckpt is not None) as interrupt, _one_thread_per_worker(workers) as pool:
        epoch = loop["epoch"]
        while not loop["finished"] and epoch <= config.epochs:
            loop["epoch"] = epoch
            model.train()
            for p in frozen:  # gradual unfreezing: the head learns first; in one process the encoder's
                p.requires_grad_(epoch > config.freeze_encoder_epochs or ctx.is_distributed)  # backward is skipped
            resumed_at = None
            if loop["batch"] == 0:
                loop["epoch_rng"] = rng.bit_generator.state  # so a resumed run redraws this epoch's order
                loop["totals"] = {"loss": 0.0, "correct": 0, "seen": 0, "tokens": 0, "seconds": 0.0}
            else:  # resuming mid-epoch: redraw the epoch's batch order from its start
                resumed_at = rng.bit_generator.state
                try:
                    rng.bit_generator.state = loop["epoch_rng"]
                except (TypeError, ValueError, KeyError) as e:
                    raise CheckpointError(f"{str(ckpt.dir)!r} is damaged (epoch_rng: {e}).") from None
            # all processes draw the same order; each takes its share (all of it when alone)
            batches = distributed.shard(training_batches(lengths, config.batch_size, rng, group=ctx.world_size),
                                        ctx.rank, ctx.world_size)
            if resumed_at is not None and (rng.bit_generator.state != resumed_at or len(batches) <= loop["batch"]):
                raise CheckpointError(f"{str(ckpt.dir)!r}: the batch order of epoch {epoch} cannot be redrawn as it was; "
                                      f"the checkpoint is damaged or from other data.")
            tot = loop["totals"]
            t0 = time.perf_counter() - tot["seconds"]
            bar = _Progress(steps_per_epoch, f"epoch {epoch}/{config.epochs}", progress)
            bar.update(loop["batch"])
            for b in range(loop["batch"], len(batches)):
                idx = batches[b]
                ids, lens = collate([train_x[i] for i in idx], equal_length=config.equal_length_batches)
                y = targets_all[idx].to(device)
                ids, lens = ids.to(device), lens.to(device)
                optimizer.zero_grad(set_to_none=True)
                pieces = micro_batches(len(idx), ids.size(1), config.micro_batch_tokens if device.type == "cpu" else None,
                                       workers)
                if pool is None:
                    loss, parts = 0.0, []
                    for k, rows in enumerate(pieces):  # one piece, or several whose gradients add up to the batch's
                        last = k == len(pieces) - 1
                        with net.no_sync() if ctx.is_distributed and not last else contextlib.nullcontext():  # DDP: one all-reduce
                            part, piece_logits = piece_loss(ids, lens, y, rows, len(idx))
                            part.backward()  # the weights change only at optimizer.step(), after the checks below
                        loss, parts = loss + part.detach(), parts + [piece_logits.detach()]
                else:  # side by side, one core each; each piece's own dropout generator, seeded in order
                    params = [p for p in model.parameters() if p.requires_grad]
                    seeds = torch.randint(0, 2**62, (len(pieces),)).tolist()

                    def run(rows: slice, seed: int):
                        with models.dropout_generator(torch.Generator().manual_seed(seed)):
                            part, piece_logits = piece_loss(ids, lens, y, rows, len(idx))
                        return part.detach(), piece_logits.detach(), torch.autograd.grad(part, params, allow_unused=True)

                    # each piece's embedding gradient sparse (its rows only), made dense once, after the
                    # sum: not one dense 20,000-row zero-fill per piece (measured: 1.18x tokens/s, same loss)
                    for mod in embeddings:
                        mod.sparse = True
                    try:
                        results = list(pool.map(run, pieces, seeds))
                    finally:
                        for mod, was in zip(embeddings, sparse_before):
                            mod.sparse = was
                    for i, p in enumerate(params):  # summed in piece order: the same result every time
                        grads = [r[2][i] for r in results if r[2][i] is not None]
                        p.grad = _sum_gradients(p, grads) if grads else None
                    loss, parts = sum(r[0] for r in results), [r[1] for r in results]
                logits = torch.cat(parts)  # (B, C)
                diverged, stopping = not torch.isfinite(loss), interrupt.requested
                if ctx.is_distributed:  # every process stops at the same step, or none does
                    diverged, stopping = map(bool, distributed.all_reduce([diverged, stopping], op="max"))
                if diverged:
                    kept = f"; {ckpt.describe()}" if ckpt else ""
                    raise TextRNNError(f"Training diverged: the loss became {loss.item()} at epoch {epoch}, step "
                                       f"{loop['step'] + 1}{kept}. Try a lower learning rate (received: "
                                       f"learning_rate={config.learning_rate}).")
                if epoch <= config.freeze_encoder_epochs:  # under DDP, which needs every gradient, dropped here
                    for p in frozen:
                        p.grad = None  # the optimizer skips a parameter without a gradient
                if config.clip_grad_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                if not _step_in_parts(optimizer, pool, workers):
                    optimizer.step()
                if schedule is not None:
                    schedule.step()
                n = len(idx)
                tot["loss"] += loss.item() * n
                tot["correct"] += int((predicted_class(logits.detach()) == y).sum())
                tot["seen"] += n
                tot["tokens"] += int(lens.sum())
                loop["batch"], loop["step"] = b + 1, loop["step"] + 1
                bar.update(1, loss=tot["loss"] / tot["seen"], accuracy=tot["correct"] / tot["seen"])
                if ckpt is not None and b + 1 < len(batches) and (
                        stopping or (config.checkpoint_every and loop["step"] % config.checkpoint_every == 0)):
                    tot["seconds"] = time.perf_counter() - t0
                    loop["elapsed"] = time.perf_counter() - start
                    snapshot(epoch_done=False)
                    if stopping:
                        bar.close()
                        raise TrainingInterrupted(f"Training stopped at epoch {epoch}, batch {b + 1} of {len(batches)}; "
                                                  f"checkpoint saved in {str(ckpt.dir)!r}.", ckpt.dir)
            bar.close()
            seconds = time.perf_counter() - t0
            loss_sum, correct, seen, tokens = tot["loss"], tot["correct"], tot["seen"], tot["tokens"]
            if ctx.is_distributed:  # the epoch's figures over all processes
                loss_sum, correct, seen, tokens = distributed.all_reduce([loss_sum, correct, seen, tokens])
            seen = max(seen, 1)
            row = {"epoch": epoch, "loss": loss_sum / seen, "accuracy": correct / seen,
                   "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9),
                   "learning_rate": optimizer.param_groups[0]["lr"]}
            if has_val:
                row["val_loss"], row["val_accuracy"] = _validate(
                    model, val_x, np.asarray(val_y, dtype=np.int64), ctx, config.precision, workers)
            row["elapsed"] = time.perf_counter() - start
            history.append(row)
            if progress:
                log.info("epoch %d/%d  %s", epoch, config.epochs,
                         "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
                         + f"  ({seconds:.1f}s, {row['tokens_per_s']:,.0f} tokens/s)")
            if on_epoch_end is not None:
                on_epoch_end(row)
            stop = False
            if has_val:
                score = row[config.monitor]
                if loop["best"] is None or better(score, loop["best"]):
                    loop["best"], loop["best_epoch"], loop["waited"] = score, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    loop["waited"] += 1
                    if config.early_stopping_patience and loop["waited"] >= config.early_stopping_patience:
                        log.info("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                                 config.monitor, loop["waited"], loop["best"], loop["best_epoch"])
                        stop = True
            loop["finished"] = stop or epoch == config.epochs
            loop["batch"] = 0
            loop["elapsed"] = time.perf_counter() - start
            if ckpt is not None:
                snapshot(epoch_done=True)
                if ctx.is_distributed:  # a Ctrl-C during validation: agree on it
                    stopping = bool(distributed.all_reduce([interrupt.requested], op="max")[0])
                else:
                    stopping = interrupt.requested
                if stopping and not loop["finished"]:
                    raise TrainingInterrupted(f"Training stopped after epoch {epoch} of {config.epochs}; "
                                              f"checkpoint saved in {str(ckpt.dir)!r}.", ckpt.dir)
            epoch += 1
    for p in frozen:
        p.requires_grad_(True)
    if ctx.is_distributed:
        # DistributedDataParallel's hooks and its hold on the process group go now, not at exit
        # (a wrapper left to the interpreter's teardown can abort the process as it exits)
        del net
        gc.collect()
    if best_state is not None:
        model.load_state_dict(best_state)
        for row in history:
            row["best"] = row["epoch"] == loop["best_epoch"]
    return history


def _restore(ckpt: Checkpointer, model: nn.Module, optimizer, schedule, rng: np.random.Generator,
             settings: dict, fingerprint: str, ctx: distributed.Context = distributed.Context(),
             device: torch.device = torch.device("cpu")) -> tuple[dict, dict | None]:
    """Put model, optimizer, schedule and every RNG back where the checkpoint left them. With
    several processes each reads the checkpoint (the run directory is shared) and takes its own RNG."""
    state, tensors = ckpt.load()
    where = str(ckpt.dir)
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where!r}: the checkpoint holds no training settings; it is damaged.")
    written_by = state.get("world_size", 1)
    if written_by != ctx.world_size:  # the batch shares and the schedule's length depend on it
        raise CheckpointError(f"{where!r} was written by a run of {written_by} process(es); resume it with as many "
                              f"(torchrun --nproc-per-node/--nnodes), not {ctx.world_size}.")
    for key, value in settings.items():
        if key not in _RESUME_FREE and saved.get(key) != value:
            raise CheckpointError(f"{where!r} was written with train.{key}={saved.get(key)!r}, but the run to resume has "
                                  f"train.{key}={value!r}; resume with the run's own config.")
    if state.get("data") != fingerprint:
        raise CheckpointError(f"{where!r} was written for other training data (the texts, labels, vocabulary or "
                              f"length settings differ); resume needs the same data as the interrupted run.")
    try:
        model_state = _prefixed(tensors, "model.")
        expected = model.state_dict()
        bad = [k for k in expected if k not in model_state or model_state[k].shape != expected[k].shape]
        if bad or len(model_state) != len(expected):
            k = bad[0] if bad else next(k for k in model_state if k not in expected)
            raise CheckpointError(f"{where!r}: the checkpoint's weights do not fit the model ({k}).")
        model.load_state_dict(model_state)
        best = _prefixed(tensors, "best.") or None
        if best is not None and set(best) != set(expected):
            raise CheckpointError(f"{where!r}: the checkpoint's best weights do not fit the model.")
        opt = state["optimizer"]
        fresh_groups = optimizer.state_dict()["param_groups"]
        if len(opt["param_groups"]) != len(fresh_groups) or any(
                set(g) != set(f) for g, f in zip(opt["param_groups"], fresh_groups)):
            raise CheckpointError(f"{where!r}: the optimizer state does not match train.optimizer (or another "
                                  f"torch version wrote it).")
        optimizer.load_state_dict(_optimizer_from_files(opt, tensors))
        if schedule is not None:
            sched = state["scheduler"]
            if not isinstance(sched, dict) or set(sched) != set(schedule.state_dict()):
                raise CheckpointError(f"{where!r}: the scheduler state does not match train.schedule (or another "
                                      f"torch version wrote it).")
            schedule.load_state_dict(sched)
        suffix = f".rank{ctx.rank}" if ctx.rank else ""
        torch.set_rng_state(tensors["rng.torch" + suffix])
        if device.type == "cuda" and "rng.cuda" + suffix in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda" + suffix], device)
        rng.bit_generator.state = state["rng"]["numpy"]
        version, internal, gauss = state["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["rng"]["numpy_legacy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        loop = {k: state[k] for k in ("epoch", "batch", "step", "finished", "epoch_rng", "totals", "elapsed",
                                      "best", "best_epoch", "waited", "history")}
        if ctx.rank:  # the saved running sums are over all processes: rank 0 carries them on
            loop["totals"] = {**loop["totals"], "loss": 0.0, "correct": 0, "seen": 0, "tokens": 0}
        if state.get("epoch_done") and not loop["finished"]:  # saved at an epoch's end: go on with the next
            loop["epoch"] += 1
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{where!r} is damaged or not a textrnn checkpoint ({type(e).__name__}: {e}).") from None
    if loop["batch"] and state.get("steps_per_epoch") is not None and loop["batch"] >= state["steps_per_epoch"]:
        raise CheckpointError(f"{where!r} is damaged: batch {loop['batch']} of an epoch of {state['steps_per_epoch']}.")
    return loop, best
