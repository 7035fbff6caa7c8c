"""Virtual adversarial training (train.vat): the divergence, the push it finds, and runs with it."""

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_sentiment
from textrnn import TextClassifier, models
from textrnn.config import Config, ModelConfig
from textrnn.errors import ConfigError
from textrnn.models import kl_divergence
from textrnn.pieces import VAT_XI, Step, adversarial_pushes


@pytest.mark.parametrize("columns,multilabel", [(1, False), (4, False), (3, True)])
def test_the_divergence_is_zero_for_equal_predictions_and_matches_torch(columns, multilabel):
    torch.manual_seed(0)
    a, b = torch.randn(5, columns), torch.randn(5, columns)
    assert kl_divergence(a, a, multilabel).abs() < 1e-6 and kl_divergence(a, b, multilabel) > 0
    if columns > 1 and not multilabel:  # softmax: torch's own KL of the two categoricals
        expected = F.kl_div(F.log_softmax(b, 1), F.log_softmax(a, 1), log_target=True, reduction="batchmean")
    else:  # a Bernoulli per column, summed over the columns
        pa, pb = torch.sigmoid(a), torch.sigmoid(b)
        expected = (pa * (pa / pb).log() + (1 - pa) * ((1 - pa) / (1 - pb)).log()).sum(1).mean()
    torch.testing.assert_close(kl_divergence(a, b, multilabel), expected)
    # an ensemble's (M, B, C) logits against one (B, C) target: each member against it
    stacked = torch.stack([b, a])
    torch.testing.assert_close(kl_divergence(a, stacked, multilabel), kl_divergence(a, b, multilabel) / 2)


def _toy():
    torch.manual_seed(0)
    model = models.RNNClassifier(ModelConfig(embedding_dim=8, hidden_size=8, dropout=0.0, embedding_dropout=0.0), 30, 3)
    return model, torch.randint(1, 30, (6, 7)), torch.full((6,), 7)


def test_the_push_changes_the_prediction_more_than_a_random_one_of_its_size():
    model, ids, lengths = _toy()
    step = Step(model, model, torch.device("cpu"), torch.float32, None, 0.0, vat=2.0)
    with torch.no_grad():
        clean = model(ids, lengths)
    torch.manual_seed(1)
    found = step.virtual_adversarial_loss(ids, lengths, clean, multilabel=False)
    random_kl = []
    for seed in range(20):
        (push,) = adversarial_pushes([torch.randn(6, 7, 8, generator=torch.Generator().manual_seed(seed))], lengths, 2.0)
        with torch.no_grad():
            random_kl.append(float(kl_divergence(clean, model(ids, lengths, embedding_hook=lambda x, p=push: x + p))))
    assert float(found) > max(random_kl)  # the power iteration found a direction that matters
    found.backward()  # and it trains: a gradient reaches the weights
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_the_probe_is_small_beside_an_embedded_text():
    model, ids, lengths = _toy()
    embedded_norm = model.embedding(ids).flatten(1).norm(dim=1).min()
    assert VAT_XI < 0.05 * float(embedded_norm)


def _kw(**extra):
    return dict(
        embedding_dim=16,
        hidden_size=16,
        epochs=4,
        batch_size=8,
        min_freq=1,
        learning_rate=0.02,
        early_stopping_patience=None,
        validation_split=0.0,
        precision="float32",
        **extra,
    )


@pytest.mark.parametrize("extra", [{}, {"adversarial": 1.0}, {"members": 2}, {"micro_batch_tokens": 16}])
def test_a_run_with_it_learns_and_is_reproducible(extra):
    texts, labels = tiny_sentiment()
    a = TextClassifier(vat=1.0, **_kw(**extra)).fit(texts, labels, progress=False)
    b = TextClassifier(vat=1.0, **_kw(**extra)).fit(texts, labels, progress=False)
    plain = TextClassifier(**_kw(**extra)).fit(texts, labels, progress=False)
    assert a.predict(["a great film", "an awful film"]) == ["pos", "neg"]
    for (name, p), q in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, q) for p, q in zip(a.model_.state_dict().values(), plain.model_.state_dict().values()))


def test_a_negative_strength_is_refused():
    with pytest.raises(ConfigError, match="vat must be at least 0"):
        Config().override(["train.vat=-1"])
