"""Adversarial training (train.adversarial): the push, and what a run with it does."""

import pytest
import torch

from conftest import needs_native_bf16, tiny_sentiment
from textrnn import TextClassifier, models
from textrnn.config import ModelConfig, TrainConfig
from textrnn.errors import ConfigError
from textrnn.pieces import adversarial_pushes


def test_each_push_has_the_norm_asked_for_and_leaves_padding_alone():
    g = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 0])  # an empty text is one <pad>: its first position
    (push,) = adversarial_pushes([g], lengths, 2.5)
    assert push.shape == g.shape
    torch.testing.assert_close(push.flatten(1).norm(dim=1), torch.full((3,), 2.5))
    assert push[1, 2:].abs().sum() == 0 and push[2, 1:].abs().sum() == 0
    # along the gradient: the direction that raises the loss fastest
    cos = torch.nn.functional.cosine_similarity(push[0].flatten(), g[0].flatten(), dim=0)
    assert cos > 0.999
    (zero,) = adversarial_pushes([torch.zeros(1, 3, 4)], torch.tensor([3]), 1.0)
    assert torch.isfinite(zero).all() and zero.abs().sum() == 0  # no gradient, no push (and no NaN)


def test_the_push_raises_the_loss():
    torch.manual_seed(0)
    model = models.RNNClassifier(ModelConfig(embedding_dim=8, hidden_size=8), 30, 2)
    ids, lengths = torch.randint(1, 30, (6, 7)), torch.full((6,), 7)
    y = torch.tensor([0, 1, 0, 1, 0, 1], dtype=torch.float32)
    seen = []
    logits = model(ids, lengths, embedding_hook=lambda x: seen.append(x) or x)
    clean = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y)
    (g,) = torch.autograd.grad(clean, seen)
    (push,) = adversarial_pushes([g], lengths, 1.0)
    pushed = torch.nn.functional.binary_cross_entropy_with_logits(model(ids, lengths, embedding_hook=lambda x: x + push)[:, 0], y)
    assert pushed > clean


@pytest.mark.parametrize("precision", ["float32", pytest.param("bfloat16", marks=needs_native_bf16)])
def test_a_run_with_it_learns_and_is_reproducible(precision):
    texts, labels = tiny_sentiment()
    kw = dict(
        embedding_dim=16,
        hidden_size=16,
        epochs=6,
        batch_size=8,
        min_freq=1,
        learning_rate=0.02,
        early_stopping_patience=None,
        validation_split=0.0,
        precision=precision,
    )
    a = TextClassifier(adversarial=1.0, **kw).fit(texts, labels, progress=False)
    b = TextClassifier(adversarial=1.0, **kw).fit(texts, labels, progress=False)
    plain = TextClassifier(adversarial=0.0, **kw).fit(texts, labels, progress=False)
    assert a.predict(["a great film", "an awful film"]) == ["pos", "neg"]
    for (name, p), q, r in zip(a.model_.state_dict().items(), b.model_.state_dict().values(), plain.model_.state_dict().values()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, r) for p, r in zip(a.model_.state_dict().values(), plain.model_.state_dict().values()))


def test_an_ensemble_and_a_frozen_embedding_train_with_it():
    texts, labels = tiny_sentiment()
    clf = TextClassifier(cell="lstm+gru", embedding_dim=8, hidden_size=8, epochs=2, min_freq=1, adversarial=0.5, validation_split=0.0).fit(
        texts, labels, progress=False
    )
    assert len(clf.predict(texts[:4])) == 4
    import numpy as np

    from textrnn.trainer import fit

    torch.manual_seed(0)
    model = models.RNNClassifier(ModelConfig(embedding_dim=8, hidden_size=8), 20, 2)
    model.embedding.weight.requires_grad_(False)  # as freeze_embeddings leaves pretrained vectors
    before = model.embedding.weight.clone()
    x = [np.array([1 + i % 7, 2 + i % 5, 3], dtype=np.int64) for i in range(24)]
    fit(model, x, np.array([i % 2 for i in range(24)]), TrainConfig(epochs=2, adversarial=0.5), progress=False)
    assert torch.equal(model.embedding.weight, before)


def test_a_negative_strength_is_refused():
    with pytest.raises(ConfigError, match="adversarial"):
        TrainConfig(adversarial=-1.0)


@pytest.mark.parametrize("members", [1, 2])
def test_one_backward_through_the_clean_pass_gives_the_gradients_of_the_definition(members):
    """The step's gradient is that of clean + pushed loss, the push found from the clean loss's
    gradient: computed here the plain way (two backward passes through the clean one) and by the
    step, in pieces one after another and side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from textrnn.distributed import Context
    from textrnn.models import loss_fn
    from textrnn.pieces import Step, sparse_embeddings

    torch.manual_seed(0)
    model = models.build_model(ModelConfig(embedding_dim=8, hidden_size=8, dropout=0.0, embedding_dropout=0.0, members=members), 30, 3)
    ids, lengths, y = torch.randint(1, 30, (6, 5)), torch.full((6,), 5), torch.tensor([0, 1, 2, 0, 1, 2])

    def plain_loss(hook=None):
        logits = model(ids, lengths, embedding_hook=hook)
        return torch.stack([loss_fn(m, y) for m in logits]).mean() if logits.dim() == 3 else loss_fn(logits, y)

    embedded: list[torch.Tensor] = []
    clean = plain_loss(lambda x: embedded.append(x) or x)
    pushes = iter(adversarial_pushes(torch.autograd.grad(clean, embedded, retain_graph=True), lengths, 0.7))
    (clean + plain_loss(lambda x: x + next(pushes))).backward()
    expected = [p.grad.clone() for p in model.parameters()]

    step = Step(model, model, torch.device("cpu"), torch.float32, None, 0.7)
    for run in ("one_after_another", "side_by_side"):
        model.zero_grad(set_to_none=True)
        pieces = [slice(0, 4), slice(4, 6)]
        if run == "one_after_another":
            loss, _ = step.one_after_another(ids, lengths, y, pieces, Context())
        else:
            with ThreadPoolExecutor(2) as pool, sparse_embeddings(model):  # as the trainer runs them
                loss, _ = step.side_by_side(ids, lengths, y, pieces, pool)
        assert loss.requires_grad is False
        for p, e in zip(model.parameters(), expected):
            torch.testing.assert_close(p.grad, e, atol=1e-6, rtol=1e-5)
