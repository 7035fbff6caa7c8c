"""Files: atomic writes, the cache folder and its content keys, and the one reader of saved folders.

Every folder textrnn writes (a model, a pretrained encoder, a checkpoint) is written to a temporary
sibling and renamed into place, so a reader never sees half of one and a failed write never loses
the old one. Every such folder is read by the functions here, with the same checks: the folder and
its files exist, none is a link out of the folder, the JSON metadata names our format and a version
this code reads, the vocabulary and labels are well formed, the tensors file is safetensors (never
a pickle). Each failure is one sentence naming the file, as an ``ArtifactError`` (or the error type
the caller asks for, ``CheckpointError`` for checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import Config
from .errors import ArtifactError, ConfigError
from .text import Vocabulary

CACHE_ENV = "TEXTRNN_CACHE_DIR"


# ----------------------------------------------------------------------------- the cache
def cache_dir() -> Path:
    """The cache root: ``$TEXTRNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/textrnn``, else
    ``~/.cache/textrnn``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "textrnn"


def content_key(settings: Any, *arrays: Any) -> str:
    """A digest of JSON-able ``settings`` and the raw bytes of ``arrays`` (numpy arrays, bytes or
    str): the name of a cache entry that is reused only for the same inputs."""
    key = hashlib.blake2b(digest_size=16)
    key.update(json.dumps(settings).encode())
    for a in arrays:
        key.update(a.encode() if isinstance(a, str) else a if isinstance(a, bytes) else a.tobytes())
    return key.hexdigest()


# ----------------------------------------------------------------------------- writing
@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", durable: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` for the caller (or any library) to write; renamed into place
    on a clean exit, removed on any error: a reader never sees half a file, a crash never leaves
    one, a failed write keeps the old file. ``durable``: fsync the file and the folder too (for
    what a later run resumes from)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    """Atomic (see atomic_path)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomic, as write_text."""
    write_text(path, json.dumps(obj, indent=2, default=str))


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (where the platform has directory file descriptors)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False, what: str = "another path") -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path`` to fill; on a clean exit it is renamed into place
    (an existing folder is replaced, and put back if the rename fails); on any error it is removed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ArtifactError(f"{str(path)!r} already exists; choose {what} or overwrite it (--overwrite).")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the previous folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, fmt: str) -> None:
    """Tensors to a safetensors file (never a pickle), stamped with the folder's format; callers
    write it inside a temporary folder or under a temporary name, then rename."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": fmt})


# ----------------------------------------------------------------------------- reading: the checks
def check_inside(folder: Path, names: list[str], noun: str, error: type[Exception] = ArtifactError) -> None:
    """Refuse a file of ``folder`` that is a link to elsewhere: a shared folder must not make us
    read (and maybe serve) files from outside it."""
    root = folder.resolve()
    for name in names:
        target = (folder / name).resolve()
        if root not in target.parents:
            raise error(f"{str(folder)!r}: {name} is a link to a file outside the {noun} folder ({str(target)!r}); refusing to read it.")


def check_format(
    meta: Any, where: str, fmt: str, max_version: int, noun: str, meta_file: str = "config.json", error: type[Exception] = ArtifactError
) -> dict:
    """``meta`` is a dict naming ``fmt`` at a version this code reads."""
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise error(f"{where!r} is not a textrnn {noun} ({meta_file} has format={got!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > max_version:
        raise error(
            f"{where!r} was written by a newer textrnn (format_version={version!r}; this textrnn "
            f"{__version__} reads up to {max_version}). Upgrade textrnn to load it."
        )
    return meta


def read_tensors(path: Path, error: type[Exception] = ArtifactError) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, on the CPU (never a pickle)."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise error(f"{str(path)!r} is damaged or not a safetensors file ({e})") from None


def read_vocabulary(path: Path) -> Vocabulary:
    try:
        return Vocabulary.load(path)
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{str(path)!r} is damaged: not UTF-8 ({e.reason} at byte {e.start}).") from None
    except ArtifactError as e:
        raise ArtifactError(f"{str(path)!r} is damaged: {e}") from None


def check_labels(classes: Any, folder: Path) -> list:
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ArtifactError(
            f"{str(folder)!r}: labels.json must list at least two distinct labels (strings or integers). Received: {str(classes)[:80]}"
        )
    return classes


# ----------------------------------------------------------------------------- reading: saved folders
@dataclass(frozen=True)
class FolderKind:
    """What one kind of saved folder holds: its format name and version, its files, and how its
    errors name it."""

    format: str
    version: int
    files: tuple[str, ...]
    noun: str  # "model", "encoder"
    not_found: str  # the sentence for a folder that is not there


# Annotated: the package's modules import each other through __init__, and mypy cannot infer these in
# time for the module-level uses elsewhere (pretrain's FORMAT).
MODEL: FolderKind = FolderKind(
    "textrnn-model", 1, ("config.json", "vocab.txt", "labels.json", "weights.safetensors"), "model", "Model directory not found: {path!r}"
)
ENCODER: FolderKind = FolderKind(
    "textrnn-encoder",
    1,
    ("config.json", "vocab.txt", "weights.safetensors"),
    "encoder",
    "Pretrained encoder folder not found: {path!r} (write one with textrnn pretrain)",
)


@dataclass
class Artifact:
    """A saved folder, read and checked: its metadata (config.json), its Config, vocabulary, labels
    (models) and tensors (unless not asked for)."""

    path: Path
    meta: dict
    config: Config
    vocab: Vocabulary
    classes: list | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)


def read_folder(path: str | os.PathLike, kind: FolderKind = MODEL, weights: bool = True) -> Artifact:
    """Read a model or encoder folder with every check; ``weights=False`` leaves the tensors unread
    (the ONNX runtime needs all but them)."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(kind.not_found.format(path=str(path)))
    files = [f for f in kind.files if weights or f != "weights.safetensors"]
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise ArtifactError(f"{str(path)!r} is not a complete textrnn {kind.noun}: missing {', '.join(missing)}")
    check_inside(path, files, kind.noun)
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
        classes = json.loads((path / "labels.json").read_text(encoding="utf-8")) if "labels.json" in files else None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        which = "config.json or labels.json" if "labels.json" in files else "config.json"
        raise ArtifactError(f"{str(path)!r}: {which} is not valid JSON ({e})") from None
    check_format(meta, str(path), kind.format, kind.version, kind.noun)
    if classes is not None:
        check_labels(classes, path)
    try:
        config = Config.from_dict(meta.get("config", {}), source=str(path / "config.json"), notify=False)
    except ConfigError as e:
        raise ArtifactError(str(e)) from None
    vocab = read_vocabulary(path / "vocab.txt")
    state = read_tensors(path / "weights.safetensors") if weights else {}
    return Artifact(path, meta, config, vocab, classes, state)
