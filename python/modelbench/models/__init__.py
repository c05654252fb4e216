"""Model checkpoints: loading Hugging Face folders and GGUF files, and
tokenizers. Loading only: nothing here imports the engine or anything above it."""

from modelbench.models.checkpoint import (
    SUPPORTED_ARCHITECTURES,
    Checkpoint,
    CheckpointError,
    expected_weight_shapes,
    rope_parameters,
)
from modelbench.models.default_model import default_model_path
from modelbench.models.loader import load_checkpoint, load_tokenizer
from modelbench.models.tokenizer import IncrementalDetokenizer, Tokenizer

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "Checkpoint",
    "CheckpointError",
    "IncrementalDetokenizer",
    "Tokenizer",
    "default_model_path",
    "expected_weight_shapes",
    "load_checkpoint",
    "load_tokenizer",
    "rope_parameters",
]
