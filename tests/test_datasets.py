"""Tests for textrnn.datasets on tiny data made here, plus one check on the real IMDB archive."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import urllib.error
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textrnn import datasets as D
from textrnn.datasets import Dataset
from textrnn.errors import DataError

REAL_ARCHIVE = Path(__file__).parents[2] / "shared/data/aclImdb_v1.tar.gz"

# The fake IMDB tree: (part, folder, file name) -> text. Names are out of order on purpose.
REVIEWS = {
    ("train", "neg", "3_1.txt"): "Dull.<br /><br />Truly dull.",
    ("train", "neg", "10_2.txt"): "Awful film, 2/10.",
    ("train", "pos", "7_9.txt"): "Amélie — 素晴らしい! ☺",
    ("train", "pos", "1_10.txt"): "Loved it.",
    ("train", "unsup", "5_0.txt"): "No label here.",
    ("train", "unsup", "2_0.txt"): "Nor here.",
    ("test", "neg", "4_3.txt"): "Meh.",
    ("test", "pos", "0_8.txt"): "Great<br />fun.",
    ("test", "pos", "9_7.txt"): "Fine.",
}
EXPECTED = {
    "train": (
        ["Awful film, 2/10.", "Dull.<br /><br />Truly dull.", "Loved it.", "Amélie — 素晴らしい! ☺"],
        ["neg", "neg", "pos", "pos"],
    ),
    "test": (["Meh.", "Great<br />fun.", "Fine."], ["neg", "pos", "pos"]),
    "unsup": (["Nor here.", "No label here."], [None, None]),
}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own cache and no IMDB location from the environment."""
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(D.IMDB_ENV, raising=False)
    monkeypatch.setattr(D, "_verified", set())


def make_imdb_folder(root: Path) -> Path:
    folder = root / "aclImdb"
    for (part, label, name), text in REVIEWS.items():
        file = folder / part / label / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    # Files the loader must ignore, as in the real archive.
    (folder / "imdb.vocab").write_text("the\nand\n", encoding="utf-8")
    (folder / "train" / "urls_pos.txt").write_text("http://example.com\n", encoding="utf-8")
    (folder / "train" / "labeledBow.feat").write_text("0 0:1\n", encoding="utf-8")
    return folder


def make_imdb_archive(root: Path) -> Path:
    folder = make_imdb_folder(root / "extracted")
    archive = root / D.IMDB_ARCHIVE_NAME
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    return archive


def write_sidecar(archive: Path, digest: str) -> None:
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n", encoding="utf-8")


def parquet_caches(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "imdb").glob("parsed-*.parquet"))


# ----------------------------------------------------------------------------------------- IMDB


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_load_imdb_every_split(tmp_path, kind):
    source = make_imdb_folder(tmp_path) if kind == "folder" else make_imdb_archive(tmp_path)
    for split, (texts, labels) in EXPECTED.items():
        data = D.load_imdb(split, path=source, progress=False)
        assert (data.texts, data.labels, data.name) == (texts, labels, f"imdb:{split}")
    assert len(parquet_caches(tmp_path)) == 1


def test_load_imdb_second_call_reads_cache(tmp_path, monkeypatch):
    archive = make_imdb_archive(tmp_path)
    first = D.load_imdb("train", path=archive, progress=False)
    assert len(parquet_caches(tmp_path)) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the archive was parsed again")

    monkeypatch.setattr(D.tarfile, "open", fail)
    again = D.load_imdb("train", path=archive, progress=False)
    assert (again.texts, again.labels) == (first.texts, first.labels)
    assert D.load_imdb("unsup", path=archive, progress=False).texts == EXPECTED["unsup"][0]


def test_folder_cache_notices_a_new_review(tmp_path):
    folder = make_imdb_folder(tmp_path)
    assert len(D.load_imdb("test", path=folder, progress=False)) == 3
    (folder / "test" / "neg" / "99_1.txt").write_text("Added later.", encoding="utf-8")
    assert len(D.load_imdb("test", path=folder, progress=False)) == 4


def test_damaged_cache_is_rebuilt(tmp_path):
    archive = make_imdb_archive(tmp_path)
    D.load_imdb("test", path=archive, progress=False)
    [cache] = parquet_caches(tmp_path)
    cache.write_bytes(b"not parquet")
    assert D.load_imdb("test", path=archive, progress=False).texts == EXPECTED["test"][0]


