from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest

from textrnn.embeddings import (
    FORMATS,
    Alignment,
    align,
    load_pretrained,
    read_vectors,
    train_word2vec,
    write_vectors,
)
from textrnn.errors import ConfigError, DataError

WORDS = ["the", "movie", "was", "Great", "café"]


@pytest.fixture
def vectors() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(size=(len(WORDS), 4)).astype(np.float32)


# --------------------------------------------------------------------------- round trips

TEXT_FORMATS = ["glove", "word2vec", "fasttext"]


@pytest.mark.parametrize("fmt", TEXT_FORMATS + ["word2vec-binary"])
def test_round_trip_each_format(tmp_path, vectors, fmt):
    path = write_vectors(tmp_path / "v.any", WORDS, vectors, fmt)
    words, matrix = read_vectors(path, fmt)
    assert words == WORDS
    assert matrix.dtype == np.float32 and matrix.shape == (5, 4)
    np.testing.assert_array_equal(matrix, vectors)  # %.9g text is exact for float32 too


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("glove.6B.4d.txt", "glove"),
        ("w2v.txt", "word2vec"),
        ("w2v.bin", "word2vec-binary"),
        ("crawl.vec", "fasttext"),
        ("glove.txt.gz", "glove"),
        ("w2v.txt.gz", "word2vec"),
        ("crawl.vec.gz", "fasttext"),
        ("w2v.bin.gz", "word2vec-binary"),
        ("binary-without-extension", "word2vec-binary"),  # sniffed from the bytes after the header
        ("words", "word2vec"),
        ("words2", "glove"),
    ],
)
def test_auto_detection(tmp_path, vectors, name, fmt):
    path = write_vectors(tmp_path / name, WORDS, vectors, fmt)
    words, matrix = read_vectors(path)  # format="auto"
    assert words == WORDS
    np.testing.assert_array_equal(matrix, vectors)


def test_gz_is_really_gzipped(tmp_path, vectors):
    path = write_vectors(tmp_path / "v.txt.gz", WORDS, vectors, "glove")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        assert fh.readline().startswith("the ")


def test_handwritten_glove_and_fasttext_trailing_space(tmp_path):
    (tmp_path / "g.txt").write_text("the 0.1 0.2 0.3\nmovie -1 2.5e-1 3\n", encoding="utf-8")
    words, matrix = read_vectors(tmp_path / "g.txt")
    assert words == ["the", "movie"]
    np.testing.assert_allclose(matrix, [[0.1, 0.2, 0.3], [-1, 0.25, 3]], rtol=1e-6)
    # fastText .vec lines end in a space; Windows files in \r\n
    (tmp_path / "f.vec").write_bytes(b"2 2\r\nthe 0.5 1 \r\nmovie 2 3 \r\n")
    words, matrix = read_vectors(tmp_path / "f.vec")
    assert words == ["the", "movie"]
    np.testing.assert_array_equal(matrix, [[0.5, 1], [2, 3]])


def test_binary_without_newline_after_vectors(tmp_path):
    payload = b"2 2\n" + b"a " + np.array([1, 2], "<f4").tobytes()
    payload += b"b " + np.array([3, 4], "<f4").tobytes()
    (tmp_path / "v.bin").write_bytes(payload)
    words, matrix = read_vectors(tmp_path / "v.bin")
    assert words == ["a", "b"]
    np.testing.assert_array_equal(matrix, [[1, 2], [3, 4]])


# --------------------------------------------------------------------------- filtering


@pytest.mark.parametrize("fmt", TEXT_FORMATS + ["word2vec-binary"])
def test_vocabulary_filter(tmp_path, vectors, fmt):
    path = write_vectors(tmp_path / "v", WORDS, vectors, fmt)
    words, matrix = read_vectors(path, fmt, vocabulary={"movie", "café", "absent"})
    assert words == ["movie", "café"]
    np.testing.assert_array_equal(matrix, vectors[[1, 4]])


def test_vocabulary_filter_keeping_nothing_gives_empty_matrix(tmp_path, vectors):
    path = write_vectors(tmp_path / "v.txt", WORDS, vectors, "glove")
    words, matrix = read_vectors(path, vocabulary={"absent"})
    assert words == [] and matrix.shape == (0, 4)


def test_lowercase_keeps_first_of_colliding_words(tmp_path):
    (tmp_path / "v.txt").write_text("The 1 1\nthe 2 2\nGREAT 3 3\n", encoding="utf-8")
    words, matrix = read_vectors(tmp_path / "v.txt", lowercase=True)
    assert words == ["the", "great"]
    np.testing.assert_array_equal(matrix, [[1, 1], [3, 3]])
    words, _ = read_vectors(tmp_path / "v.txt", lowercase=True, vocabulary={"great"})
    assert words == ["great"]


