"""Interrupted training: checkpoints, --resume after SIGKILL and Ctrl-C, divergence, full disks.

The subprocess tests run the real CLI in a child slowed down per batch (so a kill lands mid-epoch,
after a checkpoint exists), then resume in this process and compare the final weights with an
uninterrupted run: bitwise, since on CPU with one thread every kernel here is deterministic.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import textrnn
import textrnn.pieces as P
import textrnn.trainer as T
from conftest import slow_cli_child, tiny_sentiment
from textrnn import TextClassifier
from textrnn.cli import main
from textrnn.errors import CheckpointError, TextRNNError

SRC = Path(__file__).resolve().parents[1] / "src"
# 48 training rows / batch 4 = 12 steps an epoch; a checkpoint every 5 steps and at each epoch end.
RUN_FLAGS = [
    "--set",
    "model.embedding_dim=8",
    "--set",
    "model.hidden_size=8",
    "--set",
    "model.dropout=0.3",
    "--set",
    "train.epochs=3",
    "--set",
    "train.batch_size=4",
    "--set",
    "runtime.checkpoint_every=5",
    "--set",
    "runtime.num_threads=1",
    "--set",
    "train.early_stopping_patience=none",
    "--set",
    "train.adversarial=0",  # one loss a step: the step counts below are loss calls
    "--set",
    "text.min_freq=1",
    "--set",
    "data.validation_split=0.2",
    "--quiet",
]
# The child: the real CLI, each batch slowed down so the parent can interrupt it mid-epoch.
CHILD = slow_cli_child(0.05)


def write_data(path: Path) -> Path:
    texts, labels = tiny_sentiment(30)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return path


def weights(run: Path) -> dict:
    return load_file(str(run / "model" / "weights.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and the data it was trained on."""
    d = tmp_path_factory.mktemp("ref")
    data = write_data(d / "train.csv")
    assert main(["train", "--train", str(data), "-o", str(d / "run"), *RUN_FLAGS]) == 0
    return data, d / "run"