def test_truncated_archive(tmp_path):
    archive = make_imdb_archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataError, match="Cannot read the IMDB archive"):
        D.load_imdb("train", path=archive, progress=False)
    assert parquet_caches(tmp_path) == []


def test_not_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"text,label\na,1\n")
    with pytest.raises(DataError, match="Cannot read 'd.parquet' as Parquet"):
        D.read_table(path)


def test_sidecar_checked(tmp_path):
    archive = make_imdb_archive(tmp_path)
    write_sidecar(archive, "0" * 64)
    with pytest.raises(DataError, match="does not match its checksum"):
        D.load_imdb("test", path=archive, progress=False)
    write_sidecar(archive, hashlib.sha256(archive.read_bytes()).hexdigest())
    assert D.load_imdb("test", path=archive, progress=False).labels == EXPECTED["test"][1]


def test_env_vars_honored(tmp_path, monkeypatch):
    archive = make_imdb_archive(tmp_path / "data")
    monkeypatch.setenv(D.IMDB_ENV, str(archive.parent))  # a folder holding the archive
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert D.locate_imdb(download=False) == archive
    assert D.load_imdb("test", progress=False).texts == EXPECTED["test"][0]
    assert len(list((tmp_path / "elsewhere" / "imdb").glob("parsed-*.parquet"))) == 1


def test_cache_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv(D.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.cache_dir() == tmp_path / "xdg" / "textrnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.cache_dir() == tmp_path / "home" / ".cache" / "textrnn"


def test_locate_imdb_forms(tmp_path):
    folder = make_imdb_folder(tmp_path / "a")
    assert D.locate_imdb(folder, download=False) == folder
    assert D.locate_imdb(folder.parent, download=False) == folder  # a folder holding aclImdb/
    cached = make_imdb_archive(tmp_path / "cache" / "imdb")
    assert D.locate_imdb(download=False) == cached  # the cache is the fallback
    with pytest.raises(DataError, match="does not exist"):
        D.locate_imdb(tmp_path / "missing.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No IMDB data"):
        D.locate_imdb(tmp_path / "empty")


def test_no_archive_and_no_download(tmp_path):
    with pytest.raises(DataError, match="TEXTRNN_IMDB") as info:
        D.locate_imdb(download=False)
    assert "--imdb-path" in str(info.value)
    assert str(tmp_path / "cache" / "imdb" / D.IMDB_ARCHIVE_NAME) in str(info.value)


def test_download_failure_names_the_way_out(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(D.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="TEXTRNN_IMDB") as info:
        D.load_imdb("train", progress=False)
    message = str(info.value)
    assert "--imdb-path" in message and "no network" in message and "\n" not in message
    assert list((tmp_path / "cache" / "imdb").iterdir()) == []  # no half file left behind


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def test_download_success_and_damage(tmp_path, monkeypatch):
    payload = make_imdb_archive(tmp_path / "server").read_bytes()
    urls = []

    def serve(url, timeout=None):
        urls.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(D.urllib.request, "urlopen", serve)
    monkeypatch.setattr(D, "IMDB_MD5", "0" * 32)
    with pytest.raises(DataError, match="damaged"):
        D.locate_imdb(progress=False)
    assert list((tmp_path / "cache" / "imdb").iterdir()) == []

    monkeypatch.setattr(D, "IMDB_MD5", hashlib.md5(payload).hexdigest())
    assert D.load_imdb("test", progress=False).texts == EXPECTED["test"][0]
    assert urls == [D.IMDB_URL, D.IMDB_URL]
    assert (tmp_path / "cache" / "imdb" / D.IMDB_ARCHIVE_NAME).read_bytes() == payload
    D.load_imdb("train", progress=False)
    assert len(urls) == 2  # the downloaded copy is reused


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="Did you mean 'test'"):
        D.load_imdb("tset", path=make_imdb_folder(tmp_path))


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"{REAL_ARCHIVE} not present")
def test_real_imdb_archive():
    data = D.load_imdb("test", path=REAL_ARCHIVE, progress=False)
    assert len(data.texts) == 25_000
    assert Counter(data.labels) == {"neg": 12_500, "pos": 12_500}
    assert all(isinstance(t, str) and t for t in data.texts[:100])


