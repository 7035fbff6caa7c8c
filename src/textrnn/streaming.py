"""Prediction over files of any size, in chunks: read a chunk of rows, predict it, append its
results to the output, commit the progress. Memory is that of one chunk, whatever the file's size,
and an interrupted run continues from its last committed chunk.

Inputs: ``.txt`` (one text per line), ``.csv``/``.tsv`` (the csv module, record by record),
``.jsonl`` (line by line), ``.parquet`` (pyarrow's ``iter_batches``). Outputs::

    OUT.jsonl           one JSON object per row, as ``predict --format json`` prints:
                        {"text": ..., "label": ..., "probabilities": {class: p, ...}}
    OUT.parquet         columns text, label, probability_<class> (one per class, float32)
    OUT.progress.json   the sidecar: which input and model, rows done, where to continue in the
                        input (a byte offset; a row number for Parquet) and the output's committed
                        size. Replaced atomically after each chunk; removed when the run completes.
    OUT.parquet.parts/  (Parquet output, while running) one file per chunk, merged into OUT at the
                        end: a Parquet file is only readable once closed, so it cannot be appended to.

A JSONL output is appended to, flushed and fsync'ed chunk by chunk, and only then is the sidecar
committed; on continuing, anything past the committed size (a chunk half written when the run was
killed) is cut off, so the result is byte for byte that of an uninterrupted run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .classifier import TextClassifier
from .datasets import TABLE_SUFFIXES, as_text, missing_column
from .errors import ArtifactError, DataError, TextRNNError
from .io import atomic_path, write_text
from .progress import Progress

log = logging.getLogger("textrnn")

PROGRESS_FORMAT = "textrnn-predict-progress"
PROGRESS_VERSION = 1
OUTPUT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
MODEL_FILES = ("config.json", "vocab.txt", "labels.json", "weights.safetensors")


def input_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "txt"
    kind = TABLE_SUFFIXES.get(suffix)
    if kind is None:
        raise DataError(
            f"Unknown input file type {suffix or '(no extension)'!r} for {path.name!r}; "
            f"streaming reads .txt, .csv, .tsv, .jsonl and .parquet."
        )
    return kind


def output_kind(path: Path) -> str:
    kind = OUTPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise TextRNNError(f"--output must end in .jsonl or .parquet. Received: --output {str(path)!r}")
    return kind


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + ".progress.json")


def parts_path(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


# ------------------------------------------------------------------------------------- readers
class _Lines:
    """Lines of a binary file from a byte offset, decoded one by one; ``pos`` is the offset just
    past the last line handed out (what a later run seeks to)."""

    def __init__(self, f, offset: int, name: str, strict: bool):
        f.seek(offset)
        self.f, self.pos, self.name, self.strict = f, offset, name, strict

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        raw = self.f.readline()
        if not raw:
            raise StopIteration
        start, self.pos = self.pos, self.pos + len(raw)
        if start == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte-order mark (Excel writes one)
        try:
            return raw.decode("utf-8", errors="strict" if self.strict else "replace")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{self.name}: the line at byte {start:,} is not valid utf-8 (byte "
                f"{raw[e.start]:#04x}); streaming prediction reads UTF-8 files."
            ) from None


def _chunks_of(rows: Iterator[str], size: int, where) -> Iterator[tuple[list[str], int]]:
    chunk: list[str] = []
    for text in rows:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk, where()
            chunk = []
    if chunk:
        yield chunk, where()


def _txt_rows(lines: _Lines) -> Iterator[str]:
    # "\n" (or "\r\n") ends a line; unlike str.splitlines, not the form feeds and other
    # separators a text may hold
    for line in lines:
        yield line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line


def _csv_header(path: Path, delimiter: str, text_column: str) -> tuple[int, int, int]:
    """(index of the text column, number of columns, byte offset where the data rows start)."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with open(path, "rb") as f:
        lines = _Lines(f, 0, path.name, strict=True)
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            for header in reader:
                if any(cell.strip() for cell in header):
                    header = [cell.strip() for cell in header]
                    if text_column not in header:
                        raise missing_column(path.name, text_column, "text", header)
                    return header.index(text_column), len(header), lines.pos
        except csv.Error as e:
            raise DataError(f"{path.name}: cannot parse the header: {e}.") from None
    raise DataError(f"Data file {path.name!r} is empty.")


def _csv_rows(lines: _Lines, delimiter: str, text_at: int, width: int) -> Iterator[str]:
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip() and width > 1):
                continue  # a blank line, as read_table skips it
            yield row[text_at] if text_at < len(row) else ""
    except csv.Error as e:
        raise DataError(f"{lines.name}: cannot parse the record before byte {lines.pos:,}: {e}.") from None


