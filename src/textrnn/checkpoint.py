"""A run's checkpoint folder (``RUN/checkpoint``), what it holds and how a run resumes from it::

    state.json                 format + version, epoch and step, counters, history, best-so-far,
                               RNG states (numpy, Python), optimizer settings, scheduler state,
                               and the name of the tensors file below. Written last: the commit.
    tensors-NNNNNN.safetensors model weights, best weights, optimizer tensors, torch RNG state
    config.toml                (written by the run, runs.py) the run's config, read by --resume

Each save writes a new tensors file, then replaces ``state.json`` (temp file + ``os.replace``), then
deletes the older tensors file: a kill at any moment leaves one complete, consistent checkpoint.
Nothing is pickled; loading reads JSON and safetensors only, with the checks of io.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from . import distributed
from .batching import lengths_of
from .errors import CheckpointError
from .io import check_format, check_inside, fsync_dir, read_tensors, save_tensors

log = logging.getLogger("textrnn")

CHECKPOINT_FORMAT = "textrnn-checkpoint"

CHECKPOINT_VERSION = 1

STATE_FILE = "state.json"

_TENSORS_FILE = re.compile(r"tensors-\d{6,}\.safetensors")

# The [runtime] settings a resumed run must share with the interrupted one (they change the numbers);
# the others (device, threads, checkpoint interval) may differ.
RUNTIME_KEYS = ("precision", "micro_batch_tokens")


def data_fingerprint(train_x: Sequence[np.ndarray], train_y: np.ndarray, val_x=None, val_y=None, unlabelled_x=None) -> str:
    """A digest of the encoded training, validation and unlabelled data: resuming on other data is
    refused. Without unlabelled texts the digest is what it was before they existed."""
    h = hashlib.blake2b(digest_size=16)
    sets = [(train_x, train_y), (val_x or [], val_y if val_y is not None else [])]
    for seqs, ys in sets + ([(unlabelled_x, [])] if unlabelled_x is not None else []):
        h.update(lengths_of(seqs).tobytes())
        if len(seqs):
            h.update(np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]).tobytes())
        h.update(np.asarray(ys, dtype=np.int64).tobytes())
    return h.hexdigest()


class Checkpointer:
    """Writes and reads one run's checkpoint folder (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.saved: dict | None = None  # what the last good checkpoint holds (epoch, batch, step)

    # --------------------------------------------------------------------------- writing
    def save(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Commit one checkpoint atomically; on failure the previous one stays as it was."""
        tmp_files: list[Path] = []
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            seq = (self.saved or {}).get("seq", 0) + 1
            name = f"tensors-{seq:06d}.safetensors"
            fd, tmp = tempfile.mkstemp(prefix=".tensors-", suffix=".tmp", dir=self.dir)
            os.close(fd)
            tmp_files.append(Path(tmp))
            save_tensors(tensors, tmp, CHECKPOINT_FORMAT)
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
            fsync_dir(self.dir)
        except OSError as e:
            for t in tmp_files:
                t.unlink(missing_ok=True)
            previous = (
                f"the previous checkpoint (epoch {self.saved['epoch']}, step {self.saved['step']}) is intact"
                if self.saved
                else "no checkpoint was written"
            )
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
        """(state, tensors) of the committed checkpoint, with the checks of every saved folder
        (io.py). Refuses anything not written by us."""
        path = self.dir / STATE_FILE
        if not path.is_file():
            raise CheckpointError(f"No checkpoint to resume: {str(path)!r} does not exist.")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise CheckpointError(f"{str(path)!r} is damaged or not a textrnn checkpoint (not JSON: {e}).") from None
        check_format(state, str(path), CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "checkpoint", STATE_FILE, CheckpointError)
        name = state.get("tensors")
        # A name, never a path: a checkpoint cannot make us read outside its folder.
        if not isinstance(name, str) or not _TENSORS_FILE.fullmatch(name):
            raise CheckpointError(f"{str(path)!r} names an invalid tensors file. Received: tensors={name!r}")
        check_inside(self.dir, [name], "checkpoint", CheckpointError)
        tensors = read_tensors(self.dir / name, CheckpointError)
        self.saved = {k: state.get(k) for k in ("seq", "epoch", "batch", "step")}
        return state, tensors


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """The optimizer's state dict split into JSON (settings, plain values) and tensors."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for idx, per_param in sd["state"].items():
        for key, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = v
            else:
                values.setdefault(str(idx), {})[key] = v
    return {"param_groups": sd["param_groups"], "values": values}, tensors


def optimizer_from_files(saved: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, values in saved["values"].items():
        state.setdefault(int(idx), {}).update(values)
    # JSON turned tuples (Adam's betas) into lists
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()} for g in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def torch_rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch RNG states: the CPU's, and the GPU's when it trains on one."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


class DeferredInterrupt:
    """While checkpointing is on, the first Ctrl-C only asks the loop to stop at the next step
    boundary (where a consistent checkpoint can be written); a second one stops at once."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        # signal.getsignal's answer: a handler, SIG_DFL or SIG_IGN, or None (installed from C)
        self.previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handler(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)
        log.warning("Ctrl-C: stopping after this step to write a checkpoint (press Ctrl-C again to stop at once)")

    def __enter__(self) -> "DeferredInterrupt":
        if self.enabled:
            self.previous = signal.getsignal(signal.SIGINT)
            if self.previous is None:  # installed from C; restore the Python default
                self.previous = signal.default_int_handler
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled and not self.requested:
            signal.signal(signal.SIGINT, self.previous)


def _check_same_run(state: dict, where: str, settings: dict, ctx: distributed.Context) -> None:
    """Refuse to resume with other settings or another number of processes than the run had."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where!r}: the checkpoint holds no training settings; it is damaged.")
    written_by = state.get("world_size", 1)
    if written_by != ctx.world_size:  # the batch shares and the schedule's length depend on it
        raise CheckpointError(
            f"{where!r} was written by a run of {written_by} process(es); resume it with as many "
            f"(torchrun --nproc-per-node/--nnodes), not {ctx.world_size}."
        )
    for key, value in settings.items():
        if saved.get(key) != value:
            name = f"{'runtime' if key in RUNTIME_KEYS else 'train'}.{key}"
            raise CheckpointError(
                f"{where!r} was written with {name}={saved.get(key)!r}, but the run to resume has "
                f"{name}={value!r}; resume with the run's own config."
            )


