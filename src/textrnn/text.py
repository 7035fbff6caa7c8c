"""Text preparation: clean, tokenize, build a vocabulary, encode, pad or truncate.

No torch here: this layer is plain Python and numpy, so it can be inspected, tested and fuzzed on
its own, and used by the server without the training stack.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence, cast

import numpy as np

from .errors import ArtifactError, ConfigError, expected_one_of
from .progress import track

PAD, UNK = "<pad>", "<unk>"
SPECIALS = (PAD, UNK)
PAD_ID, UNK_ID = 0, 1

_TAG = re.compile(r"<[^>]{0,200}>")  # IMDB is full of "<br />"; bounded so a stray "<" cannot scan a 50 MB text
# A word (letters/digits, with inner apostrophes or hyphens: "don't", "well-made"), or one punctuation mark.
_TOKEN = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")
_SPACE = re.compile(r"\s+")

TRUNCATING = ("post", "pre", "head_tail")
PADDING = ("post", "pre")
NormalForm = Literal["NFC", "NFKC", "NFD", "NFKD"]  # unicodedata.normalize's forms


@dataclass(frozen=True)
class Tokenizer:
    """Normalize and split text into words and punctuation.

    ``lower``: lower-case; ``strip_html``: turn tags such as ``<br />`` into spaces and unescape
    entities; ``normalize``: a Unicode normal form (NFKC folds full-width letters, ligatures and
    compatibility characters), or ``None``.
    """

    lower: bool = True
    strip_html: bool = True
    normalize: str | None = "NFKC"

    def __post_init__(self) -> None:
        if self.normalize not in (None, "NFC", "NFKC", "NFD", "NFKD"):
            raise expected_one_of("normalize", self.normalize, ["NFC", "NFKC", "NFD", "NFKD"])

    def clean(self, text: str) -> str:
        """The text as the tokenizer sees it, before splitting."""
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        if self.strip_html:
            text = html.unescape(_TAG.sub(" ", text))
        if self.normalize:
            text = unicodedata.normalize(cast(NormalForm, self.normalize), text)  # a form __post_init__ checked
        if self.lower:
            text = text.lower()
        return _SPACE.sub(" ", text).strip()

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(self.clean(text))

    __call__ = tokenize

    def to_dict(self) -> dict:
        return {"lower": self.lower, "strip_html": self.strip_html, "normalize": self.normalize}

    @classmethod
    def from_config(cls, text: Any) -> "Tokenizer":
        """The tokenizer of a ``TextConfig`` (its lower, strip_html and normalize)."""
        return cls(lower=text.lower, strip_html=text.strip_html, normalize=text.normalize)


class Vocabulary:
    """Token <-> id. Specials first (``<pad>`` = 0, ``<unk>`` = 1), then by frequency, ties
    alphabetical, so the same corpus always gives the same ids."""

    # Each kept word's count in the corpus: set by ``build`` (and ``TokenizedCorpus.vocabulary``);
    # a vocabulary read back from vocab.txt, which holds no counts, has none.
    counts: dict[str, int]

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tokens[:2] != list(SPECIALS):
            raise ArtifactError(f"A vocabulary must start with {PAD!r} and {UNK!r}. Received: {tokens[:2]!r}")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, c in Counter(tokens).items() if c > 1)
            raise ArtifactError(f"The vocabulary holds {dup!r} twice.")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int | None = None, min_freq: int = 1) -> "Vocabulary":
        """``max_size`` counts the specials; ``min_freq`` drops rarer tokens."""
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        types = list(counts)
        return _vocab_from_counts(types, np.array([counts[t] for t in types], dtype=np.int64), max_size, min_freq)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def encode(self, tokens: Sequence[str]) -> list[int]:
        get = self.index.get
        return [get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.tokens) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines)


def truncate(ids: Iterable[int], max_length: int, truncating: str = "post", head_fraction: float = 0.5) -> list[int]:
    """Cut to ``max_length``: keep the start (``post``), the end (``pre``), or both ends
    (``head_tail``: a review's verdict is often in its last sentences)."""
    ids = list(ids)
    if len(ids) <= max_length:
        return ids
    if truncating == "post":
        return ids[:max_length]
    if truncating == "pre":
        return ids[len(ids) - max_length :]
    if truncating == "head_tail":
        head = int(round(max_length * head_fraction))
        return ids[:head] + ids[len(ids) - (max_length - head) :]
    raise expected_one_of("truncating", truncating, TRUNCATING)


def pad(
    sequences: Sequence[Sequence[int]],
    max_length: int | None = None,
    padding: str = "post",
    truncating: str = "post",
    head_fraction: float = 0.5,
    value: int = PAD_ID,
) -> tuple[np.ndarray, np.ndarray]:
    """A (N, max_length) int64 matrix and the (N,) real lengths, after truncation.

    ``max_length=None`` pads to the longest sequence. A length of 0 stays 0: the model treats an
    empty text as a defined input (see models.py)."""
    if padding not in PADDING:
        raise expected_one_of("padding", padding, PADDING)
    if truncating not in TRUNCATING:
        raise expected_one_of("truncating", truncating, TRUNCATING)
    if max_length is None:
        max_length = max((len(s) for s in sequences), default=0)
    if max_length < 1 and sequences:
        max_length = 1
    out = np.full((len(sequences), max_length), value, dtype=np.int64)
    lengths = np.zeros(len(sequences), dtype=np.int64)
    for i, seq in enumerate(sequences):
        seq = truncate(seq, max_length, truncating, head_fraction)
        n = len(seq)
        lengths[i] = n
        if n:
            if padding == "post":
                out[i, :n] = seq
            else:
                out[i, max_length - n :] = seq
    return out, lengths


def encode_texts(
    texts: Iterable[str], tokenizer: Tokenizer, vocab: Vocabulary, max_length: int, truncating: str = "post", head_fraction: float = 0.5
) -> list[np.ndarray]:
    """Tokenize, map to ids and truncate: one int32 array per text (unpadded; batching pads)."""
    get = vocab.index.get
    out = []
    for text in texts:
        ids = [get(t, UNK_ID) for t in tokenizer(text)]
        out.append(np.asarray(truncate(ids, max_length, truncating, head_fraction), dtype=np.int32))
    return out


class TokenizedCorpus:
    """Texts tokenized once, as ids into a corpus-wide list of distinct tokens.

    Tokenizing is the slow part of preparation (pure Python regexes); everything after it, the
    vocabulary with any ``max_size``/``min_freq`` and the encoding, follows from this compact form
    with numpy in milliseconds. So it is what gets cached (see ``tokenize_cached``).
    """

    def __init__(self, types: list[str], ids: np.ndarray, offsets: np.ndarray):
        self.types = types  # distinct tokens, first-seen order
        self.ids = ids  # (total_tokens,) int32 indices into types
        self.offsets = offsets  # (N + 1,) int64: text i is ids[offsets[i]:offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def build(cls, texts: Iterable[str], tokenizer: Tokenizer) -> "TokenizedCorpus":
        index: dict[str, int] = {}
        setdefault = index.setdefault
        flat: list[int] = []
        offsets = [0]
        total = len(texts) if isinstance(texts, Sized) else 0
        for text in track(texts, total, "tokenizing"):
            # setdefault(t, len(index)) gives a new token the next free id
            flat.extend([setdefault(t, len(index)) for t in tokenizer(text)])
            offsets.append(len(flat))
        return cls(list(index), np.asarray(flat, dtype=np.int32), np.asarray(offsets, dtype=np.int64))

    def counts(self) -> np.ndarray:
        return np.bincount(self.ids, minlength=len(self.types))

    def vocabulary(self, max_size: int | None = None, min_freq: int = 1) -> Vocabulary:
        """The same vocabulary ``Vocabulary.build`` gives on these texts."""
        return _vocab_from_counts(self.types, self.counts(), max_size, min_freq)

    def encode(self, vocab: Vocabulary, max_length: int, truncating: str = "post", head_fraction: float = 0.5) -> list[np.ndarray]:
        get = vocab.index.get
        lut = np.fromiter((get(t, UNK_ID) for t in self.types), dtype=np.int32, count=len(self.types))
        mapped = lut[self.ids] if len(self.ids) else self.ids
        out = []
        for start, end in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist()):
            seq = mapped[start:end]
            if end - start > max_length:
                seq = np.asarray(truncate(seq, max_length, truncating, head_fraction), dtype=np.int32)
            out.append(seq)
        return out

    def save(self, path: str | Path) -> None:
        blob = np.frombuffer("\n".join(self.types).encode("utf-8"), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, types=blob, ids=self.ids, offsets=self.offsets)

    @classmethod
    def load(cls, path: str | Path) -> "TokenizedCorpus":
        with np.load(path, allow_pickle=False) as z:
            blob = z["types"].tobytes().decode("utf-8")
            return cls(blob.split("\n") if blob else [], z["ids"], z["offsets"])


