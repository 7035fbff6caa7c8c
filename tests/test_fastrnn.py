"""The C inference kernel (textrnn.fastrnn) against PyTorch's recurrent layers."""

import numpy as np
import pytest
import torch

from conftest import needs_native_bf16
from textrnn import fastrnn
from textrnn.config import ModelConfig
from textrnn.inference import forward, predict_logits
from textrnn.models import RNNClassifier, Words, build_model, masked_pool
from textrnn.runtime import autocast, cpu_flags

pytestmark = pytest.mark.skipif(fastrnn.library() is None, reason="no C compiler: the kernel is not built")


def reference(model, ids, lengths):
    """PyTorch's own path, whatever the kernel's conditions say."""
    out, last = model.encode(ids, lengths)
    return model.head(masked_pool(out, lengths.clamp(min=1), model.config.poolings, last))


def batch(B=40, T=23, vocab=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T  # one text fills the batch
    lengths[1] = 0  # an empty text is one <pad>, as in PyTorch's path
    ids = torch.randint(1, vocab, (B, T), generator=g)
    ids[torch.arange(T)[None, :] >= lengths[:, None]] = 0  # post-padded
    return ids, lengths


def model_for(seed=0, vocab=60, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(embedding_dim=12, hidden_size=10, **kw)
    return RNNClassifier(cfg, vocab, 3).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("pooling", ["last", "max", "mean", "last+max+mean", "mean+last"])
@pytest.mark.parametrize("path", ["sequence", "steps"])
def test_the_kernel_computes_what_pytorch_computes(cell, bidirectional, num_layers, pooling, path, monkeypatch):
    if path == "steps":  # one call per time step after oneDNN's product (bfloat16's path)
        monkeypatch.setattr(fastrnn, "SEQUENCE_MAX_ROWS", 0)
    model = model_for(cell=cell, bidirectional=bidirectional, num_layers=num_layers, pooling=pooling)
    ids, lengths = batch()
    with torch.inference_mode():
        assert fastrnn.applies(model, ids)
        fast, ref = forward(model, ids, lengths), reference(model, ids, lengths)
    assert fast.shape == ref.shape == (len(ids), 3)
    torch.testing.assert_close(fast, ref, atol=2e-6, rtol=1e-5)


@needs_native_bf16
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bfloat16_agrees_to_bfloat16_rounding(cell):
    model = model_for(cell=cell, num_layers=2)
    ids, lengths = batch()
    with torch.inference_mode(), autocast(torch.device("cpu"), torch.bfloat16):
        assert fastrnn.kernel_dtype() == torch.bfloat16
        fast, ref = forward(model, ids, lengths).float(), reference(model, ids, lengths).float()
    assert (fast - ref).abs().max() < 0.05
    with torch.inference_mode():
        exact = reference(model, ids, lengths)
    assert (fast - exact).abs().max() < 0.05


def test_padding_and_batch_order_never_change_a_text_s_result():
    model = model_for()
    ids, lengths = batch()
    garbage = ids.clone()
    # anything past each length (an empty text is read as the one <pad> at its start)
    garbage[torch.arange(ids.shape[1])[None, :] >= lengths.clamp(min=1)[:, None]] = 7
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a = forward(model, ids, lengths)
        b = model(garbage, lengths)
        c = model(ids[perm], lengths[perm])
        wider = model(torch.cat([ids, torch.zeros(len(ids), 5, dtype=ids.dtype)], 1), lengths)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[perm], c)
    torch.testing.assert_close(a, wider)


def test_a_vocabulary_too_large_for_the_table_projects_per_batch(monkeypatch):
    model = model_for(bidirectional=True)
    ids, lengths = batch()
    with torch.inference_mode():
        with_table = forward(model, ids, lengths)
        monkeypatch.setattr(fastrnn, "MAX_TABLE_BYTES", 0)
        fastrnn.forget(model)  # drop the cached table
        without = forward(model, ids, lengths)
        assert not fastrnn._cache[model][1]["table"]
    torch.testing.assert_close(with_table, without, atol=2e-6, rtol=1e-5)


def test_weights_changed_by_a_fused_optimizer_are_seen():
    """Fused Adam bumps no version counter: whoever steps one calls fastrnn.forget before
    predicting (the trainer does, before validating and at its end)."""
    model = model_for()
    ids, lengths = batch()
    with torch.inference_mode():
        before = forward(model, ids, lengths)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    model.train()
    model(ids, lengths).sum().backward()
    opt.step()
    fastrnn.forget(model)
    model.eval()
    with torch.inference_mode():
        after, ref = forward(model, ids, lengths), reference(model, ids, lengths)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, atol=2e-6, rtol=1e-5)
    with torch.no_grad():  # an in-place edit in eval mode bumps the version: seen too
        model.rnn.weight_hh_l0.mul_(0.5)
        torch.testing.assert_close(forward(model, ids, lengths), reference(model, ids, lengths), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("hidden_size", [10, 16, 64])
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 9])
def test_the_sequence_kernel_on_few_texts_computes_what_pytorch_computes(cell, hidden_size, rows):
    """Blocks of four texts and the rows left over; gate counts that are and are not multiples of
    the kernel's 16 and 64; a single text, as a server answers it."""
    torch.manual_seed(rows)
    model = RNNClassifier(ModelConfig(cell=cell, embedding_dim=12, hidden_size=hidden_size, pooling="last+max+mean"), 60, 3).eval()
    g = torch.Generator().manual_seed(rows)
    lengths = torch.randint(1, 24, (rows,), generator=g)
    ids = torch.randint(1, 60, (rows, 23), generator=g)
    ids[torch.arange(23)[None, :] >= lengths[:, None]] = 0
    with torch.inference_mode():
        assert fastrnn.applies(model, ids)
        torch.testing.assert_close(forward(model, ids, lengths), reference(model, ids, lengths), atol=2e-6, rtol=1e-5)


