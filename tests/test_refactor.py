"""Behaviour kept through the redesign (issue 14): a fixed small CPU training run gives, bit for
bit, the weights and predictions recorded before it (tests/fixtures/make_fixtures.py, at commit
306926f; recorded again when float32 pieces began to run side by side, see make_fixtures.py), and a
model folder written by the code before the redesign still loads and predicts the same.

Bit for bit holds on the CPU the record was made on, in each profile (float32 sums run in an
order that depends on the vector unit: AVX-512 and AVX2 kernels differ in the last bits). On
another CPU the same run is held to float32 rounding instead.
"""

import json
import sys
from pathlib import Path

import numpy as np

import textrnn
from textrnn import runtime

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_fixtures  # noqa: E402


def _same_cpu(recorded: dict) -> bool:
    now = runtime.cpu_description()
    keys = ("model", "vendor", "family", "model_number", "flags", "profile", "torch_cpu_capability")
    return all(recorded.get(k) == now.get(k) for k in keys)


def test_a_fixed_training_run_gives_the_recorded_weights_and_predictions():
    path = FIXTURES / f"reference-run-{runtime.cpu_profile()}.json"
    recorded = json.loads(path.read_text())
    run = make_fixtures.reference_run()
    got = run["record"]
    assert got["settings"] == recorded["settings"]
    if _same_cpu(recorded["cpu"]):
        assert got["weights_sha256"] == recorded["weights_sha256"]
        assert got["probs_sha256"] == recorded["probs_sha256"]
        assert got["history_loss"] == recorded["history_loss"]
    else:  # another vector unit: the same run up to float32 rounding
        arrays = np.load(path.with_suffix(".npz"))
        for name, value in run["weights"].items():
            np.testing.assert_allclose(value, arrays[name], atol=2e-4, rtol=1e-3, err_msg=name)
        np.testing.assert_allclose(run["probs"], arrays["probs"], atol=1e-4)
        np.testing.assert_allclose(got["history_loss"], recorded["history_loss"], rtol=1e-5)


def test_a_model_folder_of_format_1_still_loads_and_predicts_the_same():
    clf = textrnn.load(FIXTURES / "model-format1")
    texts, labels = make_fixtures.corpus()
    expected = np.load(FIXTURES / "model-format1-probs.npy")
    probs = clf.predict_proba(texts)
    recorded = json.loads((FIXTURES / "reference-run-native.json").read_text())
    if _same_cpu(recorded["cpu"]):
        np.testing.assert_array_equal(probs, expected)
    else:
        np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert clf.classes_ == ["neg", "pos"]
