"""Hugging Face checkpoint folders: ``config.json``, ``*.safetensors``
(sharded or not) or ``pytorch_model.bin``, and the tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from modelbench.models.checkpoint import Checkpoint, CheckpointError, architecture_of, check_weights
from modelbench.models.generation_defaults import read_generation_config
from modelbench.models.tokenizer import Tokenizer


def load_hf_folder(path: Path, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """Load a Hugging Face checkpoint folder (see ``load_checkpoint``)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"no config.json in model folder {path}")
    hf_config = json.loads(config_file.read_text())
    architecture = architecture_of(hf_config, source=config_file)
    weights = _read_weights(path)
    if architecture == "GPT2LMHeadModel":
        weights = _add_gpt2_prefix(weights)
    weights = {name: t.to(dtype).contiguous() for name, t in weights.items()}
    check_weights(architecture, hf_config, weights, source=path)
    return Checkpoint(
        architecture=architecture,
        hf_config=hf_config,
        weights=weights,
        tokenizer=Tokenizer.from_pretrained(path),
        source=str(path),
        generation_config=read_generation_config(path),
    )


def _add_gpt2_prefix(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add ``transformer.`` to original GPT-2 names (``h.0...`` -> ``transformer.h.0...``)."""
    return {
        name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name: t
        for name, t in weights.items()
    }


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder (the encoder loader reads them too)."""
    return _read_weights(path)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder: sharded or single safetensors, else pytorch_model.bin."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_file = path / index_name
        if index_file.is_file():
            weight_map = json.loads(index_file.read_text()).get("weight_map", {})
            weights: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                shard_file = path / shard
                if not shard_file.is_file():
                    raise CheckpointError(f"shard {shard} listed in {index_file} is missing")
                weights.update(_read_file(shard_file))
            return weights
    files = sorted(path.glob("*.safetensors"))
    if not files and (path / "pytorch_model.bin").is_file():
        files = [path / "pytorch_model.bin"]
    if not files:
        raise CheckpointError(f"no *.safetensors or pytorch_model.bin weights in {path}")
    weights = {}
    for file in files:
        weights.update(_read_file(file))
    return weights


def _read_file(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(file, device="cpu")
        loaded: dict[str, torch.Tensor] = torch.load(file, map_location="cpu", weights_only=True)
        return loaded
    except Exception as e:  # the libraries raise their own error types
        raise CheckpointError(f"cannot read weights file {file}: {e}") from e
