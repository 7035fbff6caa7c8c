import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textrnn.errors import ArtifactError, ConfigError
from textrnn.text import PAD_ID, UNK_ID, Tokenizer, Vocabulary, encode_texts, pad, truncate


def test_tokenizer_cleans_imdb_html_and_splits_punctuation():
    tok = Tokenizer()
    assert tok.clean("Great<br /><br />movie&amp;fun") == "great movie&fun"
    assert tok("I didn't like it... at ALL!") == ["i", "didn't", "like", "it", ".", ".", ".", "at", "all", "!"]
    assert tok("well-made film") == ["well-made", "film"]


def test_tokenizer_unicode_normalization_and_case_option():
    assert Tokenizer()("ＦＵＬＬ width ﬁne") == ["full", "width", "fine"]  # NFKC folds width and ligatures
    assert Tokenizer(lower=False)("Good Film") == ["Good", "Film"]
    assert Tokenizer(strip_html=False)("a<br />b") == ["a", "<", "br", "/", ">", "b"]
    with pytest.raises(ConfigError, match="normalize"):
        Tokenizer(normalize="NFX")


def test_empty_and_whitespace_texts_give_no_tokens():
    assert Tokenizer()("") == [] and Tokenizer()("  \n\t ") == [] and Tokenizer()(None) == []


def test_vocabulary_specials_frequency_then_alphabetical():
    v = Vocabulary.build([["b", "a", "c", "a"], ["b", "d"]])
    assert v.tokens == ["<pad>", "<unk>", "a", "b", "c", "d"]
    assert v.encode(["a", "zzz"]) == [2, UNK_ID]
    assert v.decode([2, 3]) == ["a", "b"]


def test_vocabulary_max_size_and_min_freq():
    lists = [["x"] * 5 + ["y"] * 3 + ["z"]]
    assert Vocabulary.build(lists, max_size=3).tokens == ["<pad>", "<unk>", "x"]
    assert Vocabulary.build(lists, min_freq=2).tokens == ["<pad>", "<unk>", "x", "y"]
    with pytest.raises(ConfigError, match="min_freq"):
        Vocabulary.build(lists, min_freq=0)


def test_vocabulary_roundtrip_and_validation(tmp_path):
    v = Vocabulary.build([["héllo", "wörld", "héllo"]])
    v.save(tmp_path / "vocab.txt")
    assert Vocabulary.load(tmp_path / "vocab.txt").tokens == v.tokens
    with pytest.raises(ArtifactError, match="start with"):
        Vocabulary(["a", "b"])


@pytest.mark.parametrize("mode,expected", [("post", [1, 2, 3, 4]), ("pre", [3, 4, 5, 6]), ("head_tail", [1, 2, 5, 6])])
def test_truncate_modes(mode, expected):
    assert truncate([1, 2, 3, 4, 5, 6], 4, mode) == expected


def test_pad_post_and_pre_with_lengths():
    ids, lengths = pad([[5, 6], [7, 8, 9, 10]], max_length=3)
    assert ids.tolist() == [[5, 6, 0], [7, 8, 9]] and lengths.tolist() == [2, 3]
    ids, _ = pad([[5, 6]], max_length=3, padding="pre")
    assert ids.tolist() == [[0, 5, 6]]
    ids, lengths = pad([[]], max_length=2)
    assert ids.tolist() == [[PAD_ID, PAD_ID]] and lengths.tolist() == [0]
    with pytest.raises(ConfigError, match="padding"):
        pad([[1]], 2, padding="middle")


def test_encode_texts_truncates():
    tok = Tokenizer()
    v = Vocabulary.build([tok("a b c d e")])
    out = encode_texts(["a b c d e", ""], tok, v, max_length=3, truncating="pre")
    assert out[0].tolist() == v.encode(["c", "d", "e"]) and out[1].tolist() == []


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_unicode_string_tokenizes(text):
    tokens = Tokenizer()(text)
    assert all(isinstance(t, str) and t and not t.isspace() for t in tokens)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["good", "bad", "film", "plot", "é"]), min_size=1))
def test_encode_decode_roundtrips_known_words(words):
    v = Vocabulary.build([words])
    assert v.decode(v.encode(words)) == words


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(2, 50), max_size=12), min_size=1, max_size=5), st.integers(1, 15), st.sampled_from(["post", "pre"]))
def test_pad_shape_and_content(seqs, max_length, padding):
    ids, lengths = pad(seqs, max_length, padding=padding)
    assert ids.shape == (len(seqs), max_length)
    for row, n, s in zip(ids, lengths, seqs):
        real = row[:n] if padding == "post" else row[max_length - n :]
        assert real.tolist() == s[:max_length] and (row != PAD_ID).sum() == n


def test_tokenized_corpus_matches_the_plain_path_and_caches(tmp_path):
    from textrnn.text import TokenizedCorpus, tokenize_cached

    texts = ["A good film!", "", "bad, BAD film<br />really", "ünïcode wörds good"] * 3
    tok = Tokenizer()
    corpus = TokenizedCorpus.build(texts, tok)
    for max_size, min_freq in ((None, 1), (5, 1), (None, 3)):
        assert corpus.vocabulary(max_size, min_freq).tokens == Vocabulary.build(map(tok, texts), max_size, min_freq).tokens
    v = corpus.vocabulary(6)
    for mode in ("post", "pre", "head_tail"):
        got = corpus.encode(v, 3, mode)
        want = encode_texts(texts, tok, v, 3, mode)
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
    first = tokenize_cached(texts, tok, tmp_path)
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 1
    again = tokenize_cached(texts, tok, tmp_path)
    assert again.types == first.types and again.ids.tolist() == first.ids.tolist()
    assert tokenize_cached(texts, Tokenizer(lower=False), tmp_path).types != first.types  # settings are in the key
