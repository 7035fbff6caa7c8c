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
    result = load.run(
        model_dir, requests=300, concurrency=8, warmup=30, time_limit=120, pool_size=300, work_dir=tmp_path, progress=lambda *a: None
    )
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
    cpu = result["cpu_during_timed_run"]
    assert cpu["server_cpu_seconds"] > 0 and cpu["client_cpu_seconds"] > 0 and cpu["server_cpu_ms_per_request"] > 0
    assert result["config"]["precision"] in ("float32", "bfloat16")


def test_the_comparison_of_two_runs_and_the_machine_description():
    load = _load_benchmark()

    def result(rps, median, growth, passed=True):
        latency = {kind: {"median_ms": median, "p99_ms": 3 * median} for kind in ("all", *load.MIX)}
        return {
            "timed": {"requests_per_second": rps, "texts_predicted_per_second": 5 * rps, "latency": latency},
            "rss": {"growth_after_warmup": growth, "tolerance": 0.15, "after_kb": 500 * 1024},
            "passed": passed,
        }

    c = load.compare(result(40.0, 800.0, 0.16, passed=False), result(160.0, 100.0, 0.02))
    assert c["requests_per_second"] == {"before": 40.0, "after": 160.0, "ratio": 4.0}
    assert c["median_ms"]["single"] == {"before": 800.0, "after": 100.0, "speedup": 8.0}
    assert c["rss_growth_after_warmup"] == {"before": 0.16, "after": 0.02, "limit": 0.15}
    assert c["passed"] == {"before": False, "after": True}
    use = load.cpu_use(
        {"server": 1.0, "client": 2.0, "machine": 10.0}, {"server": 3.0, "client": 3.0, "machine": 16.0}, requests=100, seconds=4.0
    )
    assert use["server_cpu_seconds"] == 2.0 and use["other_processes_cpu_seconds"] == 3.0
    assert use["server_cpu_ms_per_request"] == 20.0 and use["client_cores_busy"] == 0.25 and use["machine_cores_busy"] == 1.5
    machine = load.environment()
    assert set(machine["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert all(isinstance(v, bool) for v in machine["cpu_flags"].values())
