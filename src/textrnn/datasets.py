"""Loaders that turn a data source into texts and labels.

Sources: the IMDB review archive (located, downloaded and parsed once into a Parquet cache),
CSV/TSV/JSONL/Parquet tables, and folders with one sub-folder per class. Also the two ways of
cutting a dataset down: a stratified train/validation split and a small seeded sample.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import http.client
import io
import json
import logging
import math
import os
import random
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from .config import DataConfig
from .errors import DataError, did_you_mean
from .io import CACHE_ENV, atomic_path, cache_dir
from .progress import on_terminal

__all__ = [
    "CACHE_ENV",
    "IMDB_ENV",
    "IMDB_MD5",
    "IMDB_URL",
    "Dataset",
    "cache_dir",
    "load_data",
    "load_imdb",
    "locate_imdb",
    "read_table",
    "sample",
    "train_validation_split",
]

logger = logging.getLogger("textrnn")

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"  # the official archive's widely published md5
IMDB_ENV = "TEXTRNN_IMDB"

IMDB_ARCHIVE_NAME = "aclImdb_v1.tar.gz"
IMDB_SPLITS = ("train", "test", "unsup")
# Bump when the parsed cache's layout or content changes, so old caches are not read.
_CACHE_FORMAT = 1

TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SUPPORTED = ", ".join(TABLE_SUFFIXES) + ", or a folder with one sub-folder of .txt files per class"


@dataclass
class Dataset:
    """Texts and their labels (``None`` each for unlabelled data), as parallel lists."""

    texts: list[str]
    labels: list
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"texts and labels must have the same length. Received: {len(self.texts)} texts and {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.texts)


# --------------------------------------------------------------------------------------- cache


def _imdb_cache() -> Path:
    return cache_dir() / "imdb"


# ---------------------------------------------------------------------------------- IMDB: find


def locate_imdb(path: str | os.PathLike | None = None, download: bool = True, progress: bool = True) -> Path:
    """Find the IMDB data (archive or extracted ``aclImdb`` folder), downloading it if allowed.

    Order: ``path``, then ``$TEXTRNN_IMDB``, then ``<cache>/imdb/aclImdb_v1.tar.gz``, then a
    download to that place. A local archive with a ``<archive>.sha256`` sidecar is checked
    against it.
    """
    if path is not None:
        return _resolve_imdb_path(Path(os.fspath(path)).expanduser(), "the IMDB path")
    env = os.environ.get(IMDB_ENV)
    if env:
        return _resolve_imdb_path(Path(env).expanduser(), f"${IMDB_ENV}")
    cached = _imdb_cache() / IMDB_ARCHIVE_NAME
    if cached.is_file():
        _check_sidecar(cached)
        return cached
    if not download:
        raise DataError(f"The IMDB archive was not found and downloading is off. {_where_to_put(cached)}")
    _download(IMDB_URL, cached, IMDB_MD5, progress=progress)
    return cached


def _where_to_put(cached: Path) -> str:
    return (
        f"Put {IMDB_ARCHIVE_NAME} (or its extracted aclImdb folder) at {cached}, "
        f"or point ${IMDB_ENV} or --imdb-path at it; it comes from {IMDB_URL}."
    )


def _is_imdb_folder(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _resolve_imdb_path(candidate: Path, origin: str) -> Path:
    """The archive or extracted folder that ``candidate`` is, or holds; ``origin`` names the source."""
    if not candidate.exists():
        raise DataError(f"IMDB data not found: {origin} is {str(candidate)!r}, which does not exist.")
    if candidate.is_file():
        _check_sidecar(candidate)
        return candidate
    if _is_imdb_folder(candidate):
        return candidate
    # A folder holding the data: the archive is preferred, as its sidecar can vouch for it.
    archive = candidate / IMDB_ARCHIVE_NAME
    if archive.is_file():
        _check_sidecar(archive)
        return archive
    if _is_imdb_folder(candidate / "aclImdb"):
        return candidate / "aclImdb"
    raise DataError(
        f"No IMDB data in {str(candidate)!r} ({origin}): expected {IMDB_ARCHIVE_NAME}, "
        f"an extracted aclImdb folder (with train/ and test/), or a folder holding either."
    )


# Verified (path, size, mtime, sidecar) keys, so repeated loads in one process hash once.
_verified: set[tuple] = set()


def _check_sidecar(archive: Path) -> None:
    """Check ``archive`` against ``<archive>.sha256`` when that file exists (sha256sum format)."""
    sidecar = archive.with_name(archive.name + ".sha256")
    if not sidecar.is_file():
        return
    text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
    expected = text.split()[0].lower() if text else ""
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise DataError(f"{sidecar} is not a sha256sum file: expected 64 hex digits first. Received: {text[:80]!r}.")
    st = archive.stat()
    key = (str(archive.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _verified:
        return
    actual = _file_digest(archive, "sha256")
    if actual != expected:
        raise DataError(
            f"{archive} does not match its checksum file {sidecar.name}: "
            f"expected sha256 {expected}, received {actual}. The file is damaged or not the one "
            f"the checksum describes; fetch it again."
        )
    _verified.add(key)


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path, md5: str, progress: bool = True) -> None:
    """Download ``url`` to ``target`` via a temporary file, checking its md5: never a half file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        logger.info("Downloading %s to %s", url, target)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                total = response.headers.get("Content-Length") if response.headers else None
                with tqdm(
                    total=int(total) if total and str(total).isdigit() else None,
                    unit="B",
                    unit_scale=True,
                    desc="IMDB download",
                    disable=not (progress and on_terminal()),  # plain lines in a log: no redraws
                ) as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataError(f"Could not download the IMDB archive from {url} ({reason}). {_where_to_put(target)}") from exc
        actual = digest.hexdigest()
        if actual != md5:
            raise DataError(
                f"The downloaded IMDB archive is damaged: expected md5 {md5}, received {actual}. Try again later. {_where_to_put(target)}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------- IMDB: parse

# Member or file paths of reviews: <anything>/(train|test)/(neg|pos|unsup)/<id>_<rating>.txt
_REVIEW = re.compile(r"(?:^|/)(train|test)/(neg|pos|unsup)/([^/]+)\.txt$")
_STEM = re.compile(r"(\d+)_(\d+)")


def _split_of(part: str, folder: str) -> str | None:
    if folder == "unsup":
        return "unsup" if part == "train" else None
    return part


def _record(part: str, folder: str, stem: str, raw: bytes, where: str) -> dict | None:
    split = _split_of(part, folder)
    if split is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"IMDB review {where} is not valid UTF-8 ({exc.reason} at byte {exc.start}).") from exc
    match = _STEM.fullmatch(stem)
    return {
        "split": split,
        "text": text,
        "label": None if folder == "unsup" else folder,
        "id": int(match.group(1)) if match else None,
        "rating": int(match.group(2)) if match else None,
        "_order": (folder, stem),
    }


