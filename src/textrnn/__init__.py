"""textrnn: labelled text in, a trained recurrent-network classifier out."""

__version__ = "0.1.0"

import os as _os

# OpenMP threads that spin while waiting collapse when another process shares the cores: measured
# here, two torch threads trained at 13k instead of 126k tokens/s on a busy 2-core machine. Passive
# waiting must be chosen before torch starts its thread pool, so here; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