def _vocab_from_counts(types: list[str], counts: np.ndarray, max_size: int | None, min_freq: int) -> Vocabulary:
    if min_freq < 1:
        raise ConfigError(f"min_freq must be at least 1. Received: min_freq={min_freq}")
    if max_size is not None and max_size < len(SPECIALS) + 1:
        raise ConfigError(f"max_vocab_size must be at least 3 (two specials and one word). Received: max_vocab_size={max_size}")
    keep = [i for i in np.flatnonzero(counts >= min_freq).tolist() if types[i] not in SPECIALS]
    keep.sort(key=lambda i: (-counts[i], types[i]))
    if max_size is not None:
        keep = keep[: max_size - len(SPECIALS)]
    vocab = Vocabulary([*SPECIALS, *(types[i] for i in keep)])
    vocab.counts = {types[i]: int(counts[i]) for i in keep}
    return vocab


def tokenize_cached(texts: Sequence[str], tokenizer: Tokenizer, cache: Path | None) -> TokenizedCorpus:
    """``TokenizedCorpus.build`` with a cache keyed by the texts' content and the tokenizer's
    settings: the second run on the same data skips tokenization."""

    if cache is None:
        return TokenizedCorpus.build(texts, tokenizer)
    h = hashlib.blake2b(json.dumps({"v": 1, "tokenizer": tokenizer.to_dict(), "n": len(texts)}).encode(), digest_size=20)
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    path = Path(cache) / f"tokens-{h.hexdigest()}.npz"
    if path.is_file():
        try:
            corpus = TokenizedCorpus.load(path)
            if len(corpus) == len(texts):
                return corpus
        except (OSError, ValueError, KeyError, UnicodeDecodeError):
            pass  # a damaged cache entry is rebuilt below
    corpus = TokenizedCorpus.build(texts, tokenizer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=path.parent)
        os.close(fd)
        corpus.save(tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache only costs speed
    return corpus
