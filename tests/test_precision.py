"""runtime.precision (float32, bfloat16, auto) and CPU prediction with one batch per core."""

import warnings

import numpy as np
import pytest
import torch

from conftest import needs_native_bf16, tiny_sentiment
from textrnn import TextClassifier, pieces, runtime, trainer
from textrnn.config import RuntimeConfig
from textrnn.errors import ConfigError
from textrnn.inference import predict_logits
from textrnn.runtime import compute_dtype, inference_dtype

SETTINGS = dict(
    embedding_dim=16,
    hidden_size=16,
    epochs=15,
    batch_size=8,
    learning_rate=0.02,
    schedule="constant",
    min_freq=1,
    dropout=0.0,
    embedding_dropout=0.0,
    early_stopping_patience=None,
)
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_bfloat16_only_on_a_cpu_that_computes_it(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert compute_dtype(CPU, "auto") == torch.bfloat16
    assert compute_dtype(CPU, "bfloat16") == torch.bfloat16
    assert compute_dtype(CUDA, "auto") == torch.float32  # launch-bound there: nothing to gain
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert compute_dtype(CPU, "auto") == torch.float32 and compute_dtype(CPU, "float32") == torch.float32


def test_bfloat16_on_a_cpu_without_it_stops_training_and_predicts_in_float32(monkeypatch, caplog):
    """oneDNN's bfloat16 LSTM does not run on AVX2: training says so in one line; a model trained
    in bfloat16 elsewhere still predicts here, in float32, with one line saying so."""
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(
        ConfigError,
        match=r"^runtime.precision='bfloat16' needs native bfloat16, but this CPU .* "
        r"Use runtime.precision='auto'",
    ) as e:
        compute_dtype(CPU, "bfloat16")
    assert "\n" not in str(e.value)
    monkeypatch.setattr(runtime, "_warned", set())
    with caplog.at_level("WARNING", logger="textrnn"):
        assert inference_dtype(CPU, "bfloat16") == torch.float32
        assert inference_dtype(CPU, "bfloat16") == torch.float32
    assert len([r for r in caplog.records if "predicts in float32" in r.getMessage()]) == 1
    texts, labels = tiny_sentiment(4)
    with pytest.raises(ConfigError, match="needs native bfloat16"):
        TextClassifier(**{**SETTINGS, "epochs": 1}, precision="bfloat16").fit(texts, labels, progress=False)
    clf = TextClassifier(**{**SETTINGS, "epochs": 1}, precision="float32").fit(texts, labels, progress=False)
    clf.config_.runtime.precision = "bfloat16"  # as a model trained on a CPU with bfloat16 is saved
    assert clf.predict_proba(texts).shape == (len(texts), 2)


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"precision='fp16'"):
        RuntimeConfig(precision="fp16")
    with pytest.raises(ConfigError, match=r"precision='half'"):
        compute_dtype(CPU, "half")


@pytest.fixture(scope="module")
def pair():
    texts, labels = tiny_sentiment()
    f32 = TextClassifier(**SETTINGS, precision="float32").fit(texts, labels, progress=False)
    return texts, labels, f32


@needs_native_bf16
def test_bfloat16_trains_float32_weights_as_well(pair):
    texts, labels, f32 = pair
    b16 = TextClassifier(**SETTINGS, precision="bfloat16").fit(texts, labels, progress=False)
    assert all(p.dtype == torch.float32 for p in b16.model_.parameters())  # autocast: the weights stay float32
    assert b16.history_[-1]["accuracy"] == 1.0 == f32.history_[-1]["accuracy"]
    assert b16.predict(texts) == labels


@needs_native_bf16
def test_bfloat16_predictions_are_float32_ones_up_to_its_rounding(pair):
    texts, _, f32 = pair
    seqs = f32.encode(texts)
    a = predict_logits(f32.model_, seqs, precision="float32")
    b = predict_logits(f32.model_, seqs, precision="bfloat16")
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, atol=0.05 * max(1.0, np.abs(a).max()))
    assert ((a > 0) == (b > 0)).mean() >= 0.95


def test_batches_side_by_side_give_each_text_its_own_answer(pair):
    """Many small batches over a pool of one-core workers: in input order, and the same logits as
    each text alone, whatever the thread count (which is restored afterwards)."""
    texts, _, f32 = pair
    texts = texts + ["good " * n + "awful" for n in range(1, 40)]
    seqs = f32.encode(texts)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        together = predict_logits(f32.model_, seqs, batch_size=4, precision="float32")
        assert torch.get_num_threads() == 2
        alone = np.concatenate([predict_logits(f32.model_, [s], precision="float32") for s in seqs])
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert predict_logits(f32.model_, [], precision="float32").shape == (0, 1)