def _jsonl_rows(lines: _Lines, text_column: str) -> Iterator[str]:
    seen_column, n = False, 0
    for line in lines:
        if not line.strip():
            continue
        n += 1
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise DataError(f"{lines.name}: the line ending at byte {lines.pos:,} is not valid JSON ({e}).") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{lines.name}: the line ending at byte {lines.pos:,} is not a JSON object. "
                f"Received: {type(obj).__name__} {line.strip()[:40]!r}."
            )
        if text_column in obj:
            seen_column = True
        elif not seen_column and n >= 1000:  # a thousand rows without it: the wrong column name
            raise DataError(f"{lines.name}: no text column {text_column!r} in 1,000 rows; keys found: {list(obj)[:10]}.")
        yield as_text(obj.get(text_column), "utf-8")
    if n and not seen_column:
        raise DataError(f"{lines.name}: no row has the text column {text_column!r}.")


def read_chunks(path: Path, text_column: str, chunk_size: int, position: int = 0) -> Iterator[tuple[list[str], int]]:
    """``(texts, position after them)`` for the rows from ``position`` on, ``chunk_size`` at a time
    (the last chunk may be shorter). ``position`` is a byte offset, or a row number for Parquet."""
    kind = input_kind(path)
    if kind == "parquet":
        yield from _parquet_chunks(path, text_column, chunk_size, position)
        return
    if kind in ("csv", "tsv"):
        delimiter = "\t" if kind == "tsv" else ","
        text_at, width, data_start = _csv_header(path, delimiter, text_column)
        position = max(position, data_start)
    with open(path, "rb") as f:
        lines = _Lines(f, position, path.name, strict=kind != "txt")
        if kind == "txt":
            rows = _txt_rows(lines)
        elif kind == "jsonl":
            rows = _jsonl_rows(lines, text_column)
        else:
            rows = _csv_rows(lines, delimiter, text_at, width)
        yield from _chunks_of(rows, chunk_size, lambda: lines.pos)


def _parquet_chunks(path: Path, text_column: str, chunk_size: int, start: int) -> Iterator[tuple[list[str], int]]:
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except Exception as e:  # pyarrow raises several types for files that are not Parquet
        raise DataError(f"Cannot read {path.name!r} as Parquet: {str(e).splitlines()[0] if str(e) else type(e).__name__}.") from None
    if text_column not in names:
        raise missing_column(path.name, text_column, "text", names)
    # skip whole row groups before ``start``; then the rows of the first one before it
    groups: list[int] = []
    first_row = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if first_row + n <= start and not groups:
            first_row += n
            continue
        groups.append(g)
    skip, row = start - first_row, start
    buffer: list[str] = []
    if groups:
        for batch in pf.iter_batches(batch_size=min(chunk_size, 65536), row_groups=groups, columns=[text_column]):
            texts = batch.column(0).to_pylist()
            if skip:
                cut = min(skip, len(texts))
                texts, skip = texts[cut:], skip - cut
            buffer.extend(as_text(t, "utf-8") for t in texts)
            while len(buffer) >= chunk_size:
                chunk, buffer = buffer[:chunk_size], buffer[chunk_size:]
                row += len(chunk)
                yield chunk, row
    if buffer:
        yield buffer, row + len(buffer)


def count_rows(path: Path) -> int | None:
    """Rows in the input when that is cheap to know (Parquet), else None."""
    if input_kind(path) != "parquet":
        return None

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - reported properly when reading
        return None


# ------------------------------------------------------------------------------------- writers
class _JsonlWriter:
    def __init__(self, path: Path, committed: int, classes: list, multilabel: bool = False):
        self.path, self.classes = path, [str(c) for c in classes]
        self.key = "labels" if multilabel else "label"  # a multi-label model: the list of labels over threshold
        mode = "r+b" if path.exists() else "wb"
        self.f = open(path, mode)
        size = self.f.seek(0, os.SEEK_END)
        if size < committed:
            self.f.close()
            raise ArtifactError(
                f"{str(path)!r} is shorter ({size:,} bytes) than its progress file says ({committed:,}); start again with --overwrite."
            )
        self.f.truncate(committed)  # a chunk half written when the run was stopped
        self.f.seek(committed)

    def write(self, texts: list[str], proba: np.ndarray, labels: list) -> int:
        lines = []
        for text, p, label in zip(texts, proba.tolist(), labels):
            lines.append(json.dumps({"text": text, self.key: label, "probabilities": {c: round(v, 6) for c, v in zip(self.classes, p)}}))
        self.f.write(("\n".join(lines) + "\n").encode("utf-8"))
        self.f.flush()
        os.fsync(self.f.fileno())  # on disk before the sidecar says so
        return self.f.tell()

    def finish(self, output: Path) -> None:
        self.f.close()

    def close(self) -> None:
        self.f.close()


