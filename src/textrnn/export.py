"""ONNX export, and a classifier that runs the exported file with onnxruntime.

Packed sequences do not export (``pack_padded_sequence`` has no ONNX form). textrnn's models need
no packing: ``RNNClassifier`` runs mixed-length batches with the forward direction over the padded
sequence (its states at real positions never saw a pad) and the backward direction over each text
reversed within its own length (see ``models.RNNClassifier._encode_mixed``), and masks its pooling.
Tracing the model on a batch of mixed lengths records exactly that path, which is exact for every
batch; every recurrent layer becomes one ONNX LSTM/GRU/RNN op per direction with dynamic batch and
sequence axes. Inputs ``ids`` int64 (B, T) and ``lengths`` int64 (B,), output ``logits`` (B, C).
The tokenizer, vocabulary and labels stay in the artifact directory beside it (``model.onnx`` in
the model directory by default), and the file records a hash of the weights it came from, so
loading it next to another model fails clearly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import __version__
from .batching import inference_batches, lengths_of, pad_batch
from .classifier import TextClassifier
from .errors import ArtifactError, TextRNNError
from .evaluation import checked_thresholds, predicted_labels, probabilities
from .inference import predict_logits
from .io import MODEL, atomic_path, read_folder
from .models import BagOfEmbeddings, Ensemble, RNNClassifier, output_size
from .text import Tokenizer, encode_texts

log = logging.getLogger("textrnn")

ONNX_FILE = "model.onnx"
INPUTS, OUTPUT = ("ids", "lengths"), "logits"


def weights_digest(model_dir: str | os.PathLike) -> str | None:
    path = Path(model_dir) / "weights.safetensors"
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _export_module(model):
    """The network itself, in eval mode. Traced on a batch of mixed lengths, ``RNNClassifier.encode``
    records its mixed-length path (each direction starting at a real token, pooling masked), which is
    exact for every batch, equal lengths included; so the traced graph holds no data-dependent branch."""

    if not isinstance(model, (RNNClassifier, BagOfEmbeddings, Ensemble)):
        raise TextRNNError(f"Cannot export a {type(model).__name__}: expected RNNClassifier, Ensemble or BagOfEmbeddings.")
    return model.eval()


def export_onnx(model_dir: str | os.PathLike, path: str | os.PathLike | None = None, opset: int = 17, check: bool = True) -> dict:
    """Export the model in ``model_dir`` to ONNX at ``path`` (default ``model_dir/model.onnx``).

    With ``check`` (and onnxruntime installed) the file is run on a batch of mixed lengths and
    compared with PyTorch; returns ``{"path", "max_abs_diff"}``."""

    try:
        import onnx  # noqa: F401, PLC0415  (optional extra: textrnn[onnx])
    except ImportError:
        raise TextRNNError("ONNX export needs the onnx package: pip install 'textrnn[onnx]'") from None
    clf = TextClassifier.load(model_dir, device="cpu")  # traced and checked on the CPU
    path = Path(path) if path is not None else Path(model_dir) / ONNX_FILE
    if path.is_dir():
        raise TextRNNError(f"--onnx must be a file path. Received: {str(path)!r} (a directory)")
    module = _export_module(clf.model_)
    V = len(clf.vocab_)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, max(V, 3), (3, 7), generator=g) % V
    lengths = torch.tensor([7, 4, 1])
    ids[1, 4:] = 0
    ids[2, 1:] = 0
    with atomic_path(path, suffix=".onnx") as tmp:
        with warnings.catch_warnings():
            # the TorchScript-based exporter: it maps nn.LSTM/GRU/RNN to ONNX's own ops with a dynamic
            # sequence axis (the torch.export-based one needs onnxscript and unrolls loops)
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (ids, lengths),
                str(tmp),
                dynamo=False,
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                opset_version=opset,
                dynamic_axes={"ids": {0: "batch", 1: "sequence"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
            )
        _stamp(tmp, clf, model_dir)
    result: dict[str, Any] = {"path": str(path), "max_abs_diff": None}
    if check:
        try:
            import onnxruntime  # noqa: F401, PLC0415  (optional extra: textrnn[onnx])
        except ImportError:
            log.info("onnxruntime is not installed: the export was not checked (pip install 'textrnn[onnx]')")
            return result
        result["max_abs_diff"] = parity(clf, OnnxClassifier(model_dir, path))
    return result


def _stamp(path: Path, clf, model_dir) -> None:
    """Record in the ONNX file which model it came from."""
    import onnx  # noqa: PLC0415  (optional extra: textrnn[onnx])

    proto = onnx.load(str(path))
    meta = {
        "textrnn_version": __version__,
        "labels": json.dumps(clf.classes_),
        "vocab_size": str(len(clf.vocab_)),
        "weights_sha256": weights_digest(model_dir) or "",
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "textrnn"
    onnx.save(proto, str(path))


def parity(clf, onnx_clf: "OnnxClassifier", texts: Sequence[str] | None = None) -> float:
    """Largest absolute difference between PyTorch's and onnxruntime's logits on a batch of mixed
    lengths (texts made from the vocabulary when none are given)."""

    if texts is None:
        words = clf.vocab_.tokens[2:] or ["x"]
        rng = np.random.default_rng(0)
        texts = [" ".join(rng.choice(words, size=n)) for n in (1, 3, 7, 20, 50, 5, 2)] + ["", "zzqx unknownword"]
    a = predict_logits(clf.model_, clf.encode(texts), precision="float32")  # ONNX computes float32
    b = onnx_clf.decision_function(texts)
    return float(np.abs(a - b).max())


class OnnxClassifier:
    """The inference half of a TextClassifier on onnxruntime: ``predict_proba``, ``predict``,
    ``encode`` and ``forward_ids``, with the tokenizer, vocabulary and labels of the artifact
    directory. Inference runs in onnxruntime only; the weights file is not read."""

    def __init__(self, model_dir: str | os.PathLike, onnx_path: str | os.PathLike | None = None, num_threads: int | None = None):
        try:
            import onnxruntime as ort  # noqa: PLC0415  (optional extra: textrnn[onnx])
        except ImportError:
            raise TextRNNError("The ONNX runtime needs onnxruntime: pip install 'textrnn[onnx]'") from None

        model_dir = Path(model_dir)
        onnx_path = Path(onnx_path) if onnx_path is not None else model_dir / ONNX_FILE
        art = read_folder(model_dir, MODEL, weights=False)  # the checks of every loader; the weights stay unread
        assert art.classes is not None  # a model folder always has its labels.json
        if not onnx_path.is_file():
            raise ArtifactError(f"ONNX file not found: {str(onnx_path)!r}; make it with: textrnn export {model_dir} --onnx {onnx_path}")
        self.meta_, self.classes_, self.config_, self.vocab_ = art.meta, art.classes, art.config, art.vocab
        self.tokenizer_ = Tokenizer.from_config(self.config_.text)
        self.history_ = self.meta_.get("history", [])
        self.multilabel_ = self.config_.data.task == "multilabel"
        self.thresholds_ = checked_thresholds(self.meta_.get("thresholds"), len(self.classes_), model_dir) if self.multilabel_ else None
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session_ = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
            raise ArtifactError(f"{str(onnx_path)!r} is not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        stamp = self.session_.get_modelmeta().custom_metadata_map
        digest = weights_digest(model_dir)
        if stamp.get("weights_sha256") and digest and stamp["weights_sha256"] != digest:
            raise ArtifactError(
                f"{str(onnx_path)!r} was exported from another model than {str(model_dir)!r} "
                f"(the weights differ); export it again: textrnn export {model_dir} --onnx {onnx_path}"
            )
        if stamp.get("vocab_size") and int(stamp["vocab_size"]) != len(self.vocab_):
            raise ArtifactError(
                f"{str(onnx_path)!r} expects a vocabulary of {stamp['vocab_size']} tokens but "
                f"{str(model_dir / 'vocab.txt')!r} has {len(self.vocab_)}"
            )
        self.onnx_path_ = onnx_path
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        t = self.config_.text
        return encode_texts(texts, self.tokenizer_, self.vocab_, t.length, t.truncating, t.head_fraction)

    def forward_ids(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Logits (B, C) for post-padded ids (B, T) and lengths (B,)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        return self.session_.run([OUTPUT], {"ids": ids, "lengths": lengths})[0]

    def decision_function(self, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
        if isinstance(texts, str):
            raise TextRNNError("texts must be a list of strings, not a single string.")
        seqs = self.encode(["" if t is None else str(t) for t in texts])
        out = np.empty((len(seqs), output_size(len(self.classes_), self.multilabel_)), dtype=np.float32)
        for idx in inference_batches(lengths_of(seqs), batch_size):  # longest first: little padding
            out[idx] = self.forward_ids(*pad_batch([seqs[i] for i in idx]))
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
        return probabilities(self.decision_function(texts, batch_size), self.multilabel_)

    def labels_from(self, proba: np.ndarray) -> list:
        return predicted_labels(proba, self.classes_, self.thresholds_)

    def predict(self, texts: Sequence[str], batch_size: int = 512) -> list:
        return self.labels_from(self.predict_proba(texts, batch_size))