def test_training_small_batches_and_gradients_take_pytorch_s_path():
    model = model_for()
    ids, lengths = batch()
    with torch.inference_mode():
        assert fastrnn.applies(model, ids)
        assert fastrnn.applies(model, ids[:1])  # float32: the sequence kernel takes a single text
        with autocast(torch.device("cpu"), torch.bfloat16):  # the per-step path wants wide batches
            assert not fastrnn.applies(model, ids[: fastrnn.MIN_ROWS - 1])
    assert not fastrnn.applies(model, ids)  # gradients on
    model.train()
    with torch.inference_mode():
        assert not fastrnn.applies(model, ids)
    mlp = build_model(ModelConfig(arch="mlp"), 60, 2)
    assert not fastrnn.supports(mlp)
    assert not fastrnn.supports(model_for(cell="rnn"))


def test_an_ensemble_predicts_through_the_kernel_too():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lstm+gru", embedding_dim=8, hidden_size=6), 60, 2).eval()
    ids, lengths = batch()
    seqs = [ids[i, : max(int(lengths[i]), 0)].numpy() for i in range(len(ids))]
    fast = predict_logits(model, seqs, precision="float32")
    with torch.inference_mode():
        ref = torch.stack([reference(m, ids, lengths) for m in model.members]).mean(0).numpy()
    np.testing.assert_allclose(fast, ref, atol=2e-6, rtol=1e-5)


@pytest.fixture
def fresh(monkeypatch):
    """The module as a new process finds it: nothing loaded yet."""
    monkeypatch.setattr(fastrnn, "_lib", False)


def test_switched_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv(fastrnn.ENV, "0")
    assert fastrnn.library() is None
    model = model_for()
    ids, lengths = batch()
    with torch.inference_mode():
        assert not fastrnn.applies(model, ids)
        torch.testing.assert_close(forward(model, ids, lengths), reference(model, ids, lengths))


def test_without_a_compiler_pytorch_s_path_runs(fresh, monkeypatch, tmp_path):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("TEXTRNN_CACHE_DIR", str(tmp_path))  # nothing compiled there yet
    monkeypatch.setattr(fastrnn.shutil, "which", lambda name: None)
    assert fastrnn.library() is None
    assert not (tmp_path / "kernels").exists() or not any((tmp_path / "kernels").iterdir())


