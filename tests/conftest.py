import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_IMDB = REPO.parent / "shared" / "data" / "aclImdb_v1.tar.gz"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's cache; the parsed-IMDB cache is shared across one session."""
    if "TEXTRNN_CACHE_DIR" not in os.environ or os.environ.get("TEXTRNN_TEST_OWN_CACHE"):
        monkeypatch.setenv("TEXTRNN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


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
import textrnn.training as T
_collate = T.collate
def slow(*a, **k):
    time.sleep({delay})
    return _collate(*a, **k)
T.collate = slow
from textrnn.cli import main
sys.exit(main(sys.argv[1:]))
"""