class _ParquetWriter:
    def __init__(self, output: Path, chunks_done: int, classes: list, multilabel: bool = False):
        self.parts, self.classes = parts_path(output), classes
        self.parts.mkdir(parents=True, exist_ok=True)
        for part in self.parts.iterdir():  # chunks written after the last commit, and temp files
            number = part.stem.split("-")[-1]
            if not part.name.startswith("part-") or not number.isdigit() or int(number) >= chunks_done:
                part.unlink()
        self.next = chunks_done
        label_type = pa.int64() if all(isinstance(c, int) for c in classes) else pa.string()
        label = ("labels", pa.list_(pa.string())) if multilabel else ("label", label_type)
        self.schema = pa.schema([("text", pa.string()), label] + [(f"probability_{c}", pa.float32()) for c in classes])

    def write(self, texts: list[str], proba: np.ndarray, labels: list) -> int:
        columns = [pa.array(texts, pa.string()), pa.array(labels, self.schema.field(1).type)]
        columns += [pa.array(proba[:, i].astype(np.float32)) for i in range(len(self.classes))]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        with atomic_path(self.parts / f"part-{self.next:06d}.parquet", durable=True) as tmp:
            pq.write_table(table, tmp)
        self.next += 1
        return 0

    def finish(self, output: Path) -> None:
        """Merge the chunks, in order, into one file (one row group per chunk), one chunk in memory at a time."""
        with atomic_path(output) as tmp, pq.ParquetWriter(tmp, self.schema) as writer:
            for i in range(self.next):
                writer.write_table(pq.read_table(self.parts / f"part-{i:06d}.parquet", schema=self.schema))
        shutil.rmtree(self.parts, ignore_errors=True)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------- the sidecar
