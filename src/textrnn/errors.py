"""Exception types. Every error a user can cause is a ``TextRNNError``: the CLI turns it into one
line on stderr and exit code 2; the server into a 4xx answer with the same message."""

from __future__ import annotations

import difflib
from typing import Iterable


class TextRNNError(Exception):
    """Base class of textrnn's own errors; its message is meant for the user, in one line."""


class ConfigError(TextRNNError, ValueError):
    """A setting is unknown or out of range."""


class DataError(TextRNNError, ValueError):
    """Input data cannot be read or does not make sense (columns, labels, encodings)."""


class ArtifactError(TextRNNError):
    """A model directory is missing, damaged, foreign or from a newer format."""


class NotFittedError(TextRNNError, AttributeError):
    """The estimator is used before ``fit`` or ``load``."""


class CheckpointError(ArtifactError):
    """A training checkpoint is missing, damaged, or was written for other settings or data."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training at a step boundary, after writing a checkpoint to ``checkpoint_dir``."""

    def __init__(self, message: str, checkpoint_dir=None):
        super().__init__(message)
        self.checkpoint_dir = checkpoint_dir


def did_you_mean(received: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(received), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def expected_one_of(name: str, received: object, choices: Iterable[str]) -> ConfigError:
    """Keras-style message: ``Expected one of {...}. Received: name='x'``."""
    choices = sorted(choices)
    return ConfigError(
        f"Expected one of {{{', '.join(repr(c) for c in choices)}}}. Received: {name}={received!r}." + did_you_mean(str(received), choices)
    )
