import itertools

import numpy as np
import pytest
import torch

from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.cli import main
from textrnn.config import ModelConfig
from textrnn.errors import ArtifactError, TextRNNError
from textrnn.export import OnnxClassifier, _export_module, export_onnx
from textrnn.models import RNNClassifier

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'textrnn[onnx]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install 'textrnn[onnx]')")

TINY = dict(embedding_dim=8, hidden_size=8, epochs=3, batch_size=8, min_freq=1, early_stopping_patience=None)
MIXED = [
    "a good film",
    "truly awful acting and a bad plot, i hated it",
    "great",
    "",
    "good fun and great music",
    "an unknownword here",
    "bad " * 30,
]


def mixed_batch(vocab_size: int, lengths=(9, 4, 1, 6, 0, 9, 2)):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab_size, (len(lengths), max(lengths)), generator=g)
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    return ids, torch.tensor(lengths)


@pytest.mark.parametrize(
    "cell,bidirectional,pooling,num_layers", list(itertools.product(["lstm", "gru", "rnn"], [False, True], ["last", "concat"], [1, 2]))
)
def test_the_exported_mixed_length_path_equals_each_text_alone(cell, bidirectional, pooling, num_layers):
    """What the export traces (the mixed-length path) against each text run alone, unpadded
    (the equal-length path, which is nn.LSTM's own call)."""
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, pooling=pooling, num_layers=num_layers, embedding_dim=8, hidden_size=6)
    model = _export_module(RNNClassifier(cfg, 30, 3))
    ids, lengths = mixed_batch(30)
    with torch.no_grad():
        batch = model(ids, lengths)
        alone = torch.cat([model(ids[i : i + 1, : max(n, 1)], lengths[i : i + 1]) for i, n in enumerate(lengths.tolist())])
    np.testing.assert_allclose(batch, alone, atol=1e-6)


def test_export_refuses_other_modules():
    with pytest.raises(TextRNNError, match="Cannot export"):
        _export_module(torch.nn.Linear(2, 2))


@pytest.fixture(
    scope="module",
    params=[dict(), dict(cell="gru", num_layers=2, bidirectional=False), dict(arch="mlp")],
    ids=["bilstm", "gru-2-layers", "mlp"],
)
def exported(request, tmp_path_factory):
    texts, labels = tiny_sentiment()
    # float32, as onnxruntime computes: with bfloat16 ("auto" on some CPUs) the two differ by its rounding
    clf = TextClassifier(**TINY, **request.param, precision="float32").fit(texts, labels, progress=False)
    d = tmp_path_factory.mktemp("export")
    clf.save(d / "model")
    result = export_onnx(d / "model", d / "m.onnx")
    return clf, d, result


def test_onnxruntime_matches_pytorch_on_a_mixed_length_batch(exported):
    clf, d, result = exported
    assert result["max_abs_diff"] is not None and result["max_abs_diff"] < 1e-5
    session = ort.InferenceSession(str(d / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["ids", "lengths"]
    for lengths in ((9, 4, 1, 6, 0, 9, 2), (3,), (17, 17, 5)):  # dynamic batch and sequence axes
        ids, lens = mixed_batch(len(clf.vocab_), lengths)
        got = session.run(None, {"ids": ids.numpy(), "lengths": lens.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, clf.model_(ids, lens).numpy(), atol=1e-5)


def test_onnx_classifier_predicts_like_the_torch_one(exported):
    clf, d, _ = exported
    onnx_clf = OnnxClassifier(d / "model", d / "m.onnx")
    assert onnx_clf.classes_ == clf.classes_
    np.testing.assert_allclose(onnx_clf.predict_proba(MIXED), clf.predict_proba(MIXED), atol=1e-5)
    assert onnx_clf.predict(MIXED) == clf.predict(MIXED)


def test_cli_export_defaults_to_the_model_directory(tmp_path, capsys):
    texts, labels = tiny_sentiment()
    TextClassifier(**TINY).fit(texts, labels, progress=False).save(tmp_path / "model")
    assert main(["export", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "model" / "model.onnx").is_file() and "max |difference|" in out
    assert OnnxClassifier(tmp_path / "model").predict(["a good film"])[0] in ("pos", "neg")
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_an_onnx_file_from_another_model_is_refused(tmp_path):
    texts, labels = tiny_sentiment()
    for name, seed in (("one", 1), ("other", 2)):
        TextClassifier(**{**TINY, "epochs": 1, "seed": seed}).fit(texts, labels, progress=False).save(tmp_path / name)
    export_onnx(tmp_path / "one", tmp_path / "one.onnx", check=False)
    with pytest.raises(ArtifactError, match="another model"):
        OnnxClassifier(tmp_path / "other", tmp_path / "one.onnx")
    with pytest.raises(ArtifactError, match="ONNX file not found"):
        OnnxClassifier(tmp_path / "other")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        OnnxClassifier(tmp_path / "other", tmp_path / "bad.onnx")
