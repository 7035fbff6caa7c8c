"""Process settings that must be in place before torch loads its OpenMP runtime and oneDNN.

Imported first by the package (``textrnn/__init__.py``); it imports nothing of torch. Each setting is
a default: one the user set in the environment wins.

- ``GOMP_SPINCOUNT``: how long idle OpenMP threads spin before they sleep (GNU OpenMP, which torch
  uses on Linux). The default spins so long that two threads collapse when another process shares
  the cores; sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) costs far more on an idle machine. The
  figures are in ``benchmarks/results/threads-2026-11-26.md``.
- ``TEXTRNN_CPU=avx2``: behave as an x86-64 CPU with AVX2 and FMA but no AVX-512 and no native
  bfloat16 would (most laptops; AMD Zen 2/3), on any CPU. It caps oneDNN (``ONEDNN_MAX_CPU_ISA``),
  PyTorch's own kernels (``ATEN_CPU_CAPABILITY``) and MKL (``MKL_ENABLE_INSTRUCTIONS``) at AVX2,
  makes ``runtime.cpu_has_native_bf16()`` false (so ``precision = "auto"`` is float32) and compiles
  the C kernel with ``-mavx2 -mfma`` instead of ``-march=native``. CI runs the fast tests a second
  time under it, so both paths are tested on either kind of machine.
"""

from __future__ import annotations

import os

CPU_PROFILE_ENV = "TEXTRNN_CPU"
CPU_PROFILES = ("native", "avx2")
# what the AVX2 profile sets, read lazily (at first use) by each library
AVX2_SETTINGS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def cpu_profile() -> str:
    """``native`` (the CPU as it is) or ``avx2`` (``TEXTRNN_CPU=avx2``)."""
    value = os.environ.get(CPU_PROFILE_ENV, "").strip().lower() or "native"
    return value if value in CPU_PROFILES else "native"


def apply() -> None:
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    if cpu_profile() == "avx2":
        for key, value in AVX2_SETTINGS.items():
            os.environ.setdefault(key, value)


apply()
