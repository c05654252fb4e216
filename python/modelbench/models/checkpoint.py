"""Checkpoints: what loading a model gives, and the Hugging Face folder loader.

``load_checkpoint(path)`` is the one entry point: a folder is a Hugging Face
checkpoint (``config.json``, ``*.safetensors`` or ``pytorch_model.bin``,
tokenizer files), a ``.gguf`` file is read by ``gguf_loader``, and ``None``
is the default model. Every checkpoint is validated against
``expected_weight_shapes`` before it is returned, so the model code can load
``weights`` strictly and trust their shapes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelbench.models.tokenizer import Tokenizer

SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "MistralForCausalLM",
    "GPT2LMHeadModel",
)

# Buffers that some checkpoints carry but no model reads (recomputed at load).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file or tensor."""


@dataclass
class Checkpoint:
    """A model's configuration, weights and tokenizer, ready for the engine.

    Attributes:
        architecture: one of ``SUPPORTED_ARCHITECTURES``.
        hf_config: ``config.json`` contents; for GGUF an equivalent dict with
            ``LlamaConfig`` field names. Read RoPE settings with
            ``rope_parameters(hf_config)``, which accepts both spellings.
        weights: Hugging Face parameter name -> contiguous tensor of the
            requested dtype. ``lm_head.weight`` is absent when embeddings are
            tied and the checkpoint does not store it.
        tokenizer: the model's tokenizer.
        source: the path it was loaded from.
    """

    architecture: str
    hf_config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    source: str


def load_checkpoint(
    path: str | os.PathLike[str] | None, dtype: torch.dtype = torch.float32
) -> Checkpoint:
    """Load a Hugging Face folder, a ``.gguf`` file, or (``None``) the default model.

    Raises:
        CheckpointError (a ``ValueError``): the path does not exist or is not
            a folder or ``.gguf`` file, ``config.json`` is missing, the
            architecture is unsupported, a weights file is corrupt, or a
            tensor is missing, unexpected or of the wrong shape.
    """
    if path is None:
        from modelbench.models.default_model import default_model_path

        path = default_model_path()
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model path not found: {path}")
    if path.is_file() and path.suffix == ".gguf":
        from modelbench.models.gguf_loader import load_gguf

        return load_gguf(path, dtype)
    if path.is_dir():
        return load_hf_folder(path, dtype)
    raise CheckpointError(
        f"expected a Hugging Face model folder or a .gguf file, got {path}"
    )


def load_tokenizer(path: str | os.PathLike[str] | None) -> Tokenizer:
    """Only the tokenizer of a Hugging Face folder, a ``.gguf`` file, or
    (``None``) the default model: no weights are read."""
    if path is None:
        from modelbench.models.default_model import default_model_path

        path = default_model_path()
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        from modelbench.models.gguf_loader import gguf_tokenizer

        try:
            reader = GGUFReader(path)
        except Exception as e:
            raise CheckpointError(f"cannot read GGUF file {path}: {e}") from e
        metadata = {name: field.contents() for name, field in reader.fields.items()
                    if name.startswith("tokenizer.")}
        return gguf_tokenizer(metadata, path)
    if path.is_dir():
        return Tokenizer.from_pretrained(path)
    raise CheckpointError(f"expected a Hugging Face model folder or a .gguf file, got {path}")


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
    )


def architecture_of(hf_config: dict[str, Any], source: Path | str) -> str:
    """The supported architecture named by ``hf_config["architectures"]``."""
    names = hf_config.get("architectures") or []
    for name in names:
        if name in SUPPORTED_ARCHITECTURES:
            return name
    raise CheckpointError(
        f"unsupported architecture {names or 'missing'} in {source}; "
        f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
    )