def restore(
    ckpt: Checkpointer,
    model: nn.Module,
    optimizer,
    schedule,
    rng: np.random.Generator,
    settings: dict,
    fingerprint: str | None,
    ctx: distributed.Context = distributed.Context(),
    device: torch.device = torch.device("cpu"),
) -> tuple[dict, dict | None]:
    """Put model, optimizer, schedule and every RNG back where the checkpoint left them. With
    several processes each reads the checkpoint (the run directory is shared) and takes its own RNG."""
    state, tensors = ckpt.load()
    where = str(ckpt.dir)
    _check_same_run(state, where, settings, ctx)
    if state.get("data") != fingerprint:
        raise CheckpointError(
            f"{where!r} was written for other training data (the texts, labels, vocabulary or "
            f"length settings differ); resume needs the same data as the interrupted run."
        )
    try:
        model_state = prefixed(tensors, "model.")
        expected = model.state_dict()
        bad = [k for k in expected if k not in model_state or model_state[k].shape != expected[k].shape]
        if bad or len(model_state) != len(expected):
            k = bad[0] if bad else next(k for k in model_state if k not in expected)
            raise CheckpointError(f"{where!r}: the checkpoint's weights do not fit the model ({k}).")
        model.load_state_dict(model_state)
        best = prefixed(tensors, "best.") or None
        if best is not None and set(best) != set(expected):
            raise CheckpointError(f"{where!r}: the checkpoint's best weights do not fit the model.")
        opt = state["optimizer"]
        fresh_groups = optimizer.state_dict()["param_groups"]
        if len(opt["param_groups"]) != len(fresh_groups) or any(set(g) != set(f) for g, f in zip(opt["param_groups"], fresh_groups)):
            raise CheckpointError(f"{where!r}: the optimizer state does not match train.optimizer (or another torch version wrote it).")
        optimizer.load_state_dict(optimizer_from_files(opt, tensors))
        if schedule is not None:
            sched = state["scheduler"]
            if not isinstance(sched, dict) or set(sched) != set(schedule.state_dict()):
                raise CheckpointError(f"{where!r}: the scheduler state does not match train.schedule (or another torch version wrote it).")
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
        loop = {
            k: state[k]
            for k in ("epoch", "batch", "step", "finished", "epoch_rng", "totals", "elapsed", "best", "best_epoch", "waited", "history")
        }
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
