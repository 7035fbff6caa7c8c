"""textrnn: labelled text in, a trained recurrent-network classifier out."""

__version__ = "0.1.0"

# first: process settings that must precede torch's loading; then MKL's kernels on AMD CPUs, before any matrix product
from . import _env, mkl  # noqa: F401
from .classifier import TextClassifier, load
from .config import Config, DataConfig, ModelConfig, TextConfig, TrainConfig
from .errors import ArtifactError, ConfigError, DataError, NotFittedError, TextRNNError
from .models import BagOfEmbeddings, RNNClassifier
from .text import Tokenizer, Vocabulary, pad

__all__ = [
    "TextClassifier",
    "load",
    "Config",
    "DataConfig",
    "TextConfig",
    "ModelConfig",
    "TrainConfig",
    "RNNClassifier",
    "BagOfEmbeddings",
    "Tokenizer",
    "Vocabulary",
    "pad",
    "TextRNNError",
    "ConfigError",
    "DataError",
    "ArtifactError",
    "NotFittedError",
    "__version__",
]
