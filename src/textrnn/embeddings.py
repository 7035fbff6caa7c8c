"""Pretrained word vectors: GloVe / word2vec / fastText readers and writers, alignment of a
vector file to a vocabulary, and word2vec training (gensim, optional).

No torch here: everything is numpy, so the matrix from ``align`` can be copied into any
embedding layer. Files are streamed line by line, and ``vocabulary=`` keeps only the words a
model needs, so a 5-GB GloVe file costs the memory of the rows kept, not of the file.
"""

from __future__ import annotations

import codecs
import gzip
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import ConfigError, DataError, expected_one_of
from .io import atomic_path

__all__ = [
    "FORMATS",
    "Alignment",
    "align",
    "load_pretrained",
    "read_vectors",
    "train_word2vec",
    "write_vectors",
]

logger = logging.getLogger("textrnn")

FORMATS = ("auto", "glove", "word2vec", "word2vec-binary", "fasttext")
MISSING_SHOWN = 50  # how many missing tokens an Alignment lists

_GZIP_MAGIC = b"\x1f\x8b"
_FASTTEXT_MAGIC = (793712314).to_bytes(4, "little")  # first bytes of a fastText model .bin
_CHUNK = 1 << 20
_MAX_PREALLOCATED = 4_000_000  # rows; a header count above this grows by doubling instead


# --------------------------------------------------------------------------- reading


