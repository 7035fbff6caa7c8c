import os
from pathlib import Path

import pytest

import textrnn  # noqa: F401  (first: TEXTRNN_CPU=avx2 must reach torch before its first operation)
from textrnn import runtime

REPO = Path(__file__).resolve().parents[1]
SHARED_IMDB = REPO.parent / "shared" / "data" / "aclImdb_v1.tar.gz"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's cache; the parsed-IMDB cache is shared across one session."""
    if "TEXTRNN_CACHE_DIR" not in os.environ or os.environ.get("TEXTRNN_TEST_OWN_CACHE"):
        monkeypatch.setenv("TEXTRNN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


# A test whose point is bfloat16 arithmetic: it runs where the CPU computes bfloat16 natively
# (avx512_bf16 or AMX), and is skipped elsewhere (AVX2 laptops, TEXTRNN_CPU=avx2), where training in
# bfloat16 is refused (test_precision checks that) and float32 is what runs.
needs_native_bf16 = pytest.mark.skipif(
    not runtime.cpu_has_native_bf16(), reason="no native bfloat16 on this CPU (avx512_bf16 or amx_bf16), or TEXTRNN_CPU=avx2"
)


def tiny_sentiment(n_each: int = 12):
    """A tiny two-class corpus any model can learn: the label is carried by one word."""
    pos = ["a good film", "truly great acting", "good fun and great music", "i loved it, great"]
    neg = ["a bad film", "truly awful acting", "bad plot and awful music", "i hated it, awful"]
    texts, labels = [], []
    for i in range(n_each):
        texts += [pos[i % 4], neg[i % 4]]
        labels += ["pos", "neg"]
    return texts, labels


def slow_cli_child(delay: float) -> str:
    """Python source for a child process running the real CLI with each batch slowed by ``delay``
    seconds, so a test can interrupt it mid-epoch."""
    return f"""
import sys, time
import textrnn.trainer as T
_collate = T.collate
def slow(*a, **k):
    time.sleep({delay})
    return _collate(*a, **k)
T.collate = slow
from textrnn.cli import main
sys.exit(main(sys.argv[1:]))
"""
