"""runtime.device: auto/cpu/cuda/cuda:N, checked early, with one-line errors when there is no GPU.

This machine has no GPU: "auto" must resolve to the CPU and "cuda" must fail clearly. On a machine
with one the GPU tests below run instead (the CPU-only ones are skipped).
"""

import csv

import numpy as np
import pytest
import torch

import textrnn
from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.cli import main
from textrnn.config import Config, RuntimeConfig
from textrnn.errors import ConfigError
from textrnn.runtime import resolve_device

NO_GPU = not torch.cuda.is_available()
FAST = dict(embedding_dim=8, hidden_size=8, epochs=3, batch_size=8, min_freq=1, early_stopping_patience=None)


def test_auto_is_the_cpu_without_a_gpu_and_a_gpu_with_one():
    assert resolve_device("auto").type == ("cpu" if NO_GPU else "cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    assert RuntimeConfig().device == "auto"


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "CUDA", "cpu:0", "", "cuda:-1"])
def test_malformed_devices_are_refused_by_name(spec):
    with pytest.raises(ConfigError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        RuntimeConfig(device=spec)
    with pytest.raises(ConfigError, match="Received: device="):
        resolve_device(spec)


@pytest.mark.skipif(not NO_GPU, reason="a GPU is visible")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_one_line_config_error(spec):
    RuntimeConfig(device=spec)  # a valid setting: a model trained on a GPU loads anywhere
    with pytest.raises(ConfigError) as e:
        resolve_device(spec)
    message = str(e.value)
    assert "\n" not in message and f"runtime.device={spec!r}" in message and "not available" in message
    assert "'cpu'" in message  # and says what to use instead


@pytest.mark.skipif(not NO_GPU, reason="a GPU is visible")
def test_cli_train_on_cuda_without_a_gpu_fails_in_one_line_before_any_work(tmp_path, capsys):
    texts, labels = tiny_sentiment()
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels)])
    code = main(["train", "--train", str(tmp_path / "t.csv"), "-o", str(tmp_path / "run"), "--set", "runtime.device=cuda", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err and "CUDA" in err
    assert not (tmp_path / "run").exists()


def test_fit_and_load_on_the_chosen_device(tmp_path):
    texts, labels = tiny_sentiment()
    device = "cpu" if NO_GPU else "cuda"
    clf = TextClassifier(device=device, **FAST).fit(texts, labels, progress=False)
    assert next(clf.model_.parameters()).device.type == device
    assert clf.config_.runtime.device == device
    proba = clf.predict_proba(texts)
    clf.save(tmp_path / "m")
    for where in ("cpu", "auto"):
        again = textrnn.load(tmp_path / "m", device=where)
        got, want = next(again.model_.parameters()).device, resolve_device(where)
        assert got.type == want.type and want.index in (None, got.index)  # "cuda" places tensors on cuda:0
        np.testing.assert_allclose(again.predict_proba(texts), proba, atol=1e-5)
    if NO_GPU:
        with pytest.raises(ConfigError, match="CUDA"):
            textrnn.load(tmp_path / "m", device="cuda")


def test_device_is_saved_in_the_config_and_free_on_resume():
    from textrnn.checkpoint import RUNTIME_KEYS

    c = Config().override(["runtime.device=cpu"])
    assert Config.from_dict(c.to_dict()).runtime.device == "cpu"
    assert Config().override(["train.device=cpu"]).runtime.device == "cpu"  # the old name still works
    assert "device" not in RUNTIME_KEYS  # a run stopped on one device may continue on another


@pytest.mark.skipif(NO_GPU, reason="needs a GPU")
def test_training_on_the_gpu_matches_the_cpu_closely():
    texts, labels = tiny_sentiment()
    settings = dict(FAST, dropout=0.0, embedding_dropout=0.0)
    a = TextClassifier(device="cpu", **settings).fit(texts, labels, progress=False)
    b = TextClassifier(device="cuda", **settings).fit(texts, labels, progress=False)
    np.testing.assert_allclose(a.predict_proba(texts), b.predict_proba(texts), atol=1e-3)
