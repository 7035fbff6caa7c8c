"""A faster CPU path for LSTM and GRU classifiers: inference (LSTM and GRU) and float32 training (LSTM).

PyTorch's recurrent layer multiplies every input vector by the input weights, ``W_ih x``: two
thirds of the arithmetic of an LSTM of 64 units over 128-dimensional embeddings. At inference the
embedding is fixed, so ``W_ih e_w + b_ih`` can be computed once per *word* of the vocabulary (a
table, milliseconds to build) and looked up per token. What is left per time step is the
recurrent product ``h W_hh^T`` (``torch.addmm``, oneDNN, in bfloat16 where the CPU has it) and
the gates, fused in one pass by a small C kernel (``kernels/rnn.c``) that also keeps the running
max and sum for max/mean pooling, so the (B, T, H) outputs of the last layer are never written.

Rows are sorted longest first, so the texts still running at step t are a prefix of the batch and
each step computes only those: no padding is computed and none reaches a prediction.

In float32 (a CPU without bfloat16, or ``precision = "float32"``) the *sequence kernel* runs each
layer and direction in one call: it computes the recurrent product itself, four texts at a time
with the weights loaded once per step, and then the same gate code. No call per time step is left,
so a single text runs at the speed of its arithmetic (a server's request, 2x PyTorch's path on an
AVX2 CPU), and wide batches no slower than oneDNN's product (benchmarks/sequence_kernel.py).

Training in float32 (a CPU without bfloat16, or ``precision = "float32"``) runs each LSTM layer and
direction of a batch of one length through ``lstm_train``: the input projection and every
gradient of a weight are matrix products (PyTorch's, near the CPU's peak); the recurrence, forward
and backward, is C (``lstm_train_forward``/``lstm_train_backward``, the sequence kernel's product).
Installed as ``models.training_kernel``; bfloat16 training keeps oneDNN's layer (AMX).

The kernel is compiled on first use with the system's C compiler (``$CC``, else ``cc``; under a
second) into the cache's ``kernels/`` folder, and checked against PyTorch once per process. Without
a compiler, or with ``TEXTRNN_FAST_RNN=0``, models run PyTorch's own path; results agree to
rounding (float32: ~1e-6; bfloat16: as bfloat16 autocast does).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import models
from ._env import cpu_profile
from .config import ModelConfig
from .io import cache_dir
from .models import RNNClassifier, masked_pool
from .runtime import cpu_flags, cpu_info

log = logging.getLogger("textrnn")

ENV = "TEXTRNN_FAST_RNN"
MIN_ROWS = 16  # below this the per-step loop costs more than it saves (the sequence kernel has none)
# Batches of at most this many texts run float32 through the sequence kernel (one call per layer and
# direction; it computes the recurrent product too), larger ones one call per step after oneDNN's
# product: benchmarks/sequence_kernel.py (results/sequence-kernel-*.json).
SEQUENCE_MAX_ROWS = 1 << 30  # every float32 batch: it measured as fast or faster at every size
GEMM_ROWS = 32  # the recurrent product's row count is rounded up to a multiple of this
MAX_HIDDEN = 1024  # the kernel's per-row scratch
MAX_TABLE_BYTES = 512 * 2**20  # a larger vocabulary projects its embeddings per batch instead
_SOURCE = Path(__file__).with_name("kernels") / "rnn.c"
# -fno-trapping-math (as PyTorch itself is built) lets gcc turn the clamps in exp into vector
# min/max: without it, on AVX2 (no AVX-512 masks) the gate loop stayed scalar, which made the
# kernel slower than PyTorch's own path there. It changes no result: no reassociation, no
# fast-math; only floating-point traps, which nothing here enables, are assumed off.
OPTIMIZE = ("-O3", "-fno-trapping-math")
_lock = threading.RLock()  # reentrant: the self-check builds weights while holding it
_lib: ctypes.CDLL | None | bool = False  # False: not tried yet


def arch_flags(machine: str | None = None) -> list[list[str]]:
    """The compiler's architecture flags to try in turn, the last always none: the CPU's own on
    x86-64 (``-march=native``; ``-mavx2 -mfma`` under ``TEXTRNN_CPU=avx2``) and on 64-bit ARM
    (``-mcpu=native``, which gcc and clang both take there; ``-march=native`` is not on every
    ARM compiler)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        first = ["-mavx2", "-mfma"] if cpu_profile() == "avx2" else ["-march=native"]
    elif machine in ("aarch64", "arm64") or machine.startswith("arm"):
        first = ["-mcpu=native"]
    else:
        first = []
    return [first, []] if first else [[]]


