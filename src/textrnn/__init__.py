"""textrnn: labelled text in, a trained recurrent-network classifier out."""

__version__ = "0.1.0"

import os as _os

# How long idle OpenMP threads spin before they sleep (GNU OpenMP, which torch uses on Linux). The
# default spins so long that two threads collapse when another process shares the cores; sleeping
# at once (OMP_WAIT_POLICY=PASSIVE) costs 2.4x on an idle machine. Measured here, 2 cores, default
# model, tokens/s idle / with a second training running: default 218k / 12k, PASSIVE 93k / 134k,
# GOMP_SPINCOUNT=1000 204k / 66k. The last is the default here; a user's own setting wins. It
# must be set before torch loads its OpenMP runtime, hence here.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from .classifier import TextClassifier, load
from .config import Config, DataConfig, ModelConfig, TextConfig, TrainConfig
from .errors import ArtifactError, ConfigError, DataError, NotFittedError, TextRNNError
from .models import BagOfEmbeddings, RNNClassifier
from .text import Tokenizer, Vocabulary, pad

__all__ = [
    "TextClassifier", "load", "Config", "DataConfig", "TextConfig", "ModelConfig", "TrainConfig",
    "RNNClassifier", "BagOfEmbeddings", "Tokenizer", "Vocabulary", "pad",
    "TextRNNError", "ConfigError", "DataError", "ArtifactError", "NotFittedError", "__version__",
]