def read_vectors(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    vocabulary: set[str] | None = None,
    lowercase: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Read a vector file into ``(words, matrix)``, the matrix float32 of shape ``(n, dim)``.

    ``vocabulary`` keeps only those words (compared after lower-casing when ``lowercase``).
    A word that occurs twice (or twice after lower-casing) keeps its first vector: these files
    are sorted by frequency. Text formats may be gzipped.
    """
    if vocabulary is None:
        keep = None
    else:
        vocabulary = set(vocabulary)
        keep = vocabulary.__contains__
    return _read(path, format, keep=keep, lowercase=lowercase)


def _read(
    path: str | os.PathLike,
    format: str,
    *,
    keep: Callable[[str], bool] | None,
    lowercase: bool,
) -> tuple[list[str], np.ndarray]:
    """``read_vectors`` with any word filter: ``keep(word) -> bool``."""
    if format not in FORMATS:
        raise expected_one_of("format", format, FORMATS)
    path = Path(path)
    if not path.exists():
        raise DataError(f"Vector file not found: {str(path)!r}.")
    if not path.is_file():
        raise DataError(f"Vector file is not a file: {str(path)!r}.")
    if format == "auto":
        format = _detect_format(path)
    with _open(path) as fh:
        if format == "word2vec-binary":
            return _read_binary(fh, path, keep, lowercase)
        return _read_text(fh, path, keep, lowercase, header=format != "glove")


def _open(path: Path) -> io.BufferedIOBase:
    """The file as bytes, gunzipped when it starts with the gzip magic number (a GzipFile or a
    buffered file: binary streams both, not typing.IO)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def _detect_format(path: Path) -> str:
    """Guess the format: ``.bin`` -> word2vec-binary, ``.vec`` -> fasttext, else sniff line 1."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".bin"):
        return "word2vec-binary"
    if name.endswith(".vec"):
        return "fasttext"
    with _open(path) as fh:
        try:
            first = fh.readline(256)
            rest = fh.read(4096)
        except (OSError, EOFError) as e:  # a damaged .gz
            raise DataError(f"Cannot read vector file {str(path)!r}: {e}.") from None
    if _parse_header(first) is None:
        return "glove"
    # a "count dim" line: word2vec text, or word2vec binary under another extension
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(rest, final=False)
    except UnicodeDecodeError:
        return "word2vec-binary"
    if any(ch < " " and ch not in "\t\n\r" for ch in text):
        return "word2vec-binary"
    return "word2vec"


def _parse_header(line: bytes) -> tuple[int, int] | None:
    """``(count, dim)`` from a ``b"count dim"`` line, or None when the line is not one."""
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


class _Rows:
    """A float32 matrix that grows by doubling, so reading never holds rows twice over."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.data = np.empty((max(capacity, 1), dim), dtype=np.float32)
        self.n = 0

    def next_row(self) -> np.ndarray:
        if self.n == len(self.data):
            grown = np.empty((2 * len(self.data), self.data.shape[1]), dtype=np.float32)
            grown[: self.n] = self.data
            self.data = grown
        self.n += 1
        return self.data[self.n - 1]

    def drop_last(self) -> None:
        self.n -= 1

    def array(self) -> np.ndarray:
        return self.data if self.n == len(self.data) else self.data[: self.n].copy()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _decode(raw: bytes, lineno: int, where: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{where}: line {lineno} is not valid UTF-8 (byte {raw[e.start : e.start + 1]!r} at column {e.start + 1})."
        ) from None
    if lineno == 1:
        text = text.lstrip("\ufeff")
    return text.rstrip()  # "\n", "\r\n" and fastText's trailing space


def _header(text: str, where: str, lineno: int) -> tuple[int, int]:
    """The word2vec header line's (count, dim)."""
    parsed = _parse_header(text.encode())
    if parsed is None:
        raise DataError(
            f"{where}: line {lineno} should be the word2vec header 'count dim'. "
            f"Received: {text[:60]!r}. If the file has no header, use format='glove'."
        )
    if parsed[1] < 1:
        raise DataError(f"{where}: the header gives dimension {parsed[1]}; expected >= 1.")
    return parsed


def _word_and_values(
    text: str, dim: int, where: str, lineno: int, first_line: int, first_looks_like_header: bool
) -> tuple[str, str | list[str]]:
    """A vector line's word, and its values: the rest of the line (split only if the word is
    kept) or, for a word with spaces (GloVe 840B has a few), the last ``dim`` fields."""
    if text.count(" ") == dim:
        word, _, values = text.partition(" ")
        return word, values
    parts = text.split(" ")
    if len(parts) - 1 < dim or all(_is_number(p) for p in parts[1 : len(parts) - dim]):
        hint = " Line 1 looks like a word2vec header: use format='word2vec'." if first_looks_like_header else ""
        raise DataError(f"{where}: line {lineno} has {len(parts) - 1} values; expected {dim}, the dimension of line {first_line}.{hint}")
    return " ".join(parts[: len(parts) - dim]), parts[len(parts) - dim :]


def _read_text(
    fh: io.BufferedIOBase,
    path: Path,
    keep: Callable[[str], bool] | None,
    lowercase: bool,
    *,
    header: bool,
) -> tuple[list[str], np.ndarray]:
    """GloVe (``header=False``) or word2vec/fastText text (a ``count dim`` first line)."""
    where = str(path)
    count: int | None = None
    dim: int | None = None
    first_line = 0  # the line that fixed ``dim``
    first_looks_like_header = False
    words: list[str] = []
    seen: set[str] = set()
    rows: _Rows | None = None
    read = 0  # vector lines read, kept or not
    lineno = 0
    try:
        for lineno, raw in enumerate(fh, start=1):
            text = _decode(raw, lineno, where)
            if not text:
                continue
            if header and count is None:
                (count, dim), first_line = _header(text, where, lineno), lineno
                rows = _Rows(dim, capacity=min(count, _MAX_PREALLOCATED) if keep is None else 1024)
                continue
            if dim is None:  # GloVe: the first line fixes the dimension
                dim, first_line = text.count(" "), lineno
                first_looks_like_header = _parse_header(text.encode()) is not None
                if dim < 1:
                    raise DataError(f"{where}: line {lineno} holds a word without a vector: {text[:60]!r}.")
                rows = _Rows(dim)
            assert rows is not None
            read += 1
            word, values = _word_and_values(text, dim, where, lineno, first_line, first_looks_like_header)
            if lowercase:
                word = word.lower()
            if word in seen or (keep is not None and not keep(word)):
                continue
            row = rows.next_row()
            try:
                row[:] = values.split(" ") if isinstance(values, str) else values
            except ValueError:
                rows.drop_last()
                raise DataError(f"{where}: line {lineno} has a value that is not a number, for word {word!r}.") from None
            seen.add(word)
            words.append(word)
    except (OSError, EOFError) as e:  # a damaged or truncated .gz
        raise DataError(f"Cannot read vector file {where!r} near line {lineno + 1}: {e}.") from None
    if dim is None:
        raise DataError(f"Vector file is empty: {where!r}.")
    if count is not None and read < count:
        raise DataError(f"{where}: the header promises {count} vectors but the file holds {read}; is it truncated?")
    if count is not None and read > count:
        logger.warning("%s: the header promises %d vectors; read %d", where, count, read)
    assert rows is not None
    return words, rows.array()


def _read_binary(fh: io.BufferedIOBase, path: Path, keep: Callable[[str], bool] | None, lowercase: bool) -> tuple[list[str], np.ndarray]:
    """word2vec binary: ``b"count dim\\n"``, then per word ``word + b" "`` + dim little-endian
    float32, and an optional ``b"\\n"``."""
    where = str(path)
    try:
        head = fh.readline(256)
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read vector file {where!r}: {e}.") from None
    if not head:
        raise DataError(f"Vector file is empty: {where!r}.")
    parsed = _parse_header(head)
    if parsed is None:
        hint = ""
        if head.startswith(_FASTTEXT_MAGIC):
            hint = " This is a fastText model .bin: use its .vec file (format='fasttext')."
        raise DataError(f"{where}: the word2vec binary header 'count dim' is missing. Received: {head[:40]!r}.{hint}")
    count, dim = parsed
    if dim < 1:
        raise DataError(f"{where}: the header gives dimension {dim}; expected >= 1.")
    width = 4 * dim
    words: list[str] = []
    seen: set[str] = set()
    rows = _Rows(dim, capacity=min(count, _MAX_PREALLOCATED) if keep is None else 1024)
    buf = b""
    pos = 0
    try:
        for i in range(count):
            space = buf.find(b" ", pos)
            while space < 0 or len(buf) - space - 1 < width:
                more = fh.read(_CHUNK)
                if not more:
                    raise DataError(f"{where}: the header promises {count} vectors but the file ends in vector {i + 1}; is it truncated?")
                buf = buf[pos:] + more
                pos = 0
                space = buf.find(b" ")
            word = buf[pos:space].lstrip(b"\n").decode("utf-8", errors="replace")
            start, pos = space + 1, space + 1 + width
            if lowercase:
                word = word.lower()
            if word in seen or (keep is not None and not keep(word)):
                continue
            rows.next_row()[:] = np.frombuffer(buf, dtype="<f4", count=dim, offset=start)
            seen.add(word)
            words.append(word)
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read vector file {where!r}: {e}.") from None
    return words, rows.array()


# --------------------------------------------------------------------------- writing


def _vector_matrix(words: Sequence[str], vectors) -> np.ndarray:
    """``vectors`` as a float32 (len(words), dim) matrix, or a DataError saying what is wrong."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise DataError(f"Expected a 2-D vectors matrix. Received: shape {vectors.shape}.")
    if len(words) != len(vectors):
        raise DataError(f"Expected one vector per word. Received: {len(words)} words, {len(vectors)} vectors.")
    return vectors


def write_vectors(
    path: str | os.PathLike,
    words: Sequence[str],
    vectors: np.ndarray,
    format: str = "word2vec",
) -> Path:
    """Write ``words`` and their ``vectors`` as glove, word2vec (= fasttext) text or
    word2vec-binary; gzipped when ``path`` ends in ``.gz``. Atomic: a reader never sees half."""
    choices = ("glove", "word2vec", "word2vec-binary", "fasttext")
    if format not in choices:
        raise expected_one_of("format", format, choices)
    vectors = _vector_matrix(words, vectors)
    binary = format == "word2vec-binary"
    for word in words:
        if not word or "\n" in word or (binary and " " in word):
            raise DataError(
                f"A word cannot be empty or hold a newline{' or a space' if binary else ''} in {format} files. Received: {word!r}."
            )
    dim = vectors.shape[1]

    def write(fh: io.BufferedIOBase) -> None:
        if format != "glove":
            fh.write(f"{len(words)} {dim}\n".encode())
        if binary:
            little = vectors.astype("<f4", copy=False)
            for word, row in zip(words, little):
                fh.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
            return
        # %.9g: enough digits for every float32 to read back exactly
        line = "%s " + " ".join(["%.9g"] * dim) + "\n"
        for word, row in zip(words, vectors.tolist()):
            fh.write((line % (word, *row)).encode("utf-8"))

    path = Path(path)
    _atomic_write(path, write, gz=path.name.lower().endswith(".gz"))
    return path


def _atomic_write(path: Path, write: Callable[[io.BufferedIOBase], None], *, gz: bool) -> None:
    """Write into a temporary file beside ``path``, then rename it into place (io.atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        if gz:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as fh:
                write(fh)
        else:
            write(raw)


# --------------------------------------------------------------------------- alignment


@dataclass
class Alignment:
    """An embedding matrix whose rows follow a vocabulary, and how much of it was pretrained."""

    matrix: np.ndarray = field(repr=False)  # (len(tokens), dim) float32
    found: int  # tokens, specials excluded, that got a pretrained vector
    total: int  # tokens, specials excluded
    missing: list[str]  # tokens without a vector, in vocabulary order, at most MISSING_SHOWN

    @property
    def coverage(self) -> float:
        """The share of (non-special) tokens that got a pretrained vector."""
        return self.found / self.total if self.total else 0.0

    @property
    def dim(self) -> int:
        """The vector dimension."""
        return int(self.matrix.shape[1])


def align(
    tokens: Sequence[str],
    words: list[str],
    vectors: np.ndarray,
    *,
    specials: Sequence[str] = ("<pad>", "<unk>"),
    seed: int = 0,
    lowercase_fallback: bool = True,
) -> Alignment:
    """Build the embedding matrix for ``tokens`` (the vocabulary in id order) from pretrained
    ``words``/``vectors``.

    The first special (the padding token) gets a zero row; the other specials and the tokens
    without a vector get normal noise with the standard deviation of the vectors found.
    With ``lowercase_fallback``, "Movie" without a vector takes that of "movie", and "nasa"
    that of the first case variant in the file ("NASA").
    """
    vectors = _vector_matrix(words, vectors)
    dim = vectors.shape[1]
    index: dict[str, int] = {}
    for row, word in enumerate(words):
        index.setdefault(word, row)
    folded: dict[str, int] | None = None  # lower-cased word -> first row, built on demand

    special_set = set(specials)
    pad = specials[0] if specials else None
    matrix = np.zeros((len(tokens), dim), dtype=np.float32)
    found_rows: list[int] = []  # rows of `vectors` used
    random_rows: list[int] = []  # rows of `matrix` to fill with noise
    missing: list[str] = []
    total = 0
    for r, token in enumerate(tokens):
        if token in special_set:
            if token != pad:
                random_rows.append(r)
            continue
        total += 1
        i = index.get(token)
        if i is None and lowercase_fallback:
            lower = token.lower()
            i = index.get(lower)
            if i is None:
                if folded is None:
                    folded = {}
                    for j, word in enumerate(words):
                        folded.setdefault(word.lower(), j)
                i = folded.get(lower)
        if i is None:
            random_rows.append(r)
            if len(missing) < MISSING_SHOWN:
                missing.append(token)
        else:
            matrix[r] = vectors[i]
            found_rows.append(i)
    if random_rows:
        if found_rows:
            std = float(vectors[found_rows].std())
        elif len(vectors):
            std = float(vectors.std())
        else:
            std = 1.0
        rng = np.random.default_rng(seed)
        noise = rng.normal(0.0, std or 1.0, size=(len(random_rows), dim))
        matrix[random_rows] = noise.astype(np.float32)
    return Alignment(matrix=matrix, found=len(found_rows), total=total, missing=missing)


def load_pretrained(
    path: str | os.PathLike,
    tokens: Sequence[str],
    format: str = "auto",
    *,
    seed: int = 0,
) -> Alignment:
    """Read only the vectors ``tokens`` can use (any case variant) and align them."""
    wanted = set(tokens)
    folded = {t.lower() for t in tokens}
    words, vectors = _read(path, format, keep=lambda w: w in wanted or w.lower() in folded, lowercase=False)
    result = align(tokens, words, vectors, seed=seed)
    logger.info(
        "Pretrained vectors %s: %d of %d tokens found (%.1f%%), dimension %d",
        path,
        result.found,
        result.total,
        100 * result.coverage,
        result.dim,
    )
    if result.total and not result.found:
        logger.warning(
            "No token has a vector in %s: check the file's format and casing against the tokenizer's (first tokens missing: %s)",
            path,
            result.missing[:5],
        )
    elif result.missing:
        logger.debug("Tokens without a pretrained vector (first %d): %s", len(result.missing), result.missing)
    return result


# --------------------------------------------------------------------------- training


def train_word2vec(
    token_lists: Iterable[list[str]],
    output_path: str | os.PathLike,
    *,
    dim: int = 100,
    window: int = 5,
    min_count: int = 2,
    epochs: int = 5,
    sg: bool = False,
    workers: int = 2,
    seed: int = 0,
) -> Path:
    """Train word2vec (gensim) on tokenized texts and save it as word2vec text, most frequent
    words first, so ``read_vectors(output_path)`` reads it back.

    Runs are repeatable only with ``workers=1`` and a fixed ``PYTHONHASHSEED`` (gensim's rule).
    """
    for name, value, least in (
        ("dim", dim, 1),
        ("window", window, 1),
        ("min_count", min_count, 1),
        ("epochs", epochs, 1),
        ("workers", workers, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"Expected an integer {name} >= {least}. Received: {name}={value!r}.")
    try:
        from gensim.models import Word2Vec  # noqa: PLC0415  (optional extra: textrnn[word2vec])
    except ImportError:
        raise ConfigError("Training word2vec needs gensim, which is not installed: pip install 'textrnn[word2vec]'.") from None
    if iter(token_lists) is token_lists:  # gensim reads the corpus once per epoch, plus once
        token_lists = list(token_lists)
    model = Word2Vec(
        vector_size=dim,
        window=window,
        min_count=min_count,
        sg=int(bool(sg)),
        workers=workers,
        seed=seed,
    )
    model.build_vocab(token_lists)
    if not model.wv.index_to_key:
        raise DataError(f"No word occurs at least min_count={min_count} times in the texts given to word2vec.")
    model.train(token_lists, total_examples=model.corpus_count, epochs=epochs)
    logger.info("word2vec: %d words of dimension %d", len(model.wv.index_to_key), dim)
    return write_vectors(output_path, model.wv.index_to_key, model.wv.vectors, "word2vec")