def _compile(cc: str, target: Path, source: str | None = None) -> None:
    """Build ``source`` (default: kernels/rnn.c) into the shared library ``target``."""
    source = _SOURCE.read_text() if source is None else source
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        for arch in arch_flags():
            cmd = [cc, *OPTIMIZE, *arch, "-fPIC", "-shared", "-x", "c", "-", "-o", tmp]
            done = subprocess.run(cmd, input=source, capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, target)  # atomic: a concurrent process sees all of it or nothing
                return
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "compiler failed")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes.CDLL | None:
    if os.environ.get(ENV, "1").lower() in ("0", "false", "no", "off"):
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        log.debug("fast RNN kernel: no C compiler; using PyTorch's recurrent layers")
        return None
    model, flags = cpu_info()
    key = "\0".join([_SOURCE.read_text(), cc, platform.machine(), model, " ".join(sorted(flags)), repr(OPTIMIZE), repr(arch_flags())])
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_dir() / "kernels" / f"rnn-{key}.so"
    try:
        if not path.exists():
            _compile(cc, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.debug("fast RNN kernel unavailable (%s); using PyTorch's recurrent layers", e)
        return None
    return bind(lib)


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """``lib`` with the kernel's argument types declared (benchmarks/kernel_source.py binds builds of
    other versions of the source this way)."""
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    for fn in (lib.rnn_step_f32, lib.rnn_step_bf16):
        fn.restype = None
        fn.argtypes = [ctypes.c_int, i64, i64, i64, i64, ctypes.c_int, p, p, p, p, p, p, p, i64, p, p]
    lib.rnn_seq_f32.restype = None
    lib.rnn_seq_f32.argtypes = [ctypes.c_int, i64, i64, i64, ctypes.c_int, p, p, p, p, p, p, p, p, i64, p, p]
    lib.lstm_train_forward.restype = lib.lstm_train_backward.restype = None
    lib.lstm_train_forward.argtypes = [i64, i64, i64, ctypes.c_int, p, p, p, p, p, p, p, p]
    lib.lstm_train_backward.argtypes = [i64, i64, i64, ctypes.c_int, p, p, p, p, p, i64, p, p, p, p]
    if hasattr(lib, "max_over_time_f32"):  # (an older source, built by kernel_source.py, has none)
        lib.max_over_time_f32.restype = None
        lib.max_over_time_f32.argtypes = [i64, i64, i64, p, p, p]
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None where it cannot be built (or fails its check against PyTorch)."""
    global _lib
    if _lib is False:
        with _lock:
            if _lib is False:
                lib = _load()
                _lib = lib  # set first: the self-check below runs this module's own path
                if lib is not None and not _self_check():
                    log.warning("fast RNN kernel disagrees with PyTorch on this machine; not using it")
                    _lib = None
    return _lib  # type: ignore[return-value]


def _self_check() -> bool:
    ok = True
    # the caller's random stream stays untouched, and its autocast (if any) is off for the check
    with torch.random.fork_rng(devices=[]), torch.autocast("cpu", enabled=False):
        torch.manual_seed(0)
        ids = torch.randint(1, 50, (16, 9))
        lengths = torch.randint(1, 10, (16,))
        for cell in ("lstm", "gru"):
            cfg = ModelConfig(cell=cell, embedding_dim=8, hidden_size=6, num_layers=2, pooling="last+max+mean")
            model = RNNClassifier(cfg, 50, 3).eval()
            with torch.inference_mode():
                ref = model.head(_reference_pool(model, ids, lengths))
                fast = model.head(pooled(model, ids, lengths, torch.float32))
                ok &= bool(torch.allclose(ref, fast, atol=1e-4))
        ok &= _training_agrees()
    return ok


def _training_agrees() -> bool:
    """The training kernel's outputs and gradients against PyTorch's on a small two-layer BiLSTM
    (with autograd on, whatever mode the first caller is in: a server's first prediction runs
    under inference_mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        rnn = nn.LSTM(5, 6, num_layers=2, batch_first=True, bidirectional=True).train()
        x = torch.randn(3, 7, 5, requires_grad=True)
        ref = rnn(x)[0]
        fast = lstm_layers(rnn, x)
        weights = torch.randn_like(ref)
        grads = [torch.autograd.grad((out * weights).sum(), [x, *rnn.parameters()]) for out in (ref, fast[0])]
    return bool(torch.allclose(ref, fast[0], atol=1e-4)) and all(torch.allclose(a, b, atol=1e-4) for a, b in zip(*grads))


def _reference_pool(model, ids, lengths):
    out, last = model.encode(ids, lengths)
    return masked_pool(out, lengths.clamp(min=1), model.config.poolings, last)


def kernel_dtype() -> torch.dtype:
    """bfloat16 inside CPU bfloat16 autocast (as training.autocast sets it), else float32."""
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return torch.bfloat16
    return torch.float32


def supports(model) -> bool:
    """Whether ``model`` is a recurrent classifier this kernel runs (LSTM or GRU, float32 weights)."""
    if not isinstance(model, RNNClassifier):
        return False
    c = model.config
    return (
        c.cell in ("lstm", "gru")
        and c.hidden_size <= MAX_HIDDEN
        and model.embedding.weight.dtype == torch.float32
        and library() is not None
    )


def applies(model, ids: torch.Tensor) -> bool:
    """Whether this call (CPU inference on a batch of at least MIN_ROWS texts, or of any size that
    the float32 sequence kernel takes) takes this path."""
    return (
        not model.training
        and not torch.is_grad_enabled()
        and ids.device.type == "cpu"
        and ids.dim() == 2
        and (ids.shape[0] >= MIN_ROWS or sequence_kernel(ids.shape[0], kernel_dtype()))
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.onnx.is_in_onnx_export()
        and supports(model)
    )


def _version(p: torch.Tensor) -> int:
    try:
        return p._version
    except RuntimeError:  # an inference tensor (made under inference_mode) has no version counter
        return -1


# Per model: (key, weights) of the last dtype built, kept here, off the model, and dropped with it.
_cache: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def forget(model: nn.Module) -> None:
    """Drop what was built for ``model``. The cache notices weights changed by ordinary in-place
    updates (their version counters move); a fused optimizer's step moves none, so whatever steps
    one calls this before predicting (the trainer does, each epoch)."""
    for m in getattr(model, "members", [model]):
        _cache.pop(m, None)


def _weights(model, dtype: torch.dtype) -> dict:
    """Per model and dtype, rebuilt when any weight changes: the recurrent weights transposed, and
    for the first layer each word's input gates (when the table is small enough)."""
    c = model.config
    params = [model.embedding.weight, *model.rnn.parameters()]
    key = (dtype, tuple((p.data_ptr(), _version(p)) for p in params))
    cached = _cache.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    with _lock, torch.no_grad():
        cached = _cache.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        dirs = 2 if c.bidirectional else 1
        w: dict[str, list[torch.Tensor]] = {"w_hh": [], "b_hh": [], "table": []}
        gates = (4 if c.cell == "lstm" else 3) * c.hidden_size
        small = model.embedding.num_embeddings * gates * dirs * dtype.itemsize <= MAX_TABLE_BYTES
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(model.rnn.all_weights):
            w["w_hh"].append(w_hh.t().to(dtype).contiguous())
            w["b_hh"].append(b_hh.to(dtype))
            if k < dirs and small:  # (V, G): every word's input gates
                w["table"].append(torch.addmm(b_ih.to(dtype), model.embedding.weight.to(dtype), w_ih.t().to(dtype)))
        _cache[model] = (key, w)
        return w


def pooled(model, ids: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """What ``masked_pool(*model.encode(ids, lengths))`` computes, (B, P) float32, by the kernel."""
    lib = library()
    assert lib is not None, "pooled() runs where applies(): the kernel is built"
    c = model.config
    dtype = dtype or kernel_dtype()
    B, T = ids.shape
    H, dirs, L = c.hidden_size, 2 if c.bidirectional else 1, c.num_layers
    lengths = lengths.clamp(min=1, max=T).to(torch.int64)
    order = torch.argsort(lengths, descending=True, stable=True)
    ids, lengths = ids[order].contiguous().to(torch.int64), lengths[order].contiguous()
    lens = lengths.numpy()
    steps = int(lens[0])
    running = B - np.cumsum(np.bincount(lens, minlength=steps + 1))[:steps]  # rows with length > t
    # oneDNN builds a kernel per matrix shape: rounding the row count keeps the shapes few
    gemm_rows = np.minimum(-(-running // GEMM_ROWS) * GEMM_ROWS, B)
    w = _weights(model, dtype)
    cell = 0 if c.cell == "lstm" else 1
    x = None  # the previous layer's outputs (B, T, dirs*H)
    parts: dict[str, list[torch.Tensor]] = {"last": [], "max": [], "mean": []}
    for layer in range(L):
        top = layer == L - 1
        out = None if top else torch.zeros(B, T, dirs * H)
        for d in range(dirs):
            k = layer * dirs + d
            w_ih, b_ih = model.rnn.all_weights[k][0], model.rnn.all_weights[k][2]
            if layer == 0 and w["table"]:
                table, rows = w["table"][d], ids
            else:  # project every position of the batch
                inp = model.embedding.weight[ids] if layer == 0 else x
                assert inp is not None  # a layer above the first reads the one below's outputs
                table = torch.addmm(b_ih.to(dtype), inp.reshape(B * T, -1).to(dtype), w_ih.t().to(dtype))
                rows = torch.arange(B * T, dtype=torch.int64).view(B, T)  # position (b, t) is row b*T + t
            h = torch.zeros(B, H, dtype=dtype)
            cstate = torch.zeros(B, H) if cell == 0 else h
            hh = torch.empty(B, w["w_hh"][k].shape[1], dtype=dtype)
            pmax = torch.full((B, H), float("-inf")) if top and "max" in c.poolings else None
            psum = torch.zeros(B, H) if top and "mean" in c.poolings else None
            ptr = lambda a: a.data_ptr() if a is not None else None  # noqa: E731
            args = (
                ptr(lengths),
                ptr(table),
                ptr(rows),
                ptr(hh),
                ptr(h),
                ptr(cstate),
                out.data_ptr() + 4 * d * H if out is not None else None,
                dirs * H,
                ptr(pmax),
                ptr(psum),
            )
            _recur(lib, cell, dtype, (B, H, T, d), (w["w_hh"][k], w["b_hh"][k], h, hh), args, (running, gemm_rows))
            if top:
                parts["last"].append(h.float())
            if pmax is not None:
                parts["max"].append(pmax)
            if psum is not None:
                parts["mean"].append(psum / lengths.unsqueeze(1))
        x = out
    result = torch.cat([torch.cat(parts[p], dim=1) for p in c.poolings], dim=1)
    return torch.empty_like(result).index_copy_(0, order, result)  # back to the caller's order


def sequence_kernel(rows: int, dtype: torch.dtype) -> bool:
    """Whether a batch of ``rows`` texts runs each layer and direction in one call of the sequence
    kernel (float32 only; it computes the recurrent product itself) rather than one call per time
    step after oneDNN's product."""
    return dtype == torch.float32 and rows <= SEQUENCE_MAX_ROWS


def _recur(lib, cell: int, dtype: torch.dtype, sizes: tuple, tensors: tuple, args: tuple, schedule: tuple) -> None:
    """One layer and direction over the batch: ``tensors`` are W_hh^T, b_hh, the state h and the
    product's buffer; the state, cell and pooling are updated in place through ``args`` (the step
    kernel's pointers, from the lengths on); ``schedule``: the rows running at each step and the
    product's row count."""
    B, H, T, d = sizes
    w_hh, b_hh, h, hh = tensors
    if sequence_kernel(B, dtype):
        lengths, table, rows, _hh, *rest = args
        lib.rnn_seq_f32(cell, B, H, T, d, lengths, table, rows, w_hh.data_ptr(), b_hh.data_ptr(), *rest)
        return
    step = lib.rnn_step_bf16 if dtype == torch.bfloat16 else lib.rnn_step_f32
    running, gemm_rows = schedule
    for t in range(len(running)):
        n = int(running[t])
        m = int(gemm_rows[t])  # rows past their end get a product no one reads
        torch.addmm(b_hh, h[:m], w_hh, out=hh[:m])
        step(cell, n, H, T, t, d, *args)


def forward(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Logits (B, C) of ``model`` (in eval mode, where ``applies``) by the kernel."""
    assert isinstance(model, RNNClassifier)
    return model.classify(pooled(model, ids, lengths))


# ---------------------------------------------------------------------------------------- training
class _LSTMDirection(torch.autograd.Function):
    """One LSTM layer and direction in float32 over texts of one length, by the C kernel. Its input
    is ``x`` (N, E) with ``rows`` (B, T), the row of x at each position: the first layer's distinct
    words of the batch (their embeddings, so the input projection and its gradients are computed
    once per word, not per token: the seed model's input projection is two thirds of its
    arithmetic), or every position's vector (rows None: N = B * T). The projection and every
    weight's gradient are matrix products (PyTorch's, near the CPU's peak); the recurrence, forward
    and backward, runs in C (lstm_train_forward/backward, the sequence kernel's product)."""

    @staticmethod
    def forward(ctx, x, rows, w_ih, w_hh, b_ih, b_hh, reverse: bool, steps: int):  # type: ignore[override]
        lib = library()
        assert lib is not None
        G, H = w_ih.shape[0], w_hh.shape[1]
        positions = rows if rows is not None else torch.arange(x.shape[0]).view(-1, steps)
        B, T = positions.shape
        table = torch.mm(x, w_ih.t())  # (N, G); both biases are added in C, with the recurrent product
        # (addmm would first copy the bias into every row of its output: ~1.6 ms a piece)
        acts, cs, tcs, hs = torch.empty(B, T, G), torch.empty(B, T, H), torch.empty(B, T, H), torch.empty(B, T, H)
        keep = (table, positions, w_hh.t().contiguous(), b_ih + b_hh, acts, cs, tcs, hs)  # alive through the call
        lib.lstm_train_forward(B, H, T, int(reverse), *[t.data_ptr() for t in keep])
        ctx.reverse = reverse
        ctx.save_for_backward(x, rows, w_ih, w_hh, acts, cs, tcs, hs)
        return hs

    @staticmethod
    def backward(ctx, dhs):  # type: ignore[override]
        lib = library()
        assert lib is not None
        x, rows, w_ih, w_hh, acts, cs, tcs, hs = ctx.saved_tensors
        B, T, G = acts.shape
        H = G // 4
        dg = torch.empty(B, T, G)
        # one direction's half of a bidirectional layer's gradient is read in place, rows 2H apart
        ds = dhs.stride(1)
        if dhs.stride(2) != 1 or dhs.stride(0) != T * ds:
            dhs, ds = dhs.contiguous(), H  # (contiguous() may keep odd strides of a dimension of size 1)
        # the gradient of each row of the table (a word's: the sum over its positions) and the
        # biases', both summed in C as dg is written
        db, flat = torch.zeros(G), dg.view(B * T, G)
        dtable, sums = flat, (None, None)
        if rows is not None:
            dtable, rows = torch.zeros(x.shape[0], G), rows.contiguous()  # alive through the call
            sums = (rows.data_ptr(), dtable.data_ptr())
        keep = (w_hh.contiguous(), acts, cs, tcs, dhs)  # alive through the call
        lib.lstm_train_backward(B, H, T, int(ctx.reverse), *[t.data_ptr() for t in keep], ds, dg.data_ptr(), *sums, db.data_ptr())
        dx = torch.mm(dtable, w_ih) if ctx.needs_input_grad[0] else None
        dw_ih = torch.mm(dtable.t(), x)
        # sum over steps of dg_t^T h_{t-1}, h_{t-1} the output one position before (after, in
        # reverse): one product of the flat arrays shifted by a row (no copy), less the pairs that
        # shift made across two texts (each text's first step, which has no h_{t-1})
        hflat = hs.view(B * T, H)
        if ctx.reverse:
            dw_hh = torch.mm(flat[:-1].t(), hflat[1:]) - torch.mm(dg[:-1, T - 1].t(), hs[1:, 0])
        else:
            dw_hh = torch.mm(flat[1:].t(), hflat[:-1]) - torch.mm(dg[1:, 0].t(), hs[:-1, T - 1])
        return dx, None, dw_ih, dw_hh, db, db, None, None


def trains(rnn: nn.RNNBase, x: torch.Tensor) -> bool:
    """Whether ``rnn(x)`` in training takes the C kernel: an LSTM (no projection, with biases) on a
    CPU in float32 (not under bfloat16 autocast: that is oneDNN's, with AMX where the CPU has it)
    with gradients on, its weights float32 and its hidden size within the kernel's scratch."""
    return (
        isinstance(rnn, nn.LSTM)
        and rnn.training
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 3
        and x.shape[1] > 0
        and kernel_dtype() == torch.float32
        and rnn.bias
        and not rnn.proj_size
        and rnn.hidden_size <= MAX_HIDDEN
        and all(p.dtype == torch.float32 for p in rnn.parameters())
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.onnx.is_in_onnx_export()
        and library() is not None
    )


# Above this share of distinct inputs among a batch's positions, projecting each once saves nothing
# against gathering their gradients back: on 64 generated sentences of 24 words (a share of 0.89 per
# text) one AVX2 piece took 13.4 ms through distinct words, 13.2 ms per position. On IMDB's reviews
# (~0.6 per text with the default's dropout mask, ~0.45 per batch without) an epoch gains 1.11x (the
# default model) and 1.38x (the seed model) over per position, under TEXTRNN_CPU=avx2
# (benchmarks/results/training-kernel-2026-11-30-distinct.json).
DISTINCT_MAX_SHARE = 0.7


def lstm_train(rnn: nn.RNNBase, x: torch.Tensor, words: models.Words | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """What ``rnn(x)`` computes in training for texts of one length, by the C kernel where it is
    the faster (``lstm_layers``); else None, and the caller runs PyTorch's layer. ``words``: what
    made x (models.Words: the token ids, the embedding, the dropout mask per text if any), None when
    x came otherwise (an adversarial push). Installed as models.training_kernel.

    Where it runs: wherever ``trains`` holds, except on AVX-512 CPUs. With ``words`` whose distinct
    inputs are few enough (``distinct_inputs``) the first layer projects each once; otherwise every
    position is projected. On an AVX-512 CPU oneDNN's own float32 layer, 16 floats wide, is the
    faster except where each distinct word of the batch is projected once (no dropout mask: the
    seed model, 1.19x an epoch): per position the kernel measured 0.89-0.96x there, per word of
    each text 0.98x a piece and 1.03x an epoch. Under AVX2 the kernel is 1.14x PyTorch's layer an
    epoch for the default model and 1.55x for the seed model (benchmarks/training_kernel.py,
    training-kernel-2026-11-30-distinct.json)."""
    if not trains(rnn, x):
        return None
    avx512 = "avx512f" in cpu_flags()
    # with AVX-512, distinct words of each text (the default model's dropout mask) gain nothing worth a
    # path against oneDNN's 16-wide layer: 0.98x a piece, 1.03x an epoch (training-kernel-2026-11-30-distinct.json)
    first = distinct_inputs(words) if words is not None and not (avx512 and words.mask is not None) else None
    if first is None and avx512:
        return None
    return lstm_layers(rnn, x, first)


def distinct_inputs(words: models.Words, max_share: float = DISTINCT_MAX_SHARE) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first layer's distinct input vectors (U, E) and each position's row among them (B, T):
    each distinct word of the batch, or with a dropout mask (one per text) each distinct word of
    each text. The vectors pass through the embedding (its gradient, sparse or dense, padding row
    included, is its own) and the mask. None where they are over ``max_share`` of the positions."""
    B, V = words.ids.shape[0], words.embedding.num_embeddings
    key = words.ids
    if words.mask is not None:  # (text, word) as one id
        key = key + torch.arange(B, device=key.device).unsqueeze(1) * V
    distinct, rows = torch.unique(key, return_inverse=True)
    if distinct.numel() > max_share * key.numel():
        return None
    if words.mask is None:
        return words.embedding(distinct), rows
    return words.embedding(distinct % V) * words.mask[distinct // V, 0], rows


def lstm_layers(
    rnn: nn.RNNBase, x: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rnn(x)`` for an LSTM in training mode over texts of one length, float32, by the C kernel:
    the outputs (B, T, dirs*H) and the top layer's last state of each direction (B, dirs*H).
    ``first``: the first layer's distinct inputs and each position's row (``distinct_inputs``),
    or None: every position's vector of x."""
    B, T, _ = x.shape
    dirs = 2 if rnn.bidirectional else 1
    inp, rows = first if first is not None else (x.reshape(B * T, -1).contiguous(), None)
    for layer in range(rnn.num_layers):
        outs = [_LSTMDirection.apply(inp, rows, *rnn.all_weights[layer * dirs + d], d == 1, T) for d in range(dirs)]
        x = torch.cat(outs, dim=2) if dirs == 2 else outs[0]
        inp, rows = x.reshape(B * T, -1), None
    last = [outs[0][:, -1]] + ([outs[1][:, 0]] if dirs == 2 else [])
    return x, torch.cat(last, dim=1)


class _MaxOverTime(torch.autograd.Function):
    """Each channel's maximum over the positions of x (B, T, D), float32, by the C kernel (one pass,
    the first of equal maxima); the backward puts each gradient at its maximum's position, as
    torch.max's does."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        lib = library()
        assert lib is not None
        x = x.contiguous()
        B, T, D = x.shape
        values, index = torch.empty(B, D), torch.empty(B, D, dtype=torch.long)
        lib.max_over_time_f32(B, T, D, x.data_ptr(), values.data_ptr(), index.data_ptr())
        ctx.save_for_backward(index)
        ctx.steps = T
        return values

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        B, D = index.shape
        return grad.new_zeros(B, ctx.steps, D).scatter_(1, index.unsqueeze(1), grad.unsqueeze(1))


def max_over_time(x: torch.Tensor) -> torch.Tensor | None:
    """``x.max(1).values`` with gradients, for x (B, T, D) float32 on a CPU, by the C kernel; None
    where it does not apply (the caller runs torch.max). Installed as models.max_kernel."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 3 or x.shape[1] == 0:
        return None
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return None  # an exported or compiled graph keeps torch.max
    if library() is None:
        return None
    if not hasattr(library(), "max_over_time_f32"):
        return None
    return _MaxOverTime.apply(x)


models.training_kernel = lstm_train
models.max_kernel = max_over_time