def _fit(**settings):
    texts, labels = tiny_sentiment(20)
    fit_args = settings.pop("fit", {})
    base = dict(
        embedding_dim=8,
        hidden_size=8,
        epochs=2,
        batch_size=16,
        min_freq=1,
        early_stopping_patience=None,
        learning_rate=0.01,
        precision="float32",
    )
    return TextClassifier(**{**base, **settings}).fit(texts, labels, progress=False, **fit_args)


def _same(a, b, **tol):
    for (name, x), y in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name, **tol)


def test_pieces_side_by_side_train_the_weights_of_the_whole_batch(monkeypatch):
    """Two one-core workers, one piece of 8 texts each, gradients summed: float32 weights equal
    to the whole batch's on both cores (up to summation order)."""
    whole = _fit(dropout=0.0, embedding_dropout=0.0, micro_batch_tokens=None)
    monkeypatch.setattr(pieces, "workers", lambda *a: 2)
    side_by_side = _fit(dropout=0.0, embedding_dropout=0.0, micro_batch_tokens=None)
    _same(whole, side_by_side, atol=2e-5, rtol=1e-4)
    assert whole.history_[-1]["loss"] == pytest.approx(side_by_side.history_[-1]["loss"], rel=1e-4)


@pytest.mark.parametrize("precision", ["float32", pytest.param("bfloat16", marks=needs_native_bf16)])
def test_pieces_side_by_side_are_reproducible_with_dropout(monkeypatch, precision):
    """Each piece draws its dropout masks from its own generator, seeded in order: the same run
    every time, whichever thread finishes first; and a different one from another seed."""
    monkeypatch.setattr(pieces, "workers", lambda *a: 2)
    settings = dict(dropout=0.3, embedding_dropout=0.2, num_layers=2, precision=precision)
    a, b = _fit(**settings), _fit(**settings)
    _same(a, b, atol=0, rtol=0)
    c = _fit(**settings, seed=1)
    assert not torch.equal(a.model_.head.weight, c.model_.head.weight)


def test_a_run_with_pieces_side_by_side_resumes_bit_for_bit(monkeypatch, tmp_path):
    monkeypatch.setattr(pieces, "workers", lambda *a: 2)
    settings = dict(dropout=0.3, embedding_dropout=0.2, checkpoint_every=2, epochs=3)
    whole = _fit(**settings)
    real, calls = trainer.collate, {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "collate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(**settings, fit={"checkpoint_dir": tmp_path})
    monkeypatch.setattr(trainer, "collate", real)
    resumed = _fit(**settings, fit={"checkpoint_dir": tmp_path, "resume": True})
    _same(whole, resumed, atol=0, rtol=0)


def test_predictions_from_several_threads_at_once_restore_the_thread_count(pair):
    """A server predicts for several requests at once: each pool pins torch to one thread, and
    the thread count comes back when the last one closes, whatever the order."""
    from concurrent.futures import ThreadPoolExecutor

    texts, _, f32 = pair
    seqs = f32.encode(texts * 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = predict_logits(f32.model_, seqs, batch_size=8, precision="float32")
        with ThreadPoolExecutor(4) as requests:
            got = list(requests.map(lambda _: predict_logits(f32.model_, seqs, batch_size=8, precision="float32", workers=2), range(8)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    for g in got:
        np.testing.assert_allclose(g, expected, atol=1e-5)


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_the_optimizer_step_split_across_workers_is_the_same_step(cls):
    from concurrent.futures import ThreadPoolExecutor

    from textrnn.optim import step_in_parts as _step_in_parts

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(3001, 32), torch.nn.Linear(32, 3))
        groups = [{"params": model[0].parameters(), "lr": 0.01}, {"params": model[1].parameters()}]
        return model, cls(groups, lr=0.003, weight_decay=0.01, fused=True)

    (a, opt_a), (b, opt_b) = make(), make()
    sched = torch.optim.lr_scheduler.LambdaLR(opt_b, lambda step: 0.9**step)
    sched_a = torch.optim.lr_scheduler.LambdaLR(opt_a, lambda step: 0.9**step)
    with ThreadPoolExecutor(2) as pool:
        for step in range(3):
            x = torch.randint(0, 3001, (16, 5))
            for model in (a, b):
                model.zero_grad()
                model(x).sum().backward()
            opt_a.step()
            done = _step_in_parts(opt_b, pool, 2)
            assert done == (step > 0)  # the first step makes the state
            if not done:
                opt_b.step()
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
                sched.step()
                sched_a.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-7)
    assert int(opt_b.state[b[0].weight]["step"]) == 3
    assert _step_in_parts(opt_b, None, 2) is False  # no pool: optimizer.step() does it
    assert _step_in_parts(torch.optim.SGD(b.parameters(), lr=0.1), pool, 2) is False
