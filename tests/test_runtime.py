"""The CPU as textrnn sees it, and the TEXTRNN_CPU=avx2 switch that makes any x86-64 CPU behave
as an AVX2 laptop's (no AVX-512, no native bfloat16) would."""

import json
import os
import platform
import subprocess
import sys

import pytest

from textrnn import runtime

X86 = platform.machine().lower() in ("x86_64", "amd64")

PROBE = """
import json, os, textrnn, torch
from textrnn import runtime
lstm = torch.nn.LSTM(8, 8, batch_first=True)
try:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lstm(torch.randn(2, 3, 8))
    onednn_bf16_lstm = "ran"
except RuntimeError as e:
    onednn_bf16_lstm = str(e).split(".")[0]
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": runtime.cpu_has_native_bf16(),
                  "avx512f": "avx512f" in runtime.cpu_flags(), "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                  "description": runtime.cpu_description(), "lstm": onednn_bf16_lstm}))
"""


def probe(**env) -> dict:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TEXTRNN_CPU", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
    }
    done = subprocess.run([sys.executable, "-c", PROBE], env={**environ, **env}, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not X86 or "avx2" not in runtime.cpu_info()[1], reason="an x86-64 CPU with AVX2 is needed")
def test_the_avx2_switch_caps_every_library_as_an_avx2_cpu_would():
    seen = probe(TEXTRNN_CPU="avx2")
    assert seen["capability"] == "AVX2" and seen["onednn"] == "AVX2"
    assert seen["native_bf16"] is False and seen["avx512f"] is False
    assert seen["description"]["profile"] == "avx2" and "avx512_bf16" not in seen["description"]["flags_in_use"]
    # what a Zen 3 does with a bfloat16 LSTM, which is why training in bfloat16 is refused there
    assert seen["lstm"].startswith("could not create a primitive descriptor")


def test_without_the_switch_the_cpu_is_taken_as_it_is():
    seen = probe()
    assert seen["onednn"] is None and seen["description"]["profile"] == "native"
    assert seen["native_bf16"] == any(f in runtime.cpu_info()[1] for f in runtime.NATIVE_BF16_FLAGS)
    assert seen["description"]["model"] and seen["description"]["cores"] >= 1
    if seen["native_bf16"]:
        assert seen["lstm"] == "ran"


def test_an_unknown_profile_is_the_cpu_as_it_is(monkeypatch):
    monkeypatch.setenv("TEXTRNN_CPU", "pentium")
    assert runtime.cpu_profile() == "native"
    assert runtime.cpu_flags() == runtime.cpu_info()[1]


def test_denormals_are_flushed_inside_and_restored_after():
    """The trainer and prediction flush denormals to zero (as TensorFlow does; a recurrent
    backward pass is many times slower with them on some CPUs), but leave the caller's thread as it
    was: nested uses keep the outer one's setting."""
    import numpy as np
    import torch

    tiny = np.array([1e-39], dtype=np.float32)
    as_tensor = lambda: float(torch.from_numpy(tiny).mul(1.0)[0])  # noqa: E731  (a denormal through torch)
    assert as_tensor() != 0.0
    with runtime.denormals_flushed():
        assert as_tensor() == 0.0
        with runtime.denormals_flushed():
            assert as_tensor() == 0.0
        assert as_tensor() == 0.0  # the inner exit left the outer setting alone
    assert as_tensor() != 0.0
    from conftest import tiny_sentiment
    from textrnn import TextClassifier

    texts, labels = tiny_sentiment(4)
    clf = TextClassifier(embedding_dim=8, hidden_size=8, epochs=1, min_freq=1).fit(texts, labels, progress=False)
    clf.predict(texts)
    assert as_tensor() != 0.0  # fit and predict left this thread as they found it
