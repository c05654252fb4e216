"""Checkpoints: what loading a model gives (``Checkpoint``), its error, and
the checks every loader runs: the architecture is one we implement and every
weight has the shape ``expected_weight_shapes`` says, so the model code can
load ``weights`` strictly and trust their shapes. The loaders
(``hf_loader``, ``gguf_loader``) build on this; ``loader.load_checkpoint``
chooses between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
        generation_config: the sampling defaults the model ships
            (``SamplingParams`` field names; see ``generation_defaults``).
        quant_types: names of the weights kept in GGUF blocks (uint8
            ``[rows, row_bytes]``) -> their ggml type id (``gguf_loader``).
    """

    architecture: str
    hf_config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    source: str
    generation_config: dict[str, Any] = field(default_factory=dict)
    quant_types: dict[str, int] = field(default_factory=dict)


def architecture_of(hf_config: dict[str, Any], source: Path | str) -> str:
    """The supported architecture named by ``hf_config["architectures"]``."""
    names = hf_config.get("architectures") or []
    for name in names:
        if name in SUPPORTED_ARCHITECTURES:
            return str(name)
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
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> None:
    """Raise ``CheckpointError`` unless ``weights`` match ``expected_weight_shapes``
    (``shapes`` gives the logical shape of a tensor held in another form,
    such as GGUF blocks).

    A tied ``lm_head.weight`` that the checkpoint stores anyway is checked
    against the embedding's shape; known unused buffers (rotary
    ``inv_freq``, GPT-2's causal mask) are dropped from ``weights``.
    """
    expected = expected_weight_shapes(architecture, hf_config)
    if "lm_head.weight" in weights and "lm_head.weight" not in expected:
        embed = (
            "transformer.wte.weight"
            if architecture == "GPT2LMHeadModel"
            else ("model.embed_tokens.weight")
        )
        expected["lm_head.weight"] = expected[embed]
    for name, shape in expected.items():
        if name not in weights:
            raise CheckpointError(f"missing tensor {name} in {source}")
        actual = (shapes or {}).get(name) or tuple(weights[name].shape)
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
        shapes.update(
            {
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
            }
        )
    shapes["transformer.ln_f.weight"] = (hidden,)
    shapes["transformer.ln_f.bias"] = (hidden,)
    if not _is_tied("GPT2LMHeadModel", c):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes
