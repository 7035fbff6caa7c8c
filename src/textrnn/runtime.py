"""Where and how the arithmetic runs: the CPU and its features, the device, threads, precision
(autocast) and seeding. Training, prediction, explanation and serving all read these from here.

CPU features are read once from ``/proc/cpuinfo`` (x86 ``flags``; ARM ``Features``). The
``TEXTRNN_CPU=avx2`` switch (see ``_env.py``) makes the process behave as a CPU with AVX2 and no
AVX-512 or native bfloat16 would, whatever it runs on.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from ._env import CPU_PROFILE_ENV, CPU_PROFILES, cpu_profile
from .config import RuntimeConfig
from .errors import ConfigError

log = logging.getLogger("textrnn")
if os.environ.get(CPU_PROFILE_ENV, "").strip().lower() not in ("", *CPU_PROFILES):
    log.warning("Ignoring %s=%r: expected one of %s.", CPU_PROFILE_ENV, os.environ[CPU_PROFILE_ENV], ", ".join(map(repr, CPU_PROFILES)))

PRECISIONS = ("auto", "float32", "bfloat16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# the flags worth naming in a results file: they decide which kernels run
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve", "bf16")
_AVX512_PREFIXES = ("avx512", "amx")


@functools.lru_cache(maxsize=None)
def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags, as /proc/cpuinfo gives them (x86 ``flags``, ARM
    ``Features``)."""
    fields = _cpuinfo_fields()
    model = fields.get("model name") or platform.processor() or platform.machine()
    return model, frozenset((fields.get("flags") or fields.get("Features") or "").split())


def cpu_vendor() -> str:
    """The CPU's vendor as /proc/cpuinfo gives it (``GenuineIntel``, ``AuthenticAMD``; empty where unknown)."""
    return _cpuinfo_fields().get("vendor_id", "")


def cpu_class(flags: frozenset[str] | None = None) -> str:
    """The class of CPU that decides textrnn's kernels, for results files and the README's tables."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "x86-64 AVX-512 + AMX (native bfloat16)"
    if "avx512_bf16" in flags:
        return "x86-64 AVX-512 (native bfloat16)"
    if "avx512f" in flags:
        return "x86-64 AVX-512 (no bfloat16)"
    if "avx2" in flags:
        return "x86-64 AVX2 (no bfloat16)"
    return f"{platform.machine()} ({'NEON' if 'asimd' in flags else 'other'})"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as this process should see them: under ``TEXTRNN_CPU=avx2`` without
    AVX-512 and AMX."""
    flags = cpu_info()[1]
    if cpu_profile() == "avx2":
        flags = frozenset(f for f in flags if not f.startswith(_AVX512_PREFIXES))
    return flags


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86 avx512_bf16 or AMX); elsewhere False,
    where oneDNN's bfloat16 recurrent layer does not run at all (on AVX2) or is slower than float32."""
    return any(f in cpu_flags() for f in NATIVE_BF16_FLAGS)


def cpu_description() -> dict:
    """What a results file records about the CPU: model, the flags that choose kernels, the
    profile, and torch's own view of its vector unit."""
    model, flags = cpu_info()
    fields = _cpuinfo_fields()
    return {
        "model": model,
        "vendor": fields.get("vendor_id"),
        "family": fields.get("cpu family"),
        "model_number": fields.get("model"),
        "machine": platform.machine(),
        "cores": _cores(),
        "class": cpu_class(),
        "class_of_the_hardware": cpu_class(flags),
        "flags": sorted(f for f in NOTABLE_FLAGS if f in flags),
        "flags_in_use": sorted(f for f in NOTABLE_FLAGS if f in cpu_flags()),
        "profile": cpu_profile(),
        "native_bf16": cpu_has_native_bf16(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(num_threads: int | None, processes_here: int = 1) -> None:
    """One thread per available core unless told otherwise; with several processes on this
    machine (torchrun), the cores shared out among them."""
    torch.set_num_threads(num_threads or max(1, _cores() // max(processes_here, 1)))


def resolve_device(spec: str = "auto", local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``runtime.device`` as a ``torch.device``: ``auto`` is CUDA when torch sees a GPU, else the CPU.
    Under torchrun (``world_size > 1``) ``auto`` and ``cuda`` mean the GPU numbered ``local_rank``."""

    if not isinstance(spec, str) or spec not in ("auto", "cpu"):
        RuntimeConfig(device=spec)  # the same check, and message, as the setting's
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = (
            "this PyTorch is a CPU-only build"
            if torch.version.cuda is None
            else "no GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
        )
        raise ConfigError(f"runtime.device={spec!r} needs CUDA, which is not available: {why}. Use runtime.device='cpu' or 'auto'.")
    count = torch.cuda.device_count()
    index = int(spec.split(":")[1]) if ":" in spec else (local_rank if world_size > 1 else None)
    if index is not None and index >= count:
        raise ConfigError(
            f"runtime.device={spec!r} asks for GPU {index}, but {count} GPU(s) are visible"
            + (f" (process LOCAL_RANK={local_rank})" if world_size > 1 else "")
            + "."
        )
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def flush_denormals() -> None:
    """Denormal floats (below about 1.2e-38) read and written as zero by this thread, as TensorFlow
    does on CPUs. A recurrent layer's backward pass makes them (the gates' derivatives far in their
    tails), and a CPU takes on the order of a hundred cycles for each: the seed model trained about
    7x faster in float32 without them on this project's Intel machine (benchmarks/denormals.py,
    benchmarks/results/denormals-*.json). No figure that matters changes: a denormal is below anything a
    weight, gradient or probability here can use. The setting is per thread (the CPU's MXCSR): the
    worker pool's threads take it for their life; the caller's thread only inside
    ``denormals_flushed()``, so nothing else the caller computes is changed."""
    torch.set_flush_denormal(True)


_flushing = threading.local()


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """``flush_denormals()`` in this thread while inside, restored after (nests: a prediction inside
    a fit leaves the fit's setting alone)."""
    depth = getattr(_flushing, "depth", 0)
    if depth == 0:
        flush_denormals()
    _flushing.depth = depth + 1
    try:
        yield
    finally:
        _flushing.depth = depth
        if depth == 0:
            torch.set_flush_denormal(False)


@contextlib.contextmanager
def collector_frozen() -> Iterator[None]:
    """Python's cycle collector leaves the objects alive on entry (torch's modules, the data, the
    vocabulary: millions) out of its full passes while inside, and takes them back after. A
    training step makes thousands of short-lived objects, and each full pass walked every one of
    the old ones: ~4% of an SST-5 epoch on a Zen 3 (perf). Nothing numeric changes."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _no_native_bf16() -> str:
    model = cpu_info()[0]
    why = f"{CPU_PROFILE_ENV}=avx2 is set" if cpu_profile() == "avx2" else "it has neither avx512_bf16 nor amx_bf16"
    return f"this CPU ({model}) has no native bfloat16: {why}"


def compute_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype of the training forward pass for ``RuntimeConfig.precision``. "auto" takes bfloat16
    only on a CPU with native bfloat16, where it trains faster at the same validation accuracy
    (benchmarks/results/precision-*.json); on CUDA "auto" stays float32 (these small models are
    launch-bound there). An explicit "bfloat16" on a CPU without it stops with one line: oneDNN's
    bfloat16 recurrent layer does not run on AVX2, and emulated it would be slower than float32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"Expected one of {{'auto', 'float32', 'bfloat16'}}. Received: precision={precision!r}.")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if precision == "bfloat16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError(
            f"runtime.precision='bfloat16' needs native bfloat16, but {_no_native_bf16()}. "
            f"Use runtime.precision='auto' (float32 here) or 'float32'."
        )
    return getattr(torch, precision)


_warned: set[str] = set()


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype of prediction for a model trained with ``precision``: as in training, except that
    a model trained in bfloat16 predicts in float32 on a CPU without native bfloat16 (its weights
    are float32 anyway), with one line saying so, instead of failing."""
    try:
        return compute_dtype(device, precision)
    except ConfigError:
        if precision != "bfloat16":
            raise
        if "bf16" not in _warned:
            _warned.add("bf16")
            log.warning("The model was trained with precision 'bfloat16', but %s; it predicts in float32 here.", _no_native_bf16())
        return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` (weights stay float32 and are cast per use); nothing for float32.
    Autocast is thread-local: enter it in the thread that runs the model."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# torch's intra-op thread count, process-wide: pools open now, and the count to restore after the last
_pinned_lock = threading.Lock()
_pinned = {"holders": 0, "threads": 1}


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of ``workers`` threads, each running its batches on one core (torch's intra-op threads
    set to 1, restored after; ``None`` for one worker). Batches side by side, one core each, predict
    faster than one batch at a time on every core: a 64-row recurrent step is too small to share
    out (benchmarks/results/cpu-notes-2026-11-27.md). Held for a whole fit (see
    pieces.workers): changing the thread count every step would rebuild oneDNN's kernels. torch's
    thread count is one per process, so pools opened at once from several threads (a server's
    requests) share the setting: the last to close restores it."""
    if workers <= 1:
        yield None
        return
    with _pinned_lock:
        if _pinned["holders"] == 0:
            _pinned["threads"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _pinned["holders"] += 1
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="textrnn-worker", initializer=flush_denormals) as pool:
            yield pool
    finally:
        with _pinned_lock:
            _pinned["holders"] -= 1
            if _pinned["holders"] == 0:
                torch.set_num_threads(_pinned["threads"])