def test_a_broken_compiler_is_reported_and_nothing_half_written_is_left(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "false")  # exits 1
    monkeypatch.setenv("TEXTRNN_CACHE_DIR", str(tmp_path))
    assert fastrnn.library() is None
    assert list((tmp_path / "kernels").iterdir()) == []


def test_building_the_kernel_leaves_the_random_stream_alone(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTRNN_CACHE_DIR", str(tmp_path))
    state = torch.random.get_rng_state()
    with autocast(torch.device("cpu"), torch.bfloat16):  # and the check runs in float32 regardless
        assert fastrnn.library() is not None
    assert torch.equal(state, torch.random.get_rng_state())
    assert len(list((tmp_path / "kernels").glob("rnn-*.so"))) == 1


def test_compiler_flags_exist_on_each_architecture(monkeypatch):
    """x86-64: the CPU's own (or AVX2 under TEXTRNN_CPU=avx2); 64-bit ARM: -mcpu=native, which gcc
    and clang both take there; anything else: none. Every list ends with no flags at all."""
    monkeypatch.delenv("TEXTRNN_CPU", raising=False)
    assert fastrnn.arch_flags("x86_64") == [["-march=native"], []]
    assert fastrnn.arch_flags("aarch64") == fastrnn.arch_flags("arm64") == [["-mcpu=native"], []]
    assert fastrnn.arch_flags("riscv64") == [[]]
    monkeypatch.setenv("TEXTRNN_CPU", "avx2")
    assert fastrnn.arch_flags("x86_64") == [["-mavx2", "-mfma"], []]
    assert fastrnn.arch_flags("aarch64") == [["-mcpu=native"], []]


def test_a_compiler_that_refuses_the_architecture_flags_builds_without_them(fresh, monkeypatch, tmp_path):
    """As on an ARM machine whose compiler lacks the first flags: the kernel is built plain, passes
    its check and runs; the flags asked for are those of aarch64."""
    real = fastrnn.shutil.which("cc") or fastrnn.shutil.which("gcc")
    fake = tmp_path / "cc"
    fake.write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = "-mcpu=native" ] && {{ echo "unknown flag $a" >&2; exit 1; }}; done\n'
        f'echo "$@" >> {tmp_path}/calls\nexec {real} "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("TEXTRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fastrnn.platform, "machine", lambda: "aarch64")
    assert fastrnn.library() is not None
    assert "-mcpu" not in (tmp_path / "calls").read_text()
    model = model_for()  # 10 units: the gates' vector code (8) and its scalar tail, both in plain C
    ids, lengths = batch()
    with torch.inference_mode():
        assert fastrnn.applies(model, ids)
        torch.testing.assert_close(forward(model, ids, lengths), reference(model, ids, lengths), atol=2e-6, rtol=1e-5)
    torch.manual_seed(0)
    rnn, x = torch.nn.LSTM(5, 10, batch_first=True).train(), torch.randn(6, 9, 5, requires_grad=True)
    weights = (torch.randn(6, 9, 10), torch.randn(6, 10))
    got, ref = (_outputs_and_grads(rnn, x, run, weights) for run in (fastrnn.lstm_layers, _pytorch))
    torch.testing.assert_close(got[0], ref[0], atol=2e-6, rtol=1e-5)
    for a, b in zip(got[2], ref[2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------- training
def _outputs_and_grads(rnn, x, run, weights):
    out, last = run(rnn, x)
    loss = (out * weights[0]).sum() + (last * weights[1]).sum()
    return out, last, torch.autograd.grad(loss, [x, *rnn.parameters()])


def _pytorch(rnn, x):
    out, (h, _) = rnn(x)
    dirs = 2 if rnn.bidirectional else 1
    return out, h.view(rnn.num_layers, dirs, x.shape[0], -1)[-1].transpose(0, 1).reshape(x.shape[0], -1)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (7, 9, 6, 10), (8, 31, 12, 16)])  # rows, steps, input, hidden