def _model_digest(model_dir: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in MODEL_FILES:
        with open(model_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _identity(input_path: Path, model_dir: Path, text_column: str, kind: str) -> dict:
    st = input_path.stat()
    return {
        "input": {"path": str(input_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        "model": {"path": str(model_dir.resolve()), "digest": _model_digest(model_dir)},
        "text_column": text_column,
        "output_format": kind,
    }


def commit(path: Path, state: dict) -> None:
    """Replace the sidecar atomically: it always describes output that is already on disk."""
    write_text(path, json.dumps(state, indent=1), durable=True)


def _read_progress(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{str(path)!r} is damaged ({e}); start again with --overwrite.") from None
    if not isinstance(state, dict) or state.get("format") != PROGRESS_FORMAT:
        raise ArtifactError(f"{str(path)!r} is not a textrnn progress file; start again with --overwrite.")
    if not isinstance(state.get("version"), int) or state["version"] > PROGRESS_VERSION:
        raise ArtifactError(f"{str(path)!r} was written by a newer textrnn; start again with --overwrite.")
    return state


# ---------------------------------------------------------------------------------- the job
def _check_job(model_dir: Path, input_path: Path, output: Path, chunk_size: int) -> str:
    """Refuse a job that cannot run, before any work; the output's kind (jsonl, parquet)."""
    if chunk_size < 1:
        raise TextRNNError(f"chunk_size must be greater than 0. Received: chunk_size={chunk_size}")
    kind = output_kind(output)
    input_kind(input_path)
    if not input_path.is_file():
        raise DataError(f"Input file not found: {str(input_path)!r}")
    if output.resolve() == input_path.resolve():
        raise TextRNNError(f"--output must differ from --input. Received: {str(output)!r} for both.")
    if not model_dir.is_dir() or any(not (model_dir / f).is_file() for f in MODEL_FILES):
        TextClassifier.load(model_dir, device="cpu")  # raises the loader's own message
    return kind


def _earlier_progress(output: Path, identity: dict, resume: bool, overwrite: bool) -> dict | None:
    """The sidecar's state of an earlier run of this same job to continue, or None to start afresh."""
    sidecar, parts = progress_path(output), parts_path(output)
    if overwrite:
        for p in (sidecar, output):
            p.unlink(missing_ok=True)
        shutil.rmtree(parts, ignore_errors=True)
        return None
    if sidecar.exists():
        state = _read_progress(sidecar)
        differs = [k for k in identity if state.get(k) != identity[k]]
        if differs:
            raise ArtifactError(
                f"{str(sidecar)!r} is the progress of another run ("
                f"{_describe_difference(state, identity, differs[0])}); pass --overwrite to start again."
            )
        return state
    if resume:
        raise ArtifactError(f"Nothing to resume: {str(sidecar)!r} does not exist.")
    if output.exists() or parts.exists():
        raise ArtifactError(f"{str(output)!r} already exists; pass --overwrite to replace it.")
    return None


def _predict_chunks(
    clf, input_path: Path, text_column: str, chunk_size: int, batch_size: int, writer, state: dict, sidecar: Path, bar: Progress
) -> None:
    """Predict the input from where ``state`` says, chunk by chunk, committing the sidecar after each."""
    for texts, position in read_chunks(input_path, text_column, chunk_size, state["input_position"]):
        proba = clf.predict_proba(texts, batch_size=batch_size)
        size = writer.write(texts, proba, clf.labels_from(proba))
        state.update(
            rows_done=state["rows_done"] + len(texts), chunks_done=state["chunks_done"] + 1, input_position=position, output_bytes=size
        )
        commit(sidecar, state)
        bar.update(len(texts))
    state["input_done"] = True
    commit(sidecar, state)


def predict_file(
    model_dir: str | os.PathLike,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    text_column: str = "text",
    chunk_size: int = 10_000,
    batch_size: int = 512,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Predict every row of ``input_path`` into ``output`` (.jsonl or .parquet), ``chunk_size`` rows
    at a time. A run stopped part way is continued from its sidecar when the same input and model
    are given again (``resume=True`` insists on it); ``overwrite=True`` starts again.
    Returns ``{"rows", "seconds", "rows_per_s", "resumed_from", "output"}``."""

    model_dir, input_path, output = Path(model_dir), Path(input_path), Path(output)
    kind = _check_job(model_dir, input_path, output, chunk_size)
    sidecar, parts = progress_path(output), parts_path(output)
    identity = _identity(input_path, model_dir, text_column, kind)
    state = _earlier_progress(output, identity, resume, overwrite)
    clf = TextClassifier.load(model_dir, device=device)
    fresh = state is None
    if state is None:
        output.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": PROGRESS_FORMAT,
            "version": PROGRESS_VERSION,
            **identity,
            "rows_done": 0,
            "chunks_done": 0,
            "input_position": 0,
            "output_bytes": 0,
            "input_done": False,
        }
        commit(sidecar, state)
    resumed_from = state["rows_done"]
    if progress and (resumed_from or state["input_done"]):
        log.info("continuing %s from row %s (%s)", output, f"{resumed_from:,}", sidecar.name)
    writer = (
        _JsonlWriter(output, state["output_bytes"], clf.classes_, clf.multilabel_)
        if kind == "jsonl"
        else _ParquetWriter(output, state["chunks_done"], clf.classes_, clf.multilabel_)
    )
    bar = Progress(count_rows(input_path), "predict", " rows", progress, initial=resumed_from, every=10.0, unit_scale=True)
    t0 = time.perf_counter()
    try:
        if not state["input_done"]:
            _predict_chunks(clf, input_path, text_column, chunk_size, batch_size, writer, state, sidecar, bar)
        writer.finish(output)
    except BaseException as e:
        writer.close()
        if fresh and not state["rows_done"]:  # nothing to continue: leave no trace (a bad column, an early Ctrl-C)
            for p in (sidecar, output):
                p.unlink(missing_ok=True)
            shutil.rmtree(parts, ignore_errors=True)
        elif isinstance(e, KeyboardInterrupt):
            log.warning("predict: stopped after %s rows, all saved; run the same command again to continue", f"{state['rows_done']:,}")
        raise
    finally:
        writer.close()
        bar.close()
    sidecar.unlink(missing_ok=True)  # complete: nothing left to continue
    seconds = time.perf_counter() - t0
    done = state["rows_done"] - resumed_from
    result = {
        "rows": state["rows_done"],
        "seconds": seconds,
        "rows_per_s": done / max(seconds, 1e-9),
        "resumed_from": resumed_from,
        "output": str(output),
    }
    if progress:
        log.info("predicted %s rows in %.1fs (%s rows/s) -> %s", f"{done:,}", seconds, f"{result['rows_per_s']:,.0f}", output)
    return result


def _describe_difference(state: dict, identity: dict, key: str) -> str:
    if key == "input":
        was, now = state.get("input") or {}, identity["input"]
        if was.get("path") != now["path"]:
            return f"input was {was.get('path')!r}, now {now['path']!r}"
        return f"{now['path']!r} has changed since: {was.get('size')} bytes then, {now['size']} now, or modified"
    if key == "model":
        return (
            f"model was {(state.get('model') or {}).get('path')!r} with other weights"
            if ((state.get("model") or {}).get("path") == identity["model"]["path"])
            else f"model was {(state.get('model') or {}).get('path')!r}, now {identity['model']['path']!r}"
        )
    return f"{key} was {state.get(key)!r}, now {identity[key]!r}"