# ------------------------------------------------------------------------------------- tables


def write_table(path: Path, rows: list[dict]) -> Path:
    """Write rows in the format that the suffix of ``path`` names."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_read_each_format(tmp_path, suffix):
    rows = [
        {"text": 'good, "very" good', "label": 1, "extra": "x"},
        {"text": "bad\tand ünïcode", "label": 0, "extra": "y"},
        {"text": "so-so", "label": 1, "extra": "z"},
    ]
    data = D.read_table(write_table(tmp_path / f"d{suffix}", rows))
    assert data.texts == [r["text"] for r in rows]
    assert data.labels == [1, 0, 1] and all(type(label) is int for label in data.labels)
    assert data.name == f"d{suffix}"
    worded = [dict(r, label=f" c{r['label']} ") for r in rows]
    words = D.read_table(write_table(tmp_path / f"w{suffix}", worded))
    assert words.labels == ["c1", "c0", "c1"]  # strings, stripped


def test_read_custom_columns_and_no_labels(tmp_path):
    path = write_table(tmp_path / "d.csv", [{"review": "a", "y": "pos"}, {"review": "b", "y": "neg"}])
    assert D.read_table(path, "review", "y").labels == ["pos", "neg"]
    unlabelled = D.read_table(path, "review", None)
    assert (unlabelled.texts, unlabelled.labels) == (["a", "b"], [None, None])


def test_mixed_labels_become_strings(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "two"}\n', encoding="utf-8")
    assert D.read_table(path).labels == ["1", "two"]
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "2"}\n', encoding="utf-8")
    assert D.read_table(path).labels == [1, 2]


def test_csv_bom_crlf_and_embedded_newline(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes('\ufefftext,label\r\n"line one\r\nline two, still",pos\r\nplain,neg\r\n'.encode("utf-8"))
    data = D.read_table(path)
    assert data.texts == ["line one\r\nline two, still", "plain"]
    assert data.labels == ["pos", "neg"]


def test_none_and_nan_texts_become_empty(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", None], "label": [1, 0]}), path)
    assert D.read_table(path).texts == ["a", ""]
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": NaN, "label": 1}\n{"label": 0}\n', encoding="utf-8")
    assert D.read_table(path).texts == ["", ""]


def test_missing_column_suggests(tmp_path):
    path = write_table(tmp_path / "d.csv", [{"txt": "a", "label": 1}])
    expected = r"no text column 'text'.*\['txt', 'label'\].*Did you mean 'txt'"
    with pytest.raises(DataError, match=expected):
        D.read_table(path)
    with pytest.raises(DataError, match="Did you mean 'label'"):
        D.read_table(write_table(tmp_path / "d.parquet", [{"text": "a", "label": 1}]), label_column="lable")


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="is empty"):
        D.read_table(path)


def test_header_only(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\n", encoding="utf-8")
    with pytest.raises(DataError, match="header but no data rows"):
        D.read_table(path)


@pytest.mark.parametrize(
    "name, content",
    [
        ("d.csv", "text,label\na,pos\nb,\nc,neg\nd,  \ne\n"),
        (
            "d.jsonl",
            '{"text":"a","label":"pos"}\n{"text":"b","label":null}\n{"text":"c","label":"neg"}\n{"text":"d","label":NaN}\n{"text":"e"}\n',
        ),
    ],
)
def test_missing_labels_name_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"3 of 5 rows have no label.*rows 2, 4, 5"):
        D.read_table(path)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\nok,1\ncaf\xe9,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 3 is not valid utf-8.*--encoding latin-1"):
        D.read_table(path)
    assert D.read_table(path, encoding="latin-1").texts == ["ok", "café"]


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", label: 2}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        D.read_table(path)
    path.write_text('["a", 1]\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1 is not a JSON object"):
        D.read_table(path)


def test_folder_of_classes(tmp_path):
    for label, names in {"pos": ["b.txt", "a.txt"], "neg": ["c.txt"], ".hidden": ["x.txt"]}.items():
        (tmp_path / "data" / label).mkdir(parents=True)
        for name in names:
            (tmp_path / "data" / label / name).write_text(f"{label} {name}", encoding="utf-8")
    (tmp_path / "data" / "pos" / "notes.md").write_text("ignored", encoding="utf-8")
    data = D.read_table(tmp_path / "data")
    assert data.texts == ["neg c.txt", "pos a.txt", "pos b.txt"]
    assert data.labels == ["neg", "pos", "pos"]
    (tmp_path / "none" / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match="No .txt files"):
        D.read_table(tmp_path / "none")


def test_unknown_extension_and_missing_path(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match=r"Unknown data file type '.json'.*\.jsonl.*Did you mean '.jsonl'"):
        D.read_table(path)
    with pytest.raises(DataError, match="not found"):
        D.read_table(tmp_path / "nope.csv")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))), min_size=1, max_size=5))
def test_csv_round_trip(tmp_path, texts):
    path = write_table(tmp_path / "prop.csv", [{"text": t, "label": i % 2} for i, t in enumerate(texts)])
    data = D.read_table(path)
    assert data.texts == texts
    assert data.labels == [i % 2 for i in range(len(texts))]


# ------------------------------------------------------------------------------------ dispatch


def test_load_data_dispatch(tmp_path):
    folder = make_imdb_folder(tmp_path)
    assert D.load_data("imdb:test", imdb_path=folder).texts == EXPECTED["test"][0]
    assert D.load_data("imdb", imdb_path=folder).labels == EXPECTED["train"][1]
    path = write_table(tmp_path / "d.csv", [{"t": "a", "y": "x"}])
    assert D.load_data(str(path), text_column="t", label_column="y").labels == ["x"]
    with pytest.raises(DataError, match="split="):
        D.load_data("imdb:dev", imdb_path=folder)


# ------------------------------------------------------------------------------------- subsets


def test_train_validation_split_stratified_deterministic_and_pure():
    texts = tuple(f"t{i}" for i in range(100))
    labels = ["a"] * 80 + ["b"] * 20
    labels_before = list(labels)
    train, val = D.train_validation_split(texts, labels, 0.25, seed=0)
    assert labels == labels_before
    assert Counter(val.labels) == {"a": 20, "b": 5} and Counter(train.labels) == {"a": 60, "b": 15}
    assert sorted(train.texts + val.texts, key=lambda t: int(t[1:])) == list(texts)
    assert all(texts[int(t[1:])] == t for t in val.texts)  # texts stay paired with labels
    assert [labels[int(t[1:])] for t in val.texts] == val.labels
    again = D.train_validation_split(texts, labels, 0.25, seed=0)
    assert (again[0].texts, again[1].texts) == (train.texts, val.texts)
    assert D.train_validation_split(texts, labels, 0.25, seed=1)[1].texts != val.texts


def test_train_validation_split_falls_back_and_validates():
    train, val = D.train_validation_split(list("abcde"), [0, 0, 0, 0, 1], 0.4, seed=3)
    assert len(train) == 3 and len(val) == 2
    for fraction in (0, 1, 1.5, -0.1, True):
        with pytest.raises(DataError, match="fraction"):
            D.train_validation_split(["a", "b"], [0, 1], fraction, seed=0)
    with pytest.raises(DataError, match="same length"):
        D.train_validation_split(["a", "b"], [0], 0.5, seed=0)


def test_sample_proportional_and_deterministic():
    data = Dataset(texts=[str(i) for i in range(100)], labels=[0] * 70 + [1] * 30, name="d")
    small = D.sample(data, 10, seed=0)
    assert Counter(small.labels) == {0: 7, 1: 3}
    assert small.texts == sorted(small.texts, key=int)  # original order kept
    assert D.sample(data, 10, seed=0) == small and D.sample(data, 10, seed=1) != small
    assert D.sample(data, 500, seed=0) == data
    assert len(D.sample(Dataset(["a", "b", "c"], [None] * 3), 2, seed=0)) == 2
    with pytest.raises(DataError, match="n=0"):
        D.sample(data, 0, seed=0)


def test_dataset_checks_lengths():
    with pytest.raises(DataError, match="same length"):
        Dataset(texts=["a"], labels=[])
    assert len(Dataset(["a", "b"], [1, 2])) == 2