def test_words_with_spaces(tmp_path):
    (tmp_path / "v.txt").write_text("the 1 2\n. . . 3 4\nat name@domain.com 5 6\n", encoding="utf-8")
    words, matrix = read_vectors(tmp_path / "v.txt")
    assert words == ["the", ". . .", "at name@domain.com"]
    np.testing.assert_array_equal(matrix, [[1, 2], [3, 4], [5, 6]])
    # and through the writer, in both text formats
    for fmt in ("glove", "word2vec"):
        path = write_vectors(tmp_path / f"w.{fmt}", words, matrix, fmt)
        assert read_vectors(path, fmt)[0] == words


# --------------------------------------------------------------------------- errors


def test_dimension_mismatch_names_the_line(tmp_path):
    (tmp_path / "v.txt").write_text("the 1 2 3\nmovie 1 2\nwas 1 2 3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2 has 2 values; expected 3"):
        read_vectors(tmp_path / "v.txt")
    # more numbers than the dimension is a mismatch too, not a word with spaces
    (tmp_path / "w.vec").write_text("2 2\nthe 1 2\nmovie 1 2 3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3 has 3 values; expected 2"):
        read_vectors(tmp_path / "w.vec")


def test_header_read_as_glove_gets_a_hint(tmp_path, vectors):
    path = write_vectors(tmp_path / "v.txt", WORDS, vectors, "word2vec")
    with pytest.raises(DataError, match="format='word2vec'"):
        read_vectors(path, "glove")


def test_missing_header_for_word2vec(tmp_path, vectors):
    path = write_vectors(tmp_path / "v.txt", WORDS, vectors, "glove")
    with pytest.raises(DataError, match="line 1 should be the word2vec header"):
        read_vectors(path, "word2vec")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.txt"):
        read_vectors(tmp_path / "nope.txt")