class _CountingReader:
    """A read-only file wrapper that advances a progress bar by the bytes read."""

    def __init__(self, raw: BinaryIO, bar: Any) -> None:
        self._raw, self._bar = raw, bar

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self._bar.update(len(chunk))
        return chunk


def _parse_archive(archive: Path, progress: bool) -> Iterator[dict]:
    """Review records from the archive, in one streaming pass (random access is ~6x slower)."""
    try:
        with (
            open(archive, "rb") as raw,
            tqdm(
                total=archive.stat().st_size,
                unit="B",
                unit_scale=True,
                desc="Parsing IMDB (once)",
                disable=not (progress and on_terminal()),  # plain lines in a log: no redraws
            ) as bar,
            # typeshed's fileobj protocol also asks for write, seek, tell and close, which a stream ("r|gz") never calls
            tarfile.open(fileobj=_CountingReader(raw, bar), mode="r|gz") as tar,  # type: ignore[call-overload]
        ):
            for member in tar:
                match = _REVIEW.search(member.name)
                if not (match and member.isfile()):
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                part, folder, stem = match.groups()
                record = _record(part, folder, stem, handle.read(), member.name)
                if record is not None:
                    yield record
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"Cannot read the IMDB archive {archive}: {_first_line(exc)}. Fetch it again.") from exc


