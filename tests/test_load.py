"""The load benchmark's code path at a small scale: ``textrnn serve`` in a real subprocess on
127.0.0.1, a few hundred mixed requests (single, batch, explain, malformed) at concurrency 8.
The 5,000-request run with its figures is ``python benchmarks/load.py``."""

import importlib.util
import sys

import pytest

pytest.importorskip("fastapi", reason="serving needs FastAPI: pip install 'textrnn[serve]'")
pytest.importorskip("uvicorn", reason="serving needs uvicorn: pip install 'textrnn[serve]'")
pytest.importorskip("httpx", reason="the load client is httpx")

from conftest import REPO


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("load_benchmark", REPO / "benchmarks" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_real_server_under_concurrent_mixed_load_answers_everything_correctly(tmp_path):
    load = _load_benchmark()
    model_dir = load.train_model(tmp_path, n_texts=200, epochs=2)
    result = load.run(model_dir, requests=300, concurrency=8, warmup=30, time_limit=120, pool_size=300,
                      work_dir=tmp_path, progress=lambda *a: None)
    timed, checks = result["timed"], result["checks"]
    assert timed["answered"] == 300 and timed["not_sent"] == 0
    assert timed["server_errors_5xx"] == 0, timed["wrong_examples"]
    assert timed["transport_errors"] == 0, timed["transport_error_types"]
    assert timed["4xx_on_well_formed"] == 0 and timed["4xx_on_malformed"] == timed["malformed_sent"] > 0
    assert timed["wrong_answers"] == 0, timed["wrong_examples"]
    for kind in load.MIX:  # every kind was sent and got its own status
        assert timed["latency"][kind]["statuses"] == {str(load.EXPECTED_STATUS[kind]): timed["latency"][kind]["count"]}
    assert checks["server_still_healthy"] and checks["no_traceback_in_server_log"], result["server_log_tail"]
    assert checks["listens_on_loopback_only"], result["config"]["server"]["listening_on"]
    assert result["config"]["server"]["host"] == "127.0.0.1"
    assert result["rss"]["after_kb"] > 0 and result["rss"]["samples_during"]  # sampled; flatness is the benchmark's
