"""Hostile files: a model folder or checkpoint from someone else never runs code (no pickle, no
torch.load), never makes us read files outside it, and paths in its config are not followed."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

import textrnn
import textrnn.trainer as T
from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.errors import ArtifactError, CheckpointError

FAST = dict(embedding_dim=8, hidden_size=8, epochs=1, batch_size=4, min_freq=1, checkpoint_every=2, early_stopping_patience=None)


class Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant(path: Path, marker: Path, how: str) -> None:
    if how == "pickle":
        path.write_bytes(pickle.dumps({"weight": Payload(marker)}))
    else:  # what torch.save writes: a zip around a pickle
        torch.save({"weight": Payload(marker)}, path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    texts, labels = tiny_sentiment(4)
    return TextClassifier(**FAST).fit(texts, labels, progress=False).save(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint folder as an interrupted run leaves it (training stopped by an error mid-epoch)."""
    d = tmp_path_factory.mktemp("ckpt")
    texts, labels = tiny_sentiment(6)
    calls = {"n": 0}
    real = T.collate

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("crash")
        return real(*args, **kwargs)

    T.collate = crash
    try:
        with pytest.raises(RuntimeError):
            TextClassifier(**FAST).fit(texts, labels, progress=False, checkpoint_dir=d)
    finally:
        T.collate = real
    return d


def resume(ckpt: Path):
    texts, labels = tiny_sentiment(6)
    return TextClassifier(**FAST).fit(texts, labels, progress=False, checkpoint_dir=ckpt, resume=True)


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", ["weights.safetensors", "config.json", "labels.json", "vocab.txt"])
def test_a_pickle_anywhere_in_a_model_folder_is_refused_unrun(saved, tmp_path, name, how):
    model = shutil.copytree(saved, tmp_path / "model")
    marker = tmp_path / "PWNED"
    plant(model / name, marker, how)
    with pytest.raises(ArtifactError):
        textrnn.load(model)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", ["state.json", "tensors"])
def test_a_pickle_in_a_checkpoint_is_refused_unrun(checkpoint, tmp_path, name, how):
    ckpt = shutil.copytree(checkpoint, tmp_path / "checkpoint")
    assert resume(shutil.copytree(checkpoint, tmp_path / "intact")).history_  # the planted-on checkpoint is fine
    target = ckpt / json.loads((ckpt / "state.json").read_text())["tensors"] if name == "tensors" else ckpt / name
    marker = tmp_path / "PWNED"
    plant(target, marker, how)
    with pytest.raises(CheckpointError, match="damaged|not a textrnn checkpoint|not a safetensors"):
        resume(ckpt)
    assert not marker.exists()


def test_torch_load_is_never_called_on_untrusted_files(saved, checkpoint, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", forbidden)
    textrnn.load(saved)
    resume(shutil.copytree(checkpoint, tmp_path / "checkpoint"))


@pytest.mark.parametrize(
    "tensors", ["../outside.safetensors", "/etc/passwd", "tensors-000001.safetensors/../../x", "weights.safetensors", 7]
)
def test_a_checkpoint_cannot_name_a_file_outside_its_folder(checkpoint, tmp_path, tensors):
    ckpt = shutil.copytree(checkpoint, tmp_path / "checkpoint")
    state = json.loads((ckpt / "state.json").read_text())
    shutil.copy(ckpt / state["tensors"], tmp_path / "outside.safetensors")  # a valid file, outside
    state["tensors"] = tensors
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="invalid tensors file"):
        resume(ckpt)


def test_links_out_of_a_model_or_checkpoint_folder_are_refused(saved, checkpoint, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("<pad>\n<unk>\nhunter2\n")
    model = shutil.copytree(saved, tmp_path / "model")
    (model / "vocab.txt").unlink()
    (model / "vocab.txt").symlink_to(secret)
    with pytest.raises(ArtifactError, match="vocab.txt is a link to a file outside the model folder"):
        textrnn.load(model)
    ckpt = shutil.copytree(checkpoint, tmp_path / "checkpoint")
    name = json.loads((ckpt / "state.json").read_text())["tensors"]
    os.replace(ckpt / name, tmp_path / "elsewhere.safetensors")
    (ckpt / name).symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        resume(ckpt)


def test_a_checkpoint_that_does_not_fit_is_refused(checkpoint, tmp_path):
    def edit(change):
        ckpt = shutil.copytree(checkpoint, tmp_path / f"c{len(list(tmp_path.iterdir()))}")
        state = json.loads((ckpt / "state.json").read_text())
        change(state)
        (ckpt / "state.json").write_text(json.dumps(state))
        return ckpt

    cases = [
        (lambda s: s.update(format_version=2), "newer textrnn"),
        (lambda s: s.update(format="something-else"), "not a textrnn checkpoint"),
        (lambda s: s["scheduler"].update(optimizer="x"), "scheduler state does not match"),
        (lambda s: s["optimizer"]["param_groups"][0].update(evil=1), "optimizer state does not match"),
        (lambda s: s["rng"].update(numpy={"bit_generator": "MT19937"}), "damaged"),
        (lambda s: s.update(batch=10**6), "damaged|cannot be redrawn"),
        (lambda s: s.pop("history"), "damaged"),
    ]
    for change, message in cases:
        with pytest.raises(CheckpointError, match=message):
            resume(edit(change))


def test_paths_in_a_model_config_are_never_followed_at_load(saved, tmp_path):
    """config.json may name files (pretrained vectors, data); loading and predicting read none of them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    named = {"vectors": outside / "vectors.txt", "train": outside / "train.csv", "imdb": outside / "aclImdb_v1.tar.gz"}
    for p in named.values():
        p.write_text("good 0.1 0.2\n")
    model = shutil.copytree(saved, tmp_path / "model")
    meta = json.loads((model / "config.json").read_text())
    meta["config"]["model"]["pretrained_embeddings"] = str(named["vectors"])
    meta["config"]["data"].update(train=str(named["train"]), test=str(named["train"]), imdb_path=str(named["imdb"]))
    (model / "config.json").write_text(json.dumps(meta))

    textrnn.load(saved).predict(["warm up: every lazy import done"])
    opened: list[str] = []
    watching = {"on": True}

    def hook(event, args):
        if watching["on"] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one goes quiet below
    try:
        clf = textrnn.load(model)
        clf.predict(["a good film", ""])
    finally:
        watching["on"] = False
    ours = [p for p in opened if str(tmp_path) in os.path.abspath(p)]
    assert ours, "the audit hook saw no file opened"
    assert all(Path(p).resolve().parent == model.resolve() for p in ours), ours
    assert clf.config_.model.pretrained_embeddings == str(named["vectors"])  # kept as a record, not followed