def _parse_folder(root: Path, progress: bool) -> Iterator[dict]:
    """Review records from an extracted ``aclImdb`` folder."""
    with tqdm(desc="Parsing IMDB folder (once)", unit=" files", disable=not (progress and on_terminal())) as bar:
        for part, folder in _FOLDERS:
            directory = root / part / folder
            if not directory.is_dir():
                continue
            for file in directory.glob("*.txt"):
                record = _record(part, folder, file.stem, file.read_bytes(), str(file))
                if record is not None:
                    yield record
                bar.update(1)


_FOLDERS = (("train", "neg"), ("train", "pos"), ("train", "unsup"), ("test", "neg"), ("test", "pos"))


def _source_key(source: Path) -> str:
    """A cheap fingerprint of the source: path, size and modification times, not the content."""
    resolved = source.resolve()
    parts = [str(resolved), str(_CACHE_FORMAT)]
    stats = [resolved]
    if resolved.is_dir():
        # Adding or removing a review changes its folder's mtime; the root's alone would not.
        stats += [resolved / part / folder for part, folder in _FOLDERS]
    for item in stats:
        try:
            st = item.stat()
        except FileNotFoundError:
            parts.append(f"{item.name}:-")
            continue
        parts.append(f"{item.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()[:16]


def _write_parquet_cache(records: Iterator[dict], target: Path) -> None:
    """Write the parsed reviews as one row group per split, atomically (temp file + rename)."""
    by_split: dict[str, list[dict]] = {split: [] for split in IMDB_SPLITS}
    for record in records:
        by_split[record["split"]].append(record)
    schema = pa.schema(
        [
            ("split", pa.string()),
            ("text", pa.string()),
            ("label", pa.string()),
            ("id", pa.int32()),
            ("rating", pa.int8()),
        ]
    )
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for rows in by_split.values():
            # Deterministic order: neg then pos, each by file name (the archive is unsorted).
            rows.sort(key=lambda r: r["_order"])
            columns = {name: [r[name] for r in rows] for name in schema.names}
            writer.write_table(pa.table(columns, schema=schema), row_group_size=max(len(rows), 1))


def _read_parquet_split(cache: Path, split: str) -> tuple[list[str], list]:
    table = pq.read_table(cache, columns=["text", "label"], filters=[("split", "=", split)])
    return table.column("text").to_pylist(), table.column("label").to_pylist()


def load_imdb(
    split: str = "train",
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """The IMDB reviews of ``split`` ('train', 'test' or 'unsup'), labels 'neg'/'pos' (unsup: None).

    The first call parses all three splits in one pass and caches them as Parquet under the cache
    directory; later calls read that cache.
    """
    if split not in IMDB_SPLITS:
        raise DataError(
            f"Expected one of {{{', '.join(repr(s) for s in IMDB_SPLITS)}}}. Received: split={split!r}."
            + did_you_mean(str(split), IMDB_SPLITS)
        )
    source = locate_imdb(path, download=download, progress=progress)
    cache = _imdb_cache() / f"parsed-{_source_key(source)}.parquet"
    if cache.is_file():
        try:
            texts, labels = _read_parquet_split(cache, split)
        except Exception as exc:  # a damaged cache is rebuilt, never fatal
            logger.warning("Rebuilding the unreadable IMDB cache %s (%s)", cache, exc)
        else:
            return _imdb_dataset(texts, labels, split, source)
    logger.info("Parsing %s once into %s", source, cache)
    records = _parse_folder(source, progress) if source.is_dir() else _parse_archive(source, progress)
    _write_parquet_cache(records, cache)
    texts, labels = _read_parquet_split(cache, split)
    return _imdb_dataset(texts, labels, split, source)


def _imdb_dataset(texts: list[str], labels: list, split: str, source: Path) -> Dataset:
    if not texts:
        raise DataError(f"No reviews for split {split!r} in the IMDB data at {source}.")
    return Dataset(texts=texts, labels=labels, name=f"imdb:{split}")


# ------------------------------------------------------------------------------------- tables


def read_table(
    path: str | os.PathLike,
    text_column: str = "text",
    label_column: str | None = "label",
    *,
    encoding: str = "utf-8",
    label_separator: str | None = None,
    label_columns: Sequence[str] | None = None,
) -> Dataset:
    """Read texts and labels from a CSV, TSV, JSONL or Parquet file, or a folder of class folders.

    ``label_column=None`` reads texts only (labels ``None`` each). Labels stay ints when every
    label is an integer, else they become stripped strings. Several labels per text (multi-label)
    become a sorted tuple of label names: a JSON/Parquet list, a cell split on ``label_separator``,
    or the names of the ``label_columns`` (0/1 columns) that hold 1 (a row of zeros: no label).
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise DataError(f"Data file not found: {str(path)!r} does not exist.")
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as exc:
        raise DataError(f"Unknown text encoding. Received: encoding={encoding!r}.") from exc
    # utf-8-sig strips a byte-order mark (Excel writes one) and reads plain UTF-8 unchanged.
    encoding = "utf-8-sig" if codec == "utf-8" else encoding
    if path.is_dir():
        return _read_class_folders(path, label_column, encoding)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"Unknown data file type {path.suffix or '(no extension)'!r} for {path.name!r}; "
            f"supported: {_SUPPORTED}." + did_you_mean(path.suffix.lower(), TABLE_SUFFIXES)
        )
    if path.stat().st_size == 0:
        raise DataError(f"Data file {path.name!r} is empty.")
    content = None
    if kind != "parquet":
        content = _decode(path.read_bytes(), path.name, encoding)
        if not content.strip():
            raise DataError(f"Data file {path.name!r} is empty.")
    if label_columns and label_column is not None:
        texts_raw, flags = _columns(path, kind, content, text_column, label_columns[0])
        rows = [[_flag(v, path.name, label_columns[0], i) for i, v in enumerate(flags, 1)]]
        for column in label_columns[1:]:
            rows.append([_flag(v, path.name, column, i) for i, v in enumerate(_columns(path, kind, content, text_column, column)[1], 1)])
        texts = [as_text(v, encoding) for v in texts_raw]
        labels: list = [tuple(sorted(c for c, row in zip(label_columns, col) if row)) for col in zip(*rows)]
        return Dataset(texts=texts, labels=labels, name=path.name)
    texts_raw, labels_raw = _columns(path, kind, content, text_column, label_column)
    texts = [as_text(v, encoding) for v in texts_raw]
    if label_column is None:
        labels = [None] * len(texts)
    else:
        labels = _normalize_labels(labels_raw, path.name, label_column, label_separator)
    return Dataset(texts=texts, labels=labels, name=path.name)


def _columns(path: Path, kind: str, content: str | None, text_column: str, label_column: str | None) -> tuple[list, list]:
    """The raw text and label columns of a table file."""
    if kind == "parquet":
        return _parquet_columns(path, text_column, label_column)
    assert content is not None  # decoded by the caller
    if kind == "jsonl":
        return _jsonl_columns(content, path.name, text_column, label_column)
    return _csv_columns(content, path.name, "\t" if kind == "tsv" else ",", text_column, label_column)


_ON, _OFF = {"1", "true", "yes", "1.0"}, {"0", "false", "no", "0.0", ""}


def _flag(value: Any, name: str, column: str, row: int) -> bool:
    """A 0/1 label-column cell as a bool."""
    text = str(value).strip().lower() if value is not None and not (isinstance(value, float) and math.isnan(value)) else ""
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise DataError(f"{name}: label column {column!r} must hold 0 or 1; data row {row} holds {value!r}.")


def _decode(data: bytes, name: str, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        # exc.object is what was decoded (after any BOM), so offsets and line numbers agree.
        line = exc.object[: exc.start].count(b"\n") + 1
        shown = "utf-8" if encoding == "utf-8-sig" else encoding
        raise DataError(
            f"{name}: line {line} is not valid {shown} (byte {exc.object[exc.start]:#04x}); "
            f"if the file uses another encoding, pass --encoding latin-1 (or encoding='latin-1')."
        ) from exc


def missing_column(name: str, column: str, role: str, found: Sequence[str]) -> DataError:
    return DataError(f"{name}: no {role} column {column!r}; columns found: {list(found)}." + did_you_mean(column, found))


def _csv_columns(content: str, name: str, delimiter: str, text_column: str, label_column: str | None) -> tuple[list, list]:
    # Reviews can be long; the csv module's default cap (128 KiB a field) would reject them.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # leading blank lines
        if header is None:
            raise DataError(f"Data file {name!r} is empty.")
        header = [cell.strip() for cell in header]
        text_at = _column_index(header, text_column, "text", name)
        label_at = None if label_column is None else _column_index(header, label_column, "label", name)
        texts: list = []
        labels: list = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
                continue  # blank line
            texts.append(row[text_at] if text_at < len(row) else None)
            if label_at is not None:
                label = row[label_at] if label_at < len(row) else None
                # "NaN", "NA", "null"... as pandas writes and reads a missing value: no label, not a class
                labels.append(None if label is not None and label.strip() in _NA_CELLS else label)
    except csv.Error as exc:
        raise DataError(f"{name}: cannot parse line {reader.line_num}: {exc}.") from exc
    if not texts:
        raise DataError(f"Data file {name!r} has a header but no data rows.")
    return texts, labels


# pandas' default missing-value markers (read_csv na_values), for label cells of CSV/TSV files
_NA_CELLS = frozenset(
    {
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)


def _column_index(header: list[str], column: str, role: str, name: str) -> int:
    if column not in header:
        raise missing_column(name, column, role, header)
    return header.index(column)


def _jsonl_columns(content: str, name: str, text_column: str, label_column: str | None) -> tuple[list, list]:
    texts: list = []
    labels: list = []
    seen: dict[str, None] = {}  # the keys met, in order, for error messages
    has_text = has_label = False
    # Split on "\n" only: str.splitlines would also break on U+2028, which JSON strings may hold.
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}: line {number} is not valid JSON ({exc.msg}, column {exc.colno}).") from exc
        except (ValueError, RecursionError) as exc:  # a number of 4,300+ digits; nesting too deep
            raise DataError(f"{name}: line {number} is not valid JSON ({_first_line(exc)}).") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{name}: line {number} is not a JSON object. Received: {type(obj).__name__} {line.strip()[:40]!r}.")
        seen.update(dict.fromkeys(obj))
        has_text = has_text or text_column in obj
        texts.append(obj.get(text_column))
        if label_column is not None:
            has_label = has_label or label_column in obj
            labels.append(obj.get(label_column))
    if not texts:
        raise DataError(f"Data file {name!r} is empty.")
    if not has_text:
        raise missing_column(name, text_column, "text", list(seen))
    if label_column is not None and not has_label:
        raise missing_column(name, label_column, "label", list(seen))
    return texts, labels


def _parquet_columns(path: Path, text_column: str, label_column: str | None) -> tuple[list, list]:
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several types for files that are not Parquet
        raise DataError(f"Cannot read {path.name!r} as Parquet: {_first_line(exc).rstrip('.')}.") from exc
    if text_column not in names:
        raise missing_column(path.name, text_column, "text", names)
    wanted = [text_column]
    if label_column is not None:
        if label_column not in names:
            raise missing_column(path.name, label_column, "label", names)
        wanted.append(label_column)
    try:
        table = pq.read_table(path, columns=wanted)
        texts = table.column(text_column).to_pylist()
        labels = table.column(label_column).to_pylist() if label_column is not None else []
    except Exception as exc:  # a damaged file can have a readable schema and unreadable pages
        raise DataError(f"Cannot read {path.name!r} as Parquet: {_first_line(exc).rstrip('.')}.") from exc
    if not texts:
        raise DataError(f"Data file {path.name!r} has no rows.")
    return texts, labels


def _read_class_folders(root: Path, label_column: str | None, encoding: str) -> Dataset:
    texts: list[str] = []
    raw_labels: list = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(folder.glob("*.txt")):
            texts.append(_decode(file.read_bytes(), str(file.relative_to(root)), encoding))
            raw_labels.append(folder.name)
    if not texts:
        raise DataError(
            f"No .txt files in the class sub-folders of {str(root)!r}: a data folder needs one "
            f"sub-folder per class holding .txt files (for IMDB give imdb, e.g. --train imdb, with --imdb-path)."
        )
    if label_column is None:
        labels: list = [None] * len(texts)
    else:
        labels = _normalize_labels(raw_labels, root.name, "folder")
    return Dataset(texts=texts, labels=labels, name=root.name)


def _first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line, as messages here are one line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def as_text(value: Any, encoding: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):  # a binary Parquet column
        return value.decode(encoding, errors="replace")
    return value if isinstance(value, str) else str(value)


_INT = re.compile(r"[+-]?\d+")


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is one (or an integral float, or a string of digits), else None."""
    if isinstance(value, bool):
        return None  # True/False are classes named by words, not numbers
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON 1.0, or a Parquet float column of whole numbers
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _label_set(values: Sequence, raw: Any, name: str, column: str, row: int) -> tuple:
    labels = tuple(sorted({str(v).strip() for v in values if not _is_missing(v)}))
    if not labels:
        raise DataError(
            f"{name}: data row {row} has an empty label set in column {column!r} ({raw!r}); "
            f"give every text at least one label (a label such as 'none' for texts with none)."
        )
    return labels


def _normalize_labels(raw: list, name: str, column: str, separator: str | None = None) -> list:
    lists = [row for row, value in enumerate(raw, start=1) if isinstance(value, (list, tuple))]
    if lists:
        single = next((row for row, value in enumerate(raw, start=1) if not isinstance(value, (list, tuple))), None)
        if single is not None:
            raise DataError(
                f"{name}: column {column!r} mixes label lists (data row {lists[0]}) and single labels "
                f'(data row {single}: {raw[single - 1]!r}); give every row a list, e.g. ["sport"].'
            )
        return [_label_set(value, value, name, column, row) for row, value in enumerate(raw, start=1)]
    missing = [row for row, value in enumerate(raw, start=1) if _is_missing(value)]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"{name}: {len(missing)} of {len(raw)} rows have no label in column {column!r} "
            f"(data rows {shown}; 1-based, header not counted)."
        )
    if separator is not None:
        return [_label_set(str(value).split(separator), value, name, column, row) for row, value in enumerate(raw, start=1)]
    as_ints = [_as_int(value) for value in raw]
    if all(value is not None for value in as_ints):
        return as_ints
    return [str(value).strip() for value in raw]


# ------------------------------------------------------------------------------------ dispatch


def load_data(
    spec: str | os.PathLike,
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    imdb_path: str | os.PathLike | None = None,
    encoding: str = "utf-8",
    label_separator: str | None = None,
    label_columns: Sequence[str] | None = None,
) -> Dataset:
    """``"imdb"``/``"imdb:<split>"`` loads IMDB; anything else is a path for :func:`read_table`."""
    text = os.fspath(spec)
    if isinstance(text, str) and (text.lower() == "imdb" or text.lower().startswith("imdb:")):
        split = text.partition(":")[2] or "train"
        return load_imdb(split.lower(), path=imdb_path)
    return read_table(spec, text_column, label_column, encoding=encoding, label_separator=label_separator, label_columns=label_columns)


def unlabelled_texts(
    specs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    text_column: str = "text",
    imdb_path: str | os.PathLike | None = None,
    encoding: str = "utf-8",
) -> list[str]:
    """The texts of one data spec or several ("imdb:unsup", data files), in order; no label column
    is read, so any labels are ignored."""
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    return [
        text
        for spec in specs
        for text in load_data(spec, text_column=text_column, label_column=None, imdb_path=imdb_path, encoding=encoding).texts
    ]


def load_unlabelled(data: DataConfig) -> list[str] | None:
    """The texts of ``data.unlabelled`` (None when it is unset), read as the labelled data are."""
    if not data.unlabelled:
        return None
    return unlabelled_texts(data.unlabelled, text_column=data.text_column, imdb_path=data.imdb_path, encoding=data.encoding)


def drop_copies(texts: Sequence[str], *others: Sequence[str]) -> tuple[list[str], int]:
    """``texts`` less any identical to a text of ``others`` (e.g. the validation and test texts,
    which unlabelled texts must not copy), in order; and how many were dropped."""
    seen = set().union(*map(set, others))
    kept = [t for t in texts if t not in seen]
    return kept, len(texts) - len(kept)


# ------------------------------------------------------------------------------------- subsets


def _label_keys(labels: Sequence) -> list[int] | None:
    """Labels as small ints for stratifying (works for mixed types); None when any label is missing."""
    index: dict[Any, int] = {}
    keys = []
    for label in labels:
        if _is_missing(label):
            return None
        keys.append(index.setdefault(label, len(index)))
    return keys


def train_validation_split(texts: Sequence[str], labels: Sequence, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split off ``fraction`` of the rows for validation, stratified by label where possible.

    Falls back to a plain random split when some class has fewer than two examples. Both parts
    keep the original row order.
    """

    texts, labels = list(texts), list(labels)  # copies: the caller's sequences stay untouched
    if len(texts) != len(labels):
        raise DataError(f"texts and labels must have the same length. Received: {len(texts)} texts and {len(labels)} labels.")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise DataError(f"The validation fraction must be between 0 and 1, exclusive. Received: fraction={fraction!r}.")
    n = len(texts)
    n_val = math.ceil(fraction * n)  # sklearn's own rounding for a float test_size
    if n < 2 or n_val >= n:
        raise DataError(
            f"Too few rows to split off a validation set: {n} rows with fraction={fraction} leaves an empty training or validation part."
        )
    keys = _label_keys(labels)
    stratify = None
    if keys is not None:
        counts: dict[int, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        n_classes = len(counts)
        # sklearn needs two of each class and room for every class on both sides.
        if min(counts.values()) >= 2 and n_classes <= n_val and n_classes <= n - n_val:
            stratify = keys
    train_idx, val_idx = train_test_split(list(range(n)), test_size=fraction, random_state=seed, shuffle=True, stratify=stratify)
    return _subset(texts, labels, sorted(train_idx), "train"), _subset(texts, labels, sorted(val_idx), "validation")


def _subset(texts: list, labels: list, indices: Sequence[int], name: str) -> Dataset:
    return Dataset(texts=[texts[i] for i in indices], labels=[labels[i] for i in indices], name=name)


def sample(dataset: Dataset, n: int, seed: int) -> Dataset:
    """A seeded random subset of ``n`` rows, each class kept in proportion, in the original order."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"The sample size must be a positive integer. Received: n={n!r}.")
    total = len(dataset.texts)
    if n >= total:
        return Dataset(texts=list(dataset.texts), labels=list(dataset.labels), name=dataset.name)
    rng = random.Random(seed)
    keys = _label_keys(dataset.labels)
    if keys is None:
        chosen = rng.sample(range(total), n)
    else:
        groups: dict[int, list[int]] = {}
        for row, key in enumerate(keys):
            groups.setdefault(key, []).append(row)
        # Largest-remainder quotas: each class gets its share of n, rounding handed out by
        # the largest fractions (ties to the class seen first), so the sizes sum to n exactly.
        shares = {key: n * len(rows) / total for key, rows in groups.items()}
        quotas = {key: int(share) for key, share in shares.items()}
        by_remainder = sorted(shares, key=lambda key: (-(shares[key] - quotas[key]), key))
        for key in by_remainder[: n - sum(quotas.values())]:
            quotas[key] += 1
        chosen = [row for key, rows in groups.items() for row in rng.sample(rows, quotas[key])]
    return _subset(dataset.texts, dataset.labels, sorted(chosen), dataset.name)
