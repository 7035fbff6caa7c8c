import itertools

import numpy as np
import pytest
import torch

from textrnn.batching import collate, inference_batches, training_batches
from textrnn.config import ModelConfig
from textrnn.models import BagOfEmbeddings, RNNClassifier, build_model


@pytest.mark.parametrize(
    "cell,bidirectional,pooling,num_layers",
    list(itertools.product(["lstm", "gru", "rnn"], [False, True], ["last", "max", "mean", "concat"], [1, 2])),
)
def test_shapes(cell, bidirectional, pooling, num_layers):
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, pooling=pooling, num_layers=num_layers, embedding_dim=8, hidden_size=6)
    for classes, outputs in ((2, 1), (5, 5)):
        model = RNNClassifier(cfg, vocab_size=30, num_classes=classes).eval()
        ids = torch.randint(2, 30, (4, 7))
        lengths = torch.tensor([7, 3, 5, 1])
        assert model(ids, lengths).shape == (4, outputs)


@pytest.mark.parametrize("cell,bidirectional,pooling", list(itertools.product(["lstm", "gru"], [False, True], ["last", "concat"])))
def test_padding_never_changes_the_prediction(cell, bidirectional, pooling):
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, pooling=pooling, embedding_dim=8, hidden_size=6, num_layers=2)
    model = RNNClassifier(cfg, 30, 2).eval()
    seq = torch.randint(2, 30, (1, 5))
    alone = model(seq, torch.tensor([5]))
    for extra in (1, 7, 50):
        padded = torch.cat([seq, torch.zeros(1, extra, dtype=torch.long)], 1)
        # in a batch with a longer text, so the padded (packed) path really runs
        batch = torch.cat([padded, torch.randint(2, 30, (1, 5 + extra))])
        out = model(batch, torch.tensor([5, 5 + extra]))
        torch.testing.assert_close(out[:1], alone, atol=1e-5, rtol=1e-5)


def test_mlp_is_order_blind_and_rnn_is_not():
    torch.manual_seed(0)
    cfg = ModelConfig(embedding_dim=8, hidden_size=6)
    ids = torch.tensor([[2, 3, 4, 5]])
    rev = ids.flip(1)
    mlp = BagOfEmbeddings(cfg, 10, 2).eval()
    torch.testing.assert_close(mlp(ids, torch.tensor([4])), mlp(rev, torch.tensor([4])))
    rnn = RNNClassifier(cfg, 10, 2).eval()
    assert not torch.allclose(rnn(ids, torch.tensor([4])), rnn(rev, torch.tensor([4])))


def test_empty_text_is_defined():
    model = build_model(ModelConfig(embedding_dim=4, hidden_size=3), 10, 3).eval()
    out = model(torch.zeros(2, 1, dtype=torch.long), torch.tensor([0, 0]))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_collate_pads_and_equal_length_cuts_to_shortest():
    seqs = [np.array([5, 6, 7]), np.array([8])]
    ids, lengths = collate(seqs)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    ids, lengths = collate(seqs, equal_length=True)
    assert ids.tolist() == [[7], [8]] and lengths.tolist() == [1, 1]


def test_training_batches_cover_everything_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=1000)
    batches = training_batches(lengths, 32, rng, chunk=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.median([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 30  # random batches would spread over ~270
    assert sorted(np.concatenate(inference_batches(lengths, 64)).tolist()) == list(range(1000))


def test_label_smoothing_moves_each_target_toward_the_uniform_one():
    from textrnn.config import TrainConfig
    from textrnn.errors import ConfigError
    from textrnn.models import loss_fn

    torch.manual_seed(0)
    e = 0.2
    binary, y2 = torch.randn(6, 1), torch.tensor([0, 1, 1, 0, 1, 0])
    soft = y2.float() * (1 - e) + e / 2  # 0 -> 0.1, 1 -> 0.9
    want = -(soft * torch.nn.functional.logsigmoid(binary[:, 0]) + (1 - soft) * torch.nn.functional.logsigmoid(-binary[:, 0]))
    torch.testing.assert_close(loss_fn(binary, y2, label_smoothing=e), want.mean())
    five, y5 = torch.randn(6, 5), torch.tensor([0, 4, 2, 1, 3, 2])
    target = torch.full((6, 5), e / 5).scatter_(1, y5[:, None], 1 - e + e / 5)
    want = -(target * torch.log_softmax(five, 1)).sum(1).mean()
    torch.testing.assert_close(loss_fn(five, y5, label_smoothing=e), want)
    multi = torch.tensor([[1.0, 0.0, 1.0]] * 6)
    torch.testing.assert_close(loss_fn(torch.zeros(6, 3), multi, label_smoothing=e), torch.tensor(0.6931), atol=1e-4, rtol=0)
    torch.testing.assert_close(loss_fn(five, y5, label_smoothing=0.0), torch.nn.functional.cross_entropy(five, y5))
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)


@pytest.mark.parametrize("full", [True, False])
def test_max_pooling_trains_by_its_indices_with_amax_gradients(full):
    """With gradients, max pooling takes max's indices (a scatter backward) instead of amax's mask:
    the same values, and where no two positions tie, the same gradient, padded positions none."""
    from textrnn.models import masked_pool

    torch.manual_seed(0)
    out = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 6, 6]) if full else torch.tensor([6, 2, 4])
    weights = torch.randn(3, 4, dtype=torch.float64)
    pooled = masked_pool(out, lengths, ["max"])
    (grad,) = torch.autograd.grad((pooled * weights).sum(), out)
    mask = (torch.arange(6)[None, :] < lengths[:, None]).unsqueeze(-1)
    reference = out.detach().clone().requires_grad_(True)
    expected = reference.masked_fill(~mask, float("-inf")).amax(1)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), reference)
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert grad.masked_select(~mask.expand_as(grad)).abs().sum() == 0
    with torch.no_grad():
        torch.testing.assert_close(masked_pool(out, lengths, ["max"]), expected)