def rope_parameters(hf_config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings as one dict with ``rope_type`` and ``rope_theta``.

    transformers 5 writes ``rope_parameters``; older configs write
    ``rope_theta`` and ``rope_scaling`` (with ``type`` or ``rope_type``).
    """
    params = dict(hf_config.get("rope_parameters") or {})
    scaling = hf_config.get("rope_scaling") or {}
    params = {**scaling, **params}
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.setdefault("rope_type", "default")
    params.setdefault("rope_theta", float(hf_config.get("rope_theta", 10000.0)))
    return params


def expected_weight_shapes(
    architecture: str, hf_config: dict[str, Any]
) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of ``architecture`` must hold, with its shape.

    ``lm_head.weight`` is listed only when embeddings are not tied.
    """
    if architecture == "GPT2LMHeadModel":
        return _gpt2_shapes(hf_config)
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"unsupported architecture {architecture!r}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    c = hf_config
    hidden, vocab, inter = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    num_heads = c["num_attention_heads"]
    num_kv_heads = c.get("num_key_value_heads") or num_heads
    head_dim = c.get("head_dim") or hidden // num_heads
    qkv_bias = architecture == "Qwen2ForCausalLM" or c.get("attention_bias", False)
    o_bias = architecture != "Qwen2ForCausalLM" and c.get("attention_bias", False)
    mlp_bias = c.get("mlp_bias", False)

    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layer = {
            "self_attn.q_proj": (num_heads * head_dim, hidden),
            "self_attn.k_proj": (num_kv_heads * head_dim, hidden),
            "self_attn.v_proj": (num_kv_heads * head_dim, hidden),
            "self_attn.o_proj": (hidden, num_heads * head_dim),
            "mlp.gate_proj": (inter, hidden),
            "mlp.up_proj": (inter, hidden),
            "mlp.down_proj": (hidden, inter),
        }
        for name, shape in layer.items():
            shapes[p + name + ".weight"] = shape
            is_qkv = name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
            has_bias = (
                (is_qkv and qkv_bias)
                or (name == "self_attn.o_proj" and o_bias)
                or (name.startswith("mlp.") and mlp_bias)
            )
            if has_bias:
                shapes[p + name + ".bias"] = (shape[0],)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    if not _is_tied(architecture, c):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def check_weights(
    architecture: str,
    hf_config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    source: Path | str,
) -> None:
    """Raise ``CheckpointError`` unless ``weights`` match ``expected_weight_shapes``.

    A tied ``lm_head.weight`` that the checkpoint stores anyway is checked
    against the embedding's shape; known unused buffers (rotary
    ``inv_freq``, GPT-2's causal mask) are dropped from ``weights``.
    """
    expected = expected_weight_shapes(architecture, hf_config)
    if "lm_head.weight" in weights and "lm_head.weight" not in expected:
        embed = "transformer.wte.weight" if architecture == "GPT2LMHeadModel" else (
            "model.embed_tokens.weight"
        )
        expected["lm_head.weight"] = expected[embed]
    for name, shape in expected.items():
        if name not in weights:
            raise CheckpointError(f"missing tensor {name} in {source}")
        actual = tuple(weights[name].shape)
        if actual != shape:
            raise CheckpointError(
                f"tensor {name} in {source} has shape {list(actual)}, "
                f"expected {list(shape)} from the config"
            )
    for name in list(weights):
        if name in expected:
            continue
        if name.endswith(_IGNORED_SUFFIXES):
            del weights[name]
            continue
        raise CheckpointError(
            f"unexpected tensor {name} in {source}: not used by {architecture} with this config"
        )


def _is_tied(architecture: str, hf_config: dict[str, Any]) -> bool:
    # GPT-2 ties by default; the Llama family does not.
    default = architecture == "GPT2LMHeadModel"
    return bool(hf_config.get("tie_word_embeddings", default))


def _gpt2_shapes(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    hidden, vocab = c["n_embd"], c["vocab_size"]
    inner = c.get("n_inner") or 4 * hidden
    # Conv1D stores weights as [in_features, out_features].
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (vocab, hidden),
        "transformer.wpe.weight": (c["n_positions"], hidden),
    }
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        shapes.update({
            p + "ln_1.weight": (hidden,),
            p + "ln_1.bias": (hidden,),
            p + "attn.c_attn.weight": (hidden, 3 * hidden),
            p + "attn.c_attn.bias": (3 * hidden,),
            p + "attn.c_proj.weight": (hidden, hidden),
            p + "attn.c_proj.bias": (hidden,),
            p + "ln_2.weight": (hidden,),
            p + "ln_2.bias": (hidden,),
            p + "mlp.c_fc.weight": (hidden, inner),
            p + "mlp.c_fc.bias": (inner,),
            p + "mlp.c_proj.weight": (inner, hidden),
            p + "mlp.c_proj.bias": (hidden,),
        })
    shapes["transformer.ln_f.weight"] = (hidden,)
    shapes["transformer.ln_f.bias"] = (hidden,)
    if not _is_tied("GPT2LMHeadModel", c):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def _add_gpt2_prefix(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add ``transformer.`` to original GPT-2 names (``h.0...`` -> ``transformer.h.0...``)."""
    return {
        name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name: t
        for name, t in weights.items()
    }


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
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # the libraries raise their own error types
        raise CheckpointError(f"cannot read weights file {file}: {e}") from e