def read_state(run: Path) -> dict | None:
    try:
        return json.loads((run / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def start_child(data: Path, run: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, "train", "--train", str(data), "-o", str(run), *RUN_FLAGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_mid_epoch_checkpoint(child: subprocess.Popen, run: Path, min_epoch: int = 2) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = read_state(run)
        if state and state["epoch"] >= min_epoch and not state["epoch_done"]:
            return state
        if child.poll() is not None:
            raise AssertionError(f"the child ended before a mid-epoch checkpoint: {child.communicate()}")
        time.sleep(0.01)
    child.kill()
    raise AssertionError("no mid-epoch checkpoint within 120 s")


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(reference, tmp_path, capsys):
    data, ref = reference
    run = tmp_path / "run"
    child = start_child(data, run)
    try:
        state = wait_for_mid_epoch_checkpoint(child, run)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert 0 < state["batch"] < state["steps_per_epoch"]
    assert not (run / "model").exists()  # killed before the end: no model, and no half of one
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert_same_weights(weights(run), weights(ref))
    ours = json.loads((run / "history.json").read_text())
    theirs = json.loads((ref / "history.json").read_text())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "best"):
        assert [r[key] for r in ours] == [r[key] for r in theirs], key
    assert not (run / "checkpoint").exists()  # finished: nothing left to resume
    assert main(["train", "--resume", str(run)]) == 2
    assert "has finished" in capsys.readouterr().err


def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(reference, tmp_path, capsys):
    data, ref = reference
    run = tmp_path / "run"
    child = start_child(data, run)
    try:
        before = wait_for_mid_epoch_checkpoint(child, run, min_epoch=1)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert f"textrnn train --resume {run}" in err.strip().splitlines()[-1]
    after = read_state(run)  # written on the way out (or, if Ctrl-C came during a save, that one)
    assert after["step"] >= before["step"] and "checkpoint saved in" in err
    if not after["epoch_done"]:  # the usual case: stopped mid-epoch, at the step it names
        assert f"batch {after['batch']} of 12" in err
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert_same_weights(weights(run), weights(ref))


FAST = dict(
    embedding_dim=8, hidden_size=8, epochs=2, batch_size=4, min_freq=1, checkpoint_every=5, num_threads=1, early_stopping_patience=None
)


@pytest.mark.parametrize("optimizer,schedule", [("adam", "onecycle"), ("sgd", "linear"), ("rmsprop", "constant")])
def test_resume_in_process_is_bitwise_for_each_optimizer(tmp_path, monkeypatch, optimizer, schedule):
    """A crash at an arbitrary batch (here: an exception from collate at batch 13) and resume."""
    texts, labels = tiny_sentiment(20)  # 30 training rows: 8 steps an epoch
    settings = {**FAST, "optimizer": optimizer, "schedule": schedule, "dropout": 0.3}
    whole = TextClassifier(**settings).fit(texts, labels, validation_split=0.25, progress=False)
    calls = {"n": 0}
    real = T.collate

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "collate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        TextClassifier(**settings).fit(texts, labels, validation_split=0.25, progress=False, checkpoint_dir=tmp_path)
    monkeypatch.setattr(T, "collate", real)
    resumed = TextClassifier(**settings).fit(texts, labels, validation_split=0.25, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert_same_weights(whole.model_.state_dict(), resumed.model_.state_dict())
    assert [r["loss"] for r in whole.history_] == [r["loss"] for r in resumed.history_]


def test_python_api_trains_without_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    texts, labels = tiny_sentiment(4)
    TextClassifier(**{**FAST, "epochs": 1}).fit(texts, labels, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(reference, tmp_path, monkeypatch, capsys):
    data, _ = reference
    calls = {"n": 0}
    real = P.loss_fn

    def diverge(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 8 else loss

    monkeypatch.setattr(P, "loss_fn", diverge)
    run = tmp_path / "run"
    assert main(["train", "--train", str(data), "-o", str(run), *RUN_FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "diverged: the loss became nan at epoch 1, step 8" in err and "checkpoint (epoch 1, step 5)" in err
    assert not (run / "model").exists()
    state = read_state(run)
    assert (state["epoch"], state["step"]) == (1, 5)
    loaded, tensors = T.Checkpointer(run / "checkpoint").load()  # intact and readable
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch, capsys):
    import textrnn.io as C

    data, _ = reference
    real = C.save_file
    calls = {"n": 0}

    def full_disk(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(C, "save_file", full_disk)
    run = tmp_path / "run"
    assert main(["train", "--train", str(data), "-o", str(run), *RUN_FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "(epoch 1, step 5) is intact" in err
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["config.toml", "state.json", "tensors-000001.safetensors"]
    assert read_state(run)["step"] == 5


def test_full_disk_while_saving_the_model_leaves_the_previous_model(tmp_path, monkeypatch):
    import textrnn.io as C

    texts, labels = tiny_sentiment(4)
    first = TextClassifier(**{**FAST, "epochs": 1}).fit(texts, labels, progress=False)
    path = first.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    second = TextClassifier(**{**FAST, "epochs": 2, "seed": 1}).fit(texts, labels, progress=False)

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 64)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(C, "save_file", full_disk)
    with pytest.raises(OSError) as info:
        second.save(path, overwrite=True)
    assert info.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left
    assert textrnn.load(path).predict(texts) == first.predict(texts)


def test_full_disk_at_the_final_rename_puts_the_old_model_back(tmp_path, monkeypatch):
    texts, labels = tiny_sentiment(4)
    clf = TextClassifier(**{**FAST, "epochs": 1}).fit(texts, labels, progress=False)
    path = clf.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    real = os.replace

    def failing(src, dst):
        if ".tmp-" in str(src):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        clf.save(path, overwrite=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_resume_refuses_other_data_or_settings(tmp_path):
    texts, labels = tiny_sentiment(6)
    TextClassifier(**FAST).fit(texts, labels, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="other training data"):
        TextClassifier(**FAST).fit(texts[:-2], labels[:-2], progress=False, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match=r"train.learning_rate=0.003.*learning_rate=0.1"):
        TextClassifier(**{**FAST, "learning_rate": 0.1}).fit(texts, labels, progress=False, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="No checkpoint to resume"):
        TextClassifier(**FAST).fit(texts, labels, progress=False, checkpoint_dir=tmp_path / "none", resume=True)


def test_a_run_with_an_unfinished_checkpoint_is_not_clobbered(reference, tmp_path, capsys):
    data, _ = reference
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "state.json").write_text("{}")
    assert main(["train", "--train", str(data), "-o", str(run), *RUN_FLAGS]) == 2
    assert "textrnn train --resume" in capsys.readouterr().err
    assert main(["train", "--train", str(data), "-o", str(run), "--overwrite", *RUN_FLAGS]) == 0
    assert (run / "model").is_dir() and not (run / "checkpoint").exists()


def test_divergence_without_checkpoints_is_still_one_clear_error(monkeypatch):
    monkeypatch.setattr(P, "loss_fn", lambda *a, **k: torch.tensor(float("inf"), requires_grad=True))
    texts, labels = tiny_sentiment(4)
    with pytest.raises(TextRNNError, match="loss became inf at epoch 1, step 1. Try a lower learning rate"):
        TextClassifier(**FAST, adversarial=0.0).fit(texts, labels, progress=False)  # the loss is a constant here


def test_killed_after_training_while_saving_resumes_without_retraining(reference, tmp_path, monkeypatch, capsys):
    data, ref = reference
    run = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(TextClassifier, "save", interrupted)
        assert main(["train", "--train", str(data), "-o", str(run), *RUN_FLAGS]) == 130
    assert read_state(run)["finished"] and not (run / "model").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("training ran again")

    monkeypatch.setattr(T, "training_batches", no_training)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert_same_weights(weights(run), weights(ref))


def test_a_crash_just_after_an_epoch_end_checkpoint_resumes_with_the_next_epoch(tmp_path, monkeypatch):
    """The last checkpoint was written at the end of epoch 1: the resumed run starts epoch 2 (it
    once trained epoch 1 again, and its schedule ran out of steps)."""
    texts, labels = tiny_sentiment(20)  # 36 training rows: 9 steps an epoch, checkpoints at 5 and at the end
    settings = {**FAST, "epochs": 3, "dropout": 0.3}
    whole = TextClassifier(**settings).fit(texts, labels, progress=False)
    calls = {"n": 0}
    real = T.collate

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # 9 batches and 1 validation batch: the first batch of epoch 2
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "collate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        TextClassifier(**settings).fit(texts, labels, progress=False, checkpoint_dir=tmp_path)
    monkeypatch.setattr(T, "collate", real)
    resumed = TextClassifier(**settings).fit(texts, labels, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert_same_weights(whole.model_.state_dict(), resumed.model_.state_dict())
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3]
    assert [r["loss"] for r in whole.history_] == [r["loss"] for r in resumed.history_]
