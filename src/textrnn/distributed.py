"""Several processes through PyTorch's own engine: ``torchrun ... -m textrnn train ...``.

torchrun starts one process per GPU (or per CPU slot) and tells each who it is through the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``...).
:func:`init` reads it and joins the process group: gloo on CPU, NCCL on CUDA, one device per
``LOCAL_RANK``. Without that environment nothing here does anything: one process, no wrapper.

How a run is split (see trainer.py):

- every process reads the data and draws the same seeded batch order; process ``r`` of ``W`` trains
  on ``batches[r::W]``, with the list padded to a multiple of ``W`` (by repeating its first
  batches, as ``DistributedSampler`` repeats samples) so each process takes the same number of
  steps and no collective waits for a process that has finished its epoch;
- DistributedDataParallel averages the gradients, so one step sees ``W x batch_size`` texts: the
  global batch. The learning rate is the config's, unchanged;
- the vocabulary is built on rank 0 and broadcast; validation is sharded and its sums all-reduced;
- rank 0 alone logs, writes checkpoints, the artifact, metrics and plots; the others wait.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from .errors import ConfigError
from .runtime import resolve_device

log = logging.getLogger("textrnn")

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Context:
    """Who this process is among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"The torchrun environment variable {name} must be an integer. Received: {name}={value!r}") from None


def from_env() -> Context:
    """The context torchrun describes in the environment; one process when it describes none."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK must be in [0, WORLD_SIZE). Received: RANK={rank}, WORLD_SIZE={world}")
    return Context(rank, world, _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", 1))


def current() -> Context:
    """This process's place in the process group joined by :func:`init` (or by the caller's own
    ``init_process_group``); a single process when there is none."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return Context()
    env = from_env()
    return Context(torch.distributed.get_rank(), torch.distributed.get_world_size(), env.local_rank, env.local_world_size)


def init(device: str = "auto") -> Context:
    """Join the process group torchrun describes (a no-op for a single process or when already
    joined). ``device`` is ``runtime.device``: NCCL when it resolves to CUDA, gloo otherwise."""
    ctx = from_env()
    if not ctx.is_distributed or torch.distributed.is_initialized():
        return current()
    if not torch.distributed.is_available():  # pragma: no cover - builds without distributed
        raise ConfigError("This PyTorch build has no torch.distributed; run a single process instead of torchrun.")
    dev = resolve_device(device, ctx.local_rank, ctx.world_size)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    # Rank 0 may test alone at the end while the others wait at a barrier: a generous timeout.
    try:
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    except (ValueError, RuntimeError) as e:  # no MASTER_ADDR, a port taken, a peer unreachable
        where = ", ".join(f"{k}={os.environ.get(k)}" for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"Could not join the process group the environment describes ({where}): {first}. "
            f"Start several processes with torchrun, e.g. torchrun --nproc-per-node 2 -m textrnn train ..."
        ) from None
    log.info("distributed: rank %d of %d (%s, %s)", ctx.rank, ctx.world_size, backend, dev)
    return current()


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard(batches: Sequence[Any], rank: int, world_size: int) -> list:
    """``batches[rank::world_size]`` after padding the list to a multiple of ``world_size`` with its
    first batches: every process gets ``ceil(len / world_size)`` batches, none is dropped."""
    if world_size == 1:
        return list(batches)
    if not batches:
        return []
    short = -len(batches) % world_size
    padded = list(batches) + [batches[i % len(batches)] for i in range(short)]
    return padded[rank::world_size]


def barrier() -> None:
    if current().is_distributed:
        torch.distributed.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every process (pickled in transit between our own processes;
    nothing is ever unpickled from a file)."""
    if not current().is_distributed:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list:
    """Every process's ``obj``, in rank order, on every process."""
    ctx = current()
    if not ctx.is_distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce(values: Sequence[float], op: str = "sum") -> list[float]:
    """Element-wise sum (or max) of ``values`` over all processes, in float64."""
    if not current().is_distributed:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        t = t.cuda()
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM)
    return t.cpu().tolist()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (filling caches: the parsed IMDB, the tokens, word2vec), the
    others after it, so they read what it wrote instead of all writing the same files at once."""
    ctx = current()
    if ctx.is_distributed and not ctx.is_main:
        torch.distributed.barrier()
    try:
        yield
    finally:
        if ctx.is_distributed and ctx.is_main:
            torch.distributed.barrier()