@pytest.mark.parametrize("name", ["empty.txt", "empty.vec", "empty.bin", "blank.txt"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_text("\n\n" if name.startswith("blank") else "")
    with pytest.raises(DataError, match="Vector file is empty"):
        read_vectors(tmp_path / name)


def test_undecodable_text(tmp_path):
    (tmp_path / "v.txt").write_bytes(b"the 1 2\nbad\xff 3 4\n")
    with pytest.raises(DataError, match="line 2 is not valid UTF-8"):
        read_vectors(tmp_path / "v.txt")


def test_binary_undecodable_word_is_replaced(tmp_path):
    (tmp_path / "v.bin").write_bytes(b"1 1\nbad\xff " + np.array([1], "<f4").tobytes())
    words, _ = read_vectors(tmp_path / "v.bin")
    assert words == ["bad\ufffd"]


def test_not_a_number(tmp_path):
    (tmp_path / "v.txt").write_text("the 1 2\nmovie 1 x\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 .*not a number"):
        read_vectors(tmp_path / "v.txt")


@pytest.mark.parametrize("fmt", ["word2vec", "word2vec-binary"])
def test_truncated_file(tmp_path, vectors, fmt):
    path = write_vectors(tmp_path / "v", WORDS, vectors, fmt)
    data = path.read_bytes()
    cut = data.rindex(b"caf")  # drop the last vector, whole
    path.write_bytes(data[:cut])
    with pytest.raises(DataError, match="header promises 5 vectors .* is it truncated"):
        read_vectors(path, fmt)


def test_fasttext_model_bin_gets_a_hint(tmp_path):
    (tmp_path / "cc.en.300.bin").write_bytes((793712314).to_bytes(4, "little") + b"\x0c" * 60)
    with pytest.raises(DataError, match=r"fastText model \.bin: use its \.vec file"):
        read_vectors(tmp_path / "cc.en.300.bin")


def test_unknown_format(tmp_path, vectors):
    path = write_vectors(tmp_path / "v.txt", WORDS, vectors, "glove")
    with pytest.raises(ConfigError, match="Received: format='glov'.*'glove'"):
        read_vectors(path, "glov")
    with pytest.raises(ConfigError):
        write_vectors(tmp_path / "w", WORDS, vectors, "auto")
    assert "auto" in FORMATS


def test_write_rejects_bad_input(tmp_path, vectors):
    with pytest.raises(DataError, match="one vector per word"):
        write_vectors(tmp_path / "v", WORDS[:2], vectors)
    with pytest.raises(DataError, match="space"):
        write_vectors(tmp_path / "v.bin", ["a b"], vectors[:1], "word2vec-binary")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# --------------------------------------------------------------------------- alignment


def _vocab() -> list[str]:
    return ["<pad>", "<unk>", "the", "Movie", "nasa", "plot", "was", "zzz"]


def test_align_rows_and_counts():
    words = ["the", "movie", "NASA", "was", "extra"]
    vecs = np.arange(10, dtype=np.float32).reshape(5, 2) + 1
    result = align(_vocab(), words, vecs)
    assert isinstance(result, Alignment)
    assert result.matrix.shape == (8, 2) and result.matrix.dtype == np.float32
    np.testing.assert_array_equal(result.matrix[0], 0)  # <pad>
    np.testing.assert_array_equal(result.matrix[2], vecs[0])  # the
    np.testing.assert_array_equal(result.matrix[3], vecs[1])  # Movie -> movie
    np.testing.assert_array_equal(result.matrix[4], vecs[2])  # nasa -> NASA
    np.testing.assert_array_equal(result.matrix[6], vecs[3])  # was
    assert (result.found, result.total) == (4, 6)
    assert result.coverage == pytest.approx(4 / 6)
    assert result.missing == ["plot", "zzz"]
    assert result.dim == 2
    # <unk> and the missing tokens get noise, not zeros, and not a copy of each other
    noise = result.matrix[[1, 5, 7]]
    assert np.all(noise != 0) and len({tuple(r) for r in noise.tolist()}) == 3


def test_align_noise_scale_and_seed():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(500)]
    vecs = (rng.normal(size=(500, 20)) * 0.3).astype(np.float32)
    tokens = ["<pad>", "<unk>", *words[:100], *[f"new{i}" for i in range(300)]]
    a = align(tokens, words, vecs, seed=3)
    assert a.matrix[102:].std() == pytest.approx(vecs[:100].std(), rel=0.1)
    np.testing.assert_array_equal(a.matrix, align(tokens, words, vecs, seed=3).matrix)
    assert not np.array_equal(a.matrix, align(tokens, words, vecs, seed=4).matrix)
    assert len(a.missing) == 50 and a.missing[0] == "new0"


def test_align_without_lowercase_fallback():
    result = align(_vocab(), ["movie"], np.ones((1, 3), np.float32), lowercase_fallback=False)
    assert result.found == 0 and result.coverage == 0.0
    assert result.missing[:2] == ["the", "Movie"]


def test_align_empty_vocabulary_and_custom_specials():
    assert align(["<pad>", "<unk>"], ["a"], np.ones((1, 2))).coverage == 0.0
    result = align(["[PAD]", "[UNK]", "a"], ["a"], np.ones((1, 2)), specials=("[PAD]", "[UNK]"))
    np.testing.assert_array_equal(result.matrix[0], 0)
    assert (result.found, result.total) == (1, 1)


def test_align_rejects_mismatched_input():
    with pytest.raises(DataError, match="one vector per word"):
        align(["<pad>", "a"], ["a", "b"], np.ones((1, 2)))


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("fmt", ["glove", "word2vec-binary"])
def test_load_pretrained(tmp_path, fmt, caplog):
    words = ["the", "movie", "Nasa", "was", "irrelevant"]
    vecs = np.arange(15, dtype=np.float32).reshape(5, 3)
    path = write_vectors(tmp_path / ("v.bin" if fmt.endswith("binary") else "v.txt"), words, vecs, fmt)
    with caplog.at_level(logging.INFO, logger="textrnn"):
        result = load_pretrained(path, _vocab(), seed=1)
    assert result.matrix.shape == (8, 3)
    assert (result.found, result.total) == (4, 6)
    np.testing.assert_array_equal(result.matrix[3], vecs[1])  # Movie -> movie
    np.testing.assert_array_equal(result.matrix[4], vecs[2])  # nasa -> Nasa
    assert "4 of 6 tokens" in caplog.text


def test_load_pretrained_warns_when_nothing_matches(tmp_path, caplog):
    path = write_vectors(tmp_path / "v.txt", ["x"], np.ones((1, 2)), "glove")
    with caplog.at_level(logging.WARNING, logger="textrnn"):
        result = load_pretrained(path, _vocab())
    assert result.found == 0 and "No token has a vector" in caplog.text


def test_train_word2vec(tmp_path):
    pytest.importorskip("gensim")
    corpus = [["a", "good", "movie"], ["a", "bad", "movie"], ["good", "plot"], ["rare"]] * 20
    out = train_word2vec(iter(corpus), tmp_path / "out" / "w2v.txt", dim=8, epochs=2, workers=1)
    assert out == tmp_path / "out" / "w2v.txt"
    assert out.read_text(encoding="utf-8").startswith("6 8\n")
    words, matrix = read_vectors(out)
    assert set(words) == {"a", "good", "movie", "bad", "plot", "rare"}
    assert words[0] in {"a", "good", "movie"}  # most frequent first
    assert matrix.shape == (6, 8) and np.isfinite(matrix).all()
    assert [p.name for p in out.parent.iterdir()] == ["w2v.txt"]  # no temporary left


def test_train_word2vec_errors(tmp_path):
    pytest.importorskip("gensim")
    with pytest.raises(ConfigError, match="dim=0"):
        train_word2vec([["a"]], tmp_path / "w.txt", dim=0)
    with pytest.raises(DataError, match="min_count=5"):
        train_word2vec([["a", "b"]], tmp_path / "w.txt", min_count=5)


def test_train_word2vec_without_gensim(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gensim", None)
    monkeypatch.setitem(sys.modules, "gensim.models", None)
    with pytest.raises(ConfigError, match=r"pip install 'textrnn\[word2vec\]'"):
        train_word2vec([["a"]], tmp_path / "w.txt")