def test_the_training_kernel_gives_pytorchs_outputs_and_gradients(bidirectional, num_layers, shape):
    B, T, E, H = shape
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(E, H, num_layers=num_layers, batch_first=True, bidirectional=bidirectional).train()
    x = torch.randn(B, T, E, requires_grad=True)
    dirs = 2 if bidirectional else 1
    weights = (torch.randn(B, T, dirs * H), torch.randn(B, dirs * H))
    assert fastrnn.trains(rnn, x)
    ref = _outputs_and_grads(rnn, x, _pytorch, weights)
    got = _outputs_and_grads(rnn, x, fastrnn.lstm_layers, weights)
    torch.testing.assert_close(got[0], ref[0], atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got[1], ref[1], atol=2e-6, rtol=1e-5)
    for a, b in zip(got[2], ref[2]):  # the input's, then each weight's and bias's
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_the_training_kernel_projects_each_distinct_word_once_with_the_same_gradients(bidirectional, masked):
    """Each distinct word of the batch, or with a dropout mask per text each distinct word of each
    text, is projected once: outputs and gradients are those of every position's vector."""
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(30, 6, padding_idx=0)
    rnn = torch.nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=bidirectional).train()
    ids = torch.randint(0, 12, (9, 13))  # words repeat within and across texts; 0 is the padding row
    mask = (torch.rand(9, 1, 6) > 0.3).float() / 0.7 if masked else None
    weights = (torch.randn(9, 13, 16 if bidirectional else 8), torch.randn(9, 16 if bidirectional else 8))
    results = []
    for words in (None, Words(ids, embedding, mask)):
        x = embedding(ids) if mask is None else embedding(ids) * mask
        out, last = _pytorch(rnn, x) if words is None else fastrnn.lstm_layers(rnn, x, fastrnn.distinct_inputs(words, max_share=1.0))
        loss = (out * weights[0]).sum() + (last * weights[1]).sum()
        results.append((out, last, torch.autograd.grad(loss, [embedding.weight, *rnn.parameters()])))
    (ref_out, ref_last, ref_grads), (out, last, grads) = results
    torch.testing.assert_close(out, ref_out, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(last, ref_last, atol=2e-6, rtol=1e-5)
    assert not grads[0][0].any()  # the padding row learns nothing, as in PyTorch's embedding
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_distinct_words_are_projected_once_only_where_they_are_few():
    """Texts whose words are mostly new to them (short sentences, a mask per text) project every
    position: gathering the gradients back would cost more than the projection saves."""
    embedding = torch.nn.Embedding(100, 4)
    repeated = torch.tensor([[1, 2, 1, 2, 1, 2], [1, 2, 1, 2, 1, 3]])  # 3 of 12 distinct in the batch, 5 per text
    inputs, rows = fastrnn.distinct_inputs(Words(repeated, embedding))
    assert inputs.shape == (3, 4) and rows.tolist() == [[0, 1, 0, 1, 0, 1], [0, 1, 0, 1, 0, 2]]
    assert fastrnn.distinct_inputs(Words(repeated, embedding, torch.ones(2, 1, 4))) is not None  # 5 of 12
    all_new = torch.arange(1, 13).view(2, 6)
    assert fastrnn.distinct_inputs(Words(all_new, embedding)) is None
    assert fastrnn.distinct_inputs(Words(repeated, embedding, torch.ones(2, 1, 4)), max_share=0.3) is None


@pytest.mark.parametrize("embedding_dropout", [0.0, 0.3])
def test_training_a_classifier_takes_the_kernel_and_matches_pytorchs_step(monkeypatch, embedding_dropout):
    """The kernel's step and PyTorch's, from the same generator: the same dropout mask, the same
    logits and gradients."""
    model = model_for(bidirectional=True, pooling="last+max+mean", dropout=0.0, embedding_dropout=embedding_dropout).train()
    ids = torch.randint(1, 6, (6, 11))  # words repeat in each text: each distinct one projected once
    lengths = torch.full((6,), 11)  # a training batch: one length
    calls = []
    kernel = fastrnn.lstm_train
    monkeypatch.setattr("textrnn.models.training_kernel", lambda rnn, x, words: calls.append(words) or kernel(rnn, x, words))
    fast = model(ids, lengths, generator=torch.Generator().manual_seed(3))
    fast_grads = torch.autograd.grad(fast.sum(), list(model.parameters()))
    assert calls and calls[0] is not None  # no adversarial push: each distinct word projected once
    assert (calls[0].mask is None) == (embedding_dropout == 0)
    monkeypatch.setattr("textrnn.models.training_kernel", None)
    ref = model(ids, lengths, generator=torch.Generator().manual_seed(3))
    ref_grads = torch.autograd.grad(ref.sum(), list(model.parameters()))
    torch.testing.assert_close(fast, ref, atol=2e-6, rtol=1e-5)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_training_kernel_leaves_what_it_does_not_run_to_pytorch():
    x = torch.randn(2, 5, 4, requires_grad=True)
    lstm = torch.nn.LSTM(4, 6, batch_first=True).train()
    assert fastrnn.trains(lstm, x)
    assert not fastrnn.trains(torch.nn.GRU(4, 6, batch_first=True).train(), x)  # only the LSTM
    assert not fastrnn.trains(lstm.eval(), x)  # prediction has its own path
    lstm.train()
    with torch.no_grad():
        assert not fastrnn.trains(lstm, x)
    with autocast(torch.device("cpu"), torch.bfloat16):  # oneDNN's bfloat16 (AMX where the CPU has it)
        assert not fastrnn.trains(lstm, x)
    assert fastrnn.lstm_train(torch.nn.GRU(4, 6, batch_first=True).train(), x) is None
    # per position (no distinct words) on AVX-512, oneDNN's layer is the faster: the kernel leaves it
    per_position = fastrnn.lstm_train(lstm, x)
    assert (per_position is None) == ("avx512f" in cpu_flags())
    # so are the distinct words of each text under a dropout mask; those of the batch take the kernel
    embedding = torch.nn.Embedding(5, 4)
    ids = torch.tensor([[1, 2, 1, 2, 1], [2, 1, 2, 1, 2]])
    x = embedding(ids)
    assert (fastrnn.lstm_train(lstm, x, Words(ids, embedding, torch.ones(2, 1, 4))) is None) == ("avx512f" in cpu_flags())
    assert fastrnn.lstm_train(lstm, x, Words(ids, embedding)) is not None


def test_the_kernels_self_check_runs_under_inference_mode(monkeypatch):
    """A server's first prediction builds the kernel inside torch.inference_mode: the self-check's
    training half must still get gradients there."""
    monkeypatch.setattr(fastrnn, "_lib", False)  # not built yet in this process, as at a server's start
    with torch.inference_mode():
        assert fastrnn.library() is not None


@pytest.mark.parametrize("shape", [(5, 7, 9), (1, 1, 3), (3, 20, 128), (2, 40, 17)])
def test_max_pooling_by_the_kernel_gives_torch_max_s_values_and_gradients(shape):
    """Values and gradients bit for bit those of torch.max with its indices: ties go to the first
    position, a NaN wins and stays, -inf (a masked position) never wins over a real value."""
    if fastrnn.library() is None:
        pytest.skip("no C compiler: the kernel is not built")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if shape == (5, 7, 9):
        x[0, 1], x[0, 3] = 100.0, 100.0  # a tie between two positions
        x[1, 2, 4], x[2, :, 1], x[3, 5, 2] = float("nan"), float("-inf"), float("inf")
        x[4, 4:, :] = float("-inf")  # a text shorter than the batch, masked as masked_pool does
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    values = fastrnn.max_over_time(ours)
    assert values is not None
    expected = theirs.max(1).values
    grad = torch.randn_like(expected)
    assert torch.equal(values.nan_to_num(), expected.nan_to_num()) and torch.equal(values.isnan(), expected.isnan())
    assert torch.equal(torch.autograd.grad(values, ours, grad)[0], torch.autograd.grad(expected, theirs, grad)[0])


def test_max_pooling_leaves_what_the_kernel_does_not_run_to_torch():
    assert fastrnn.max_over_time(torch.randn(2, 3, 4, dtype=torch.float64)) is None
    assert fastrnn.max_over_time(torch.randn(2, 0, 4)) is None
    assert fastrnn.max_over_time(torch.randn(2, 4)) is None
