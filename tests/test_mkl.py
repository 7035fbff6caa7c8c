"""MKL's AVX2 kernels on AMD CPUs (mkl.py): the patch applies where it should, and products stay right."""

import ctypes
import os
import subprocess
import sys

import pytest
import torch

from textrnn import mkl
from textrnn.runtime import cpu_flags, cpu_vendor

LINUX_X86_MKL = sys.platform == "linux" and os.uname().machine == "x86_64" and torch.backends.mkl.is_available()


def _status_in_fresh_process(**env) -> str:
    code = "import textrnn.mkl as m; print(m.status())"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_status_says_what_was_done_on_this_machine():
    status = mkl.status()
    if not LINUX_X86_MKL:
        assert status.startswith("left as it is")
    elif cpu_vendor() == "GenuineIntel":
        assert status == "left as it is (an Intel CPU)"
    elif "avx512f" in cpu_flags():  # Zen 4 as it is: MKL's choice among AVX-512 kernels is left alone
        assert status == "left as it is (not an AVX2 CPU without AVX-512)"
    elif os.environ.get(mkl.ENV, "").lower() != "keep":
        assert status == "avx2 kernels (vendor check bypassed)"


def test_keep_leaves_mkl_as_it_is():
    assert _status_in_fresh_process(TEXTRNN_MKL_VENDOR="keep") == "left as it is (TEXTRNN_MKL_VENDOR=keep)"


def test_products_stay_right_whatever_kernels_run():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3200, 64, generator=g), torch.randn(64, 256, generator=g)
    torch.testing.assert_close(torch.mm(a, b), (a.double() @ b.double()).float(), rtol=1e-5, atol=1e-4)
    w = torch.randn(256, 64, generator=g, requires_grad=True)
    torch.nn.functional.linear(a, w).sum().backward()
    torch.testing.assert_close(w.grad, a.sum(0).expand(256, 64), rtol=1e-4, atol=1e-3)


def test_the_returning_one_code_returns_one_and_is_made_once():
    address = mkl._return_one()
    assert ctypes.CFUNCTYPE(ctypes.c_int)(address)() == 1
    assert mkl._return_one() == address


@pytest.mark.skipif(not LINUX_X86_MKL, reason="PyTorch with MKL on Linux x86-64")
def test_the_slot_is_found_in_libtorch_cpu():
    path, start, end = mkl._mapped("libtorch_cpu.so")
    offset = mkl._plt_offset(path, mkl.SYMBOL)
    assert start < start + offset < end
    with pytest.raises(ValueError, match="no PLT slot"):
        mkl._plt_offset(path, "no_such_function_anywhere")


def test_a_library_not_loaded_is_an_error_apply_catches():
    with pytest.raises(ValueError, match="loaded 0 times"):
        mkl._mapped("libnot-there.so")


@pytest.mark.skipif(mkl.status() != "avx2 kernels (vendor check bypassed)", reason="where the patch applied (AMD, AVX2 without AVX-512)")
def test_a_slot_not_holding_mkls_function_is_left_alone():
    # the slot now holds the returning-one code, as it would an LD_PRELOAD library's function
    assert mkl._apply() == "left as it is (the slot does not hold MKL's function)"
