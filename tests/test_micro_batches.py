"""runtime.micro_batch_tokens: on a CPU a long batch runs in pieces whose gradients add up to the
whole batch's, so training takes the same steps (only faster)."""

import numpy as np
import pytest
import torch

from conftest import tiny_sentiment
from textrnn import TextClassifier, fastrnn
from textrnn.config import ModelConfig, RuntimeConfig
from textrnn.errors import ConfigError
from textrnn.models import build_model
from textrnn.pieces import MICRO_BATCH_TOKENS, GradientSum, micro_batches, piece_tokens


@pytest.mark.parametrize("rows,length,budget", [(64, 180, 6000), (64, 400, 6000), (64, 60, 6000), (7, 500, 100), (64, 10, None)])
def test_pieces_cover_the_batch_in_order_within_the_budget(rows, length, budget):
    pieces = micro_batches(rows, length, budget)
    covered = np.concatenate([np.arange(rows)[p] for p in pieces])
    assert (covered == np.arange(rows)).all()
    if budget is None or rows * length <= budget:
        assert len(pieces) == 1
    else:
        assert all((p.stop - p.start) * length <= budget or p.stop - p.start <= 8 for p in pieces)


def test_a_batch_in_pieces_trains_the_same_weights():
    texts, labels = tiny_sentiment()
    settings = dict(
        embedding_dim=8,
        hidden_size=8,
        epochs=2,
        batch_size=16,
        min_freq=1,
        dropout=0.0,
        embedding_dropout=0.0,
        early_stopping_patience=None,
        learning_rate=0.01,
        precision="float32",
    )  # the identity is exact arithmetic; bfloat16 rounds each piece
    whole = TextClassifier(micro_batch_tokens=None, **settings).fit(texts, labels, progress=False)
    pieces = TextClassifier(micro_batch_tokens=9, **settings).fit(texts, labels, progress=False)  # pieces of 8 texts
    for (name, a), b in zip(whole.model_.state_dict().items(), pieces.model_.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)
    assert whole.history_[-1]["loss"] == pytest.approx(pieces.history_[-1]["loss"], rel=1e-4)


def test_the_budget_is_checked():
    with pytest.raises(ConfigError, match="micro_batch_tokens must be greater than 0"):
        RuntimeConfig(micro_batch_tokens=0)


def test_sparse_gradients_sum_into_one_dense_gradient_step_after_step():
    """The dense sum kept from step to step holds each step's rows only: the last step's are zeroed
    again, even after clipping scaled it in place."""
    param = torch.zeros(10, 3)
    total = GradientSum()

    def sparse(rows, value):
        return torch.sparse_coo_tensor(torch.tensor([rows]), torch.full((len(rows), 3), value), (10, 3), check_invariants=True)

    first = total(param, [sparse([1, 4], 1.0), sparse([4, 7], 2.0)])
    expected = torch.zeros(10, 3)
    expected[1], expected[4], expected[7] = 1.0, 3.0, 2.0
    torch.testing.assert_close(first, expected)
    first.mul_(0.5)  # clipping, in place
    second = total(param, [sparse([2], 5.0), sparse([2, 4], 1.0)])
    expected = torch.zeros(10, 3)
    expected[2], expected[4] = 6.0, 1.0
    torch.testing.assert_close(second, expected)
    dense = [torch.ones(10, 3), torch.full((10, 3), 2.0)]
    torch.testing.assert_close(total(param, dense), torch.full((10, 3), 3.0))


def test_auto_runs_one_piece_per_core_where_the_float32_kernel_shares_words_across_texts():
    """ "auto": one piece per core (None) for an LSTM without embedding dropout trained in float32
    through the C kernel (larger pieces project each shared word once); 6000 tokens otherwise (a
    dropout mask per text, a GRU, bfloat16's oneDNN layer, no kernel); a number given wins."""
    cpu = torch.device("cpu")
    seed_like = build_model(ModelConfig(embedding_dropout=0.0), 50, 2)
    masked, gru = build_model(ModelConfig(), 50, 2), build_model(ModelConfig(cell="gru", embedding_dropout=0.0), 50, 2)
    assert RuntimeConfig().micro_batch_tokens == "auto"
    kernel = fastrnn.library() is not None
    assert piece_tokens("auto", seed_like, cpu, torch.float32) == (None if kernel else MICRO_BATCH_TOKENS)
    assert piece_tokens("auto", seed_like, cpu, torch.bfloat16) == MICRO_BATCH_TOKENS
    assert piece_tokens("auto", masked, cpu, torch.float32) == piece_tokens("auto", gru, cpu, torch.float32) == MICRO_BATCH_TOKENS
    assert piece_tokens(3000, seed_like, cpu, torch.float32) == 3000
    assert piece_tokens(None, masked, cpu, torch.float32) is None
