"""cell="lstm+gru": an ensemble of one LSTM and one GRU classifier, trained side by side and
averaged; it saves, loads, exports and explains like a single model."""

import numpy as np
import pytest
import torch

from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.config import ModelConfig
from textrnn.errors import ConfigError
from textrnn.models import Ensemble, RNNClassifier, build_model, members, num_outputs

FAST = dict(
    embedding_dim=16,
    hidden_size=16,
    epochs=25,
    batch_size=8,
    learning_rate=0.02,
    schedule="constant",
    min_freq=1,
    early_stopping_patience=None,
)


def test_one_member_per_cell_each_its_own_weights():
    model = build_model(ModelConfig(cell="lstm+gru", embedding_dim=6, hidden_size=5), 20, 3)
    assert isinstance(model, Ensemble) and [m.config.cell for m in members(model)] == ["lstm", "gru"]
    assert isinstance(model.members[0].rnn, torch.nn.LSTM) and isinstance(model.members[1].rnn, torch.nn.GRU)
    assert model.members[0].embedding.weight.data_ptr() != model.members[1].embedding.weight.data_ptr()
    assert num_outputs(model) == 3
    assert isinstance(build_model(ModelConfig(cell="gru"), 20, 2), RNNClassifier)


def test_training_forward_stacks_members_and_prediction_averages_them():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lstm+lstm", embedding_dim=6, hidden_size=5), 20, 2)
    ids, lengths = torch.randint(1, 20, (4, 7)), torch.tensor([7, 5, 3, 1])
    model.train()
    assert model(ids, lengths).shape == (2, 4, 1)
    model.eval()
    each = torch.stack([m(ids, lengths) for m in model.members])
    torch.testing.assert_close(model(ids, lengths), each.mean(0))


@pytest.mark.parametrize("bad", ["lstm+", "lstm+cnn", "+gru", ""])
def test_bad_ensembles_are_refused_by_name(bad):
    with pytest.raises(ConfigError, match=r"or several '\+'-joined for an ensemble"):
        ModelConfig(cell=bad)


def test_an_ensemble_fits_saves_loads_and_predicts_the_same(tmp_path):
    texts, labels = tiny_sentiment()
    clf = TextClassifier(cell="lstm+gru", **FAST).fit(texts, labels, progress=False)
    assert clf.evaluate(texts, labels)["accuracy"] >= 0.9
    clf.save(tmp_path / "m")
    again = TextClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)


def test_an_ensemble_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from textrnn.export import export_onnx

    texts, labels = tiny_sentiment()
    TextClassifier(cell="gru+lstm", **FAST).fit(texts, labels, progress=False).save(tmp_path / "m")
    assert export_onnx(tmp_path / "m")["max_abs_diff"] < 1e-4
