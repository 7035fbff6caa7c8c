"""Several processes: ``torchrun --nproc-per-node 2 -m textrnn train ...`` on loopback, gloo, CPU.

Two processes with batch 16 each make a global batch of 32: the run must reach the test accuracy
of one process with batch 32 (within a small tolerance), write one run directory whose artifact
loads and predicts like any other, and continue bit for bit after all processes are killed.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import textrnn
from conftest import slow_cli_child
from textrnn.cli import main
from textrnn.distributed import shard

SRC = Path(__file__).resolve().parents[1] / "src"
FLAGS = [
    "--set",
    "model.embedding_dim=16",
    "--set",
    "model.hidden_size=16",
    "--set",
    "train.epochs=3",
    "--set",
    "train.learning_rate=0.02",
    "--set",
    "train.schedule=constant",
    "--set",
    "text.min_freq=1",
    "--set",
    "runtime.num_threads=1",
    "--set",
    "train.early_stopping_patience=none",
    "--set",
    "runtime.checkpoint_every=4",
    "--quiet",
]
# The child for the kill test: the real CLI under torchrun, each batch slowed down.
SLOW_CHILD = slow_cli_child(0.1)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def reviews(n: int, seed: int) -> list[tuple[str, str]]:
    """Short reviews whose label is carried by a few sentiment words among neutral ones."""
    pos = "good great excellent wonderful loved superb fine enjoyable".split()
    neg = "bad awful terrible boring hated poor dull weak".split()
    filler = "the a film movie plot acting and it was with story actors scenes music very".split()
    r, rows = random.Random(seed), []
    for i in range(n):
        words = [r.choice(filler) for _ in range(r.randint(5, 25))]
        for _ in range(r.randint(1, 3)):
            words.insert(r.randrange(len(words) + 1), r.choice(pos if i % 2 else neg))
        rows.append((" ".join(words), "pos" if i % 2 else "neg"))
    return rows


def write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], script: str | None = None) -> list[str]:
    target = [script] if script else ["-m", "textrnn"]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *target,
        *args,
    ]


def failure(stderr: str) -> str:
    """The workers' own messages, not torchrun's summary of them."""
    mine = [l for l in stderr.splitlines() if "textrnn" in l and "error" in l or "Error" in l]
    return "\n".join(mine[-10:]) or stderr[-3000:]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # the field after the state is the parent's id
                found.append(int(entry.name))
    return found


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    train, test = write_csv(d / "train.csv", reviews(400, 1)), write_csv(d / "test.csv", reviews(200, 2))
    data = ["--train", str(train), "--test", str(test)]
    two = subprocess.run(
        torchrun(["train", *data, "-o", str(d / "two"), *FLAGS, "--set", "train.batch_size=16"]),
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert two.returncode == 0, failure(two.stderr)
    assert main(["train", *data, "-o", str(d / "one"), *FLAGS, "--set", "train.batch_size=32"]) == 0
    return d, data, two


def test_shard_gives_every_process_as_many_batches_and_drops_none():
    for n in range(0, 12):
        batches = list(range(n))
        for world in (1, 2, 3, 4):
            shares = [shard(batches, r, world) for r in range(world)]
            assert len({len(s) for s in shares}) == 1  # no collective waits for a finished process
            assert set().union(*map(set, shares)) == set(batches)
            assert sum(map(len, shares)) == (n + (-n % world) if n else 0)
    assert shard([5, 6, 7], 0, 1) == [5, 6, 7]


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    d, _, _ = runs
    two, one = (json.loads((d / name / "metrics.json").read_text()) for name in ("two", "one"))
    assert two["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch_size": 32}
    assert "distributed" not in one and one["device"] == two["device"] == "cpu"
    assert one["test_accuracy"] > 0.9  # the task is learnt ...
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.05  # ... as well by both
    assert len(two["history"]) == len(one["history"]) == 3
    assert two["history"][-1]["val_accuracy"] >= one["history"][-1]["val_accuracy"] - 0.1


def test_one_run_directory_written_once_and_its_artifact_is_a_plain_one(runs):
    d, _, result = runs
    assert sorted(p.name for p in (d / "two").iterdir()) == sorted(p.name for p in (d / "one").iterdir())
    assert not (d / "two" / "checkpoint").exists()
    assert sorted(p.name for p in (d / "two" / "model").iterdir()) == ["config.json", "labels.json", "vocab.txt", "weights.safetensors"]
    a, b = (load_file(str(d / name / "model" / "weights.safetensors")) for name in ("two", "one"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}  # the unwrapped module's names
    assert (d / "two" / "model" / "vocab.txt").read_text() == (d / "one" / "model" / "vocab.txt").read_text()
    clf = textrnn.load(d / "two" / "model")
    assert clf.predict(["a great and wonderful film", "a boring and awful film"]) == ["pos", "neg"]
    assert result.stdout.count("model: ") == 1  # rank 0 alone reports
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_resume_after_every_process_is_killed(runs, tmp_path, capsys):
    d, data, _ = runs
    run = tmp_path / "run"
    (tmp_path / "child.py").write_text(SLOW_CHILD)
    child = subprocess.Popen(
        torchrun(["train", *data, "-o", str(run), *FLAGS, "--set", "train.batch_size=16"], script=str(tmp_path / "child.py")),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = run / "checkpoint" / "state.json"
    deadline = time.time() + 60
    while time.time() < deadline and not state.exists() and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    # torchrun starts each worker in a session of its own: kill them with it, all at once
    for pid in [*children(child.pid), child.pid]:
        os.kill(pid, signal.SIGKILL)
    child.wait()
    saved = json.loads(state.read_text())
    assert saved["world_size"] == 2 and not saved["finished"], "the run ended before it could be killed"
    assert {"rng.torch", "rng.torch.rank1"} <= set(load_file(str(run / "checkpoint" / saved["tensors"])))
    # one process cannot continue what two began: the batches and the schedule depend on it
    assert main(["train", "--resume", str(run)]) == 2
    assert "2 process(es)" in capsys.readouterr().err
    resumed = subprocess.run(torchrun(["train", "--resume", str(run), "--quiet"]), env=env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, failure(resumed.stderr)
    a, b = load_file(str(run / "model" / "weights.safetensors")), load_file(str(d / "two" / "model" / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit the uninterrupted run's model


def test_a_process_group_that_cannot_be_joined_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    train = write_csv(tmp_path / "t.csv", reviews(20, 0))
    assert main(["train", "--train", str(train), "-o", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Could not join the process group" in err and "torchrun" in err
    assert not (tmp_path / "run").exists()


def test_batches_trained_at_one_step_have_similar_lengths_and_one_process_is_unchanged():
    import numpy as np

    from textrnn.batching import training_batches

    lengths = np.random.default_rng(1).integers(1, 400, size=1003)

    def original(rng):  # the single-process order before processes were grouped
        order = rng.permutation(len(lengths))
        batches = []
        for start in range(0, len(order), 8 * 50):
            part = order[start : start + 8 * 50]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches.extend(part[i : i + 8] for i in range(0, len(part), 8))
        return [batches[i] for i in rng.permutation(len(batches))]

    a, b = training_batches(lengths, 8, np.random.default_rng(3)), original(np.random.default_rng(3))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    paired = training_batches(lengths, 8, np.random.default_rng(3), group=2)
    assert sorted(np.concatenate(paired).tolist()) == list(range(len(lengths)))  # each text once
    shares = [shard(paired, r, 2) for r in range(2)]
    gap = np.mean([abs(int(lengths[x].min()) - int(lengths[y].min())) for x, y in zip(*shares)])
    random_gap = np.mean([abs(int(lengths[x].min()) - int(lengths[y].min())) for x, y in zip(b[::2], b[1::2])])
    assert gap < random_gap / 5  # the two batches of a step cost about the same


def test_virtual_adversarial_and_adversarial_training_run_under_two_processes(runs):
    """Several passes a step, only the last through DDP's wrapper: the gradients still all-reduce."""
    d, data, _ = runs
    extra = ["--set", "train.vat=1.0", "--set", "train.adversarial=1.0", "--set", "train.batch_size=16"]
    done = subprocess.run(
        torchrun(["train", *data, "-o", str(d / "vat"), *FLAGS, *extra]), env=env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, failure(done.stderr)
    metrics = json.loads((d / "vat" / "metrics.json").read_text())
    assert metrics["distributed"]["world_size"] == 2 and metrics["test_accuracy"] > 0.85
    assert metrics["config"]["train"]["vat"] == 1.0
