"""Intel MKL's AVX2 matrix products on AMD CPUs.

PyTorch's x86 wheels multiply float32 matrices with Intel MKL (``torch.mm``, ``F.linear`` and
their gradients: the input projection of every recurrent layer, the MLP, the head). MKL picks its
kernels by CPU *vendor*: on a CPU that is not Intel's it runs SSE code for many shapes, whatever
the CPU has. On an AMD EPYC (Zen 3), one core, a (3200 x 64) x (64 x 256) product ran at 33
GFLOP/s against 66 with MKL's AVX2 kernels, (3200 x 256) x (256 x 64) at 45 against 66; some
shapes already get AVX2 (``benchmarks/mkl_amd.py``, ``results/mkl-amd-2026-12-01.json``). textrnn's
own training spends most of its time elsewhere (the C kernel): an SST-5 epoch 1.02x, IMDB's main
job 1.03x (178 s against 183 s). MKL has had no switch for this since 2020 (``MKL_DEBUG_CPU_TYPE``
is gone); what PyTorch's maintainers point to is a library, put first with ``LD_PRELOAD``, whose
``mkl_serv_intel_cpu_true`` returns 1 (pytorch/builder#504, #1245). MKL then chooses among its
kernels by the CPU's features, as it does on Intel CPUs.

``apply()`` does the same from inside the process, once, when textrnn is imported: it points
libtorch_cpu's entry for that function (its PLT slot, found in the library's ELF relocations) at
six bytes of code that return 1. It does so only where every check holds: Linux on x86-64, a CPU
vendor other than Intel, AVX2 without AVX-512 (Zen 2 and 3, most AMD laptops: MKL then runs its
AVX2 kernels, Haswell's; on AVX-512 CPUs such as Zen 4 MKL would pick among kernels written for
Intel's AVX-512 generations, which has not been checked here, so they are left alone), PyTorch
built with MKL, the slot found, writable and holding MKL's own function. Anything else
leaves MKL as it is. MKL decides its kernels at its first product, so this must run before any:
importing textrnn first does it (the CLI, the server and the benchmarks do); after a product has
run, it no longer takes effect.

Results change only by rounding (other summation orders, as between two Intel CPUs).
``TEXTRNN_MKL_VENDOR=keep`` leaves MKL's own choice.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import platform
import struct
import sys

import numpy as np
import torch

from .runtime import cpu_flags, cpu_vendor

log = logging.getLogger("textrnn")

ENV = "TEXTRNN_MKL_VENDOR"
SYMBOL = "mkl_serv_intel_cpu_true"
RETURN_ONE = bytes([0xB8, 0x01, 0x00, 0x00, 0x00, 0xC3])  # x86-64: mov eax, 1; ret
R_X86_64_JUMP_SLOT, SHT_RELA, SHT_DYNSYM = 7, 4, 11
state = "not tried"  # what apply() did, for results files: see status()
_code: mmap.mmap | None = None  # the returning-one code, kept mapped for the life of the process


def status() -> str:
    """What ``apply()`` did: ``avx2 kernels (vendor check bypassed)``, or why MKL was left as it is."""
    return state


def apply() -> str:
    """Let MKL choose its kernels by the CPU's features on a CPU that is not Intel's; returns what was done."""
    global state
    if state == "not tried":
        try:
            state = _apply()
        except (OSError, ValueError, struct.error, StopIteration) as e:  # an unexpected library layout: leave it
            state = f"left as it is ({type(e).__name__}: {e})"
        log.debug("MKL on this CPU: %s", state)
    return state


def _apply() -> str:
    if os.environ.get(ENV, "").strip().lower() == "keep":
        return f"left as it is ({ENV}=keep)"
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return "left as it is (not Linux on x86-64)"
    if cpu_vendor() in ("GenuineIntel", ""):
        return "left as it is (an Intel CPU)" if cpu_vendor() else "left as it is (unknown CPU vendor)"
    if "avx2" not in cpu_flags() or "avx512f" in cpu_flags():  # under TEXTRNN_CPU=avx2, AVX-512 is not in cpu_flags()
        return "left as it is (not an AVX2 CPU without AVX-512)"
    if not torch.backends.mkl.is_available():
        return "left as it is (PyTorch without MKL)"
    path, start, end = _mapped("libtorch_cpu.so")
    slot = start + _plt_offset(path, SYMBOL)  # a shared library's addresses count from its first mapping
    if not start <= slot < end or not _writable(slot):
        return "left as it is (its slot is read-only)"
    real = ctypes.cast(getattr(ctypes.CDLL(path), SYMBOL), ctypes.c_void_p).value
    current = ctypes.c_uint64.from_address(slot)
    # Python loads libraries with RTLD_NOW: the slot holds MKL's function. Anything else (an
    # LD_PRELOAD library's, or a slot misplaced by a layout not foreseen here) is left untouched.
    if current.value != real:
        return "left as it is (the slot does not hold MKL's function)"
    current.value = _return_one()
    return "avx2 kernels (vendor check bypassed)"


def _mapped(name: str) -> tuple[str, int, int]:
    """The path of the loaded library ``name`` and the addresses where it starts and ends."""
    spans: dict[str, list[int]] = {}
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and os.path.basename(fields[5]) == name:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                spans.setdefault(fields[5], []).extend((lo, hi))
    if len(spans) != 1:
        raise ValueError(f"{name} is loaded {len(spans)} times")
    ((path, bounds),) = spans.items()
    return path, min(bounds), max(bounds)


def _plt_offset(path: str, symbol: str) -> int:
    """The offset from the library's start of ``symbol``'s PLT slot (its R_X86_64_JUMP_SLOT relocation).
    The file (434 MB for libtorch_cpu) is mapped, not read, and its relocations scanned as one array."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:5] != b"\x7fELF\x02":
            raise ValueError("not a 64-bit ELF library")
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        entsize, count = struct.unpack_from("<HH", data, 0x3A)
        # (name, type, flags, addr, offset, size, link, info, addralign, entsize) per section
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * entsize) for i in range(count)]
        dynsym = next(s for s in sections if s[1] == SHT_DYNSYM)
        strings = sections[dynsym[6]][4]
        wanted = symbol.encode() + b"\0"
        for s in sections:
            if s[1] != SHT_RELA:
                continue
            relocations = np.frombuffer(data, dtype="<u8", count=s[5] // 8, offset=s[4]).reshape(-1, 3)  # offset, info, addend
            for r_offset, r_info in relocations[(relocations[:, 1] & 0xFFFFFFFF) == R_X86_64_JUMP_SLOT, :2].tolist():
                (name,) = struct.unpack_from("<I", data, dynsym[4] + (r_info >> 32) * 24)
                if data[strings + name : strings + name + len(wanted)] == wanted:
                    del relocations  # no view into the mapping may outlive it
                    return r_offset
            del relocations
    raise ValueError(f"no PLT slot for {symbol}")


def _writable(address: int) -> bool:
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return line.split()[1].startswith("rw")
    return False


def _return_one() -> int:
    """The address of a function that returns 1: written to a private page, then made executable.
    One page for the process, never unmapped (MKL may call it at any time)."""
    global _code
    if _code is not None:
        return ctypes.addressof(ctypes.c_char.from_buffer(_code))
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    page.write(RETURN_ONE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(address, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    _code = page
    return address


apply()
