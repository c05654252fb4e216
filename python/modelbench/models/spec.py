"""Hugging Face ``config.json`` -> ``_core.ModelSpec``, the model shape the C++ runner builds from.

One function, ``model_spec_from_hf_config``, reads the field names of
``LlamaConfig``, ``Qwen2Config``, ``MistralConfig`` and ``GPT2Config`` (and
RoPE settings written by transformers 4 or 5), and refuses, with a
``ValueError`` that names the field, any setting the C++ models do not
implement rather than serving a silently different model.
"""

from __future__ import annotations

from typing import Any

from modelbench import _core
from modelbench.models.checkpoint import rope_parameters

# Hugging Face architecture (or model_type) -> ModelSpec.architecture.
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "mistral",
    "GPT2LMHeadModel": "gpt2",
}
_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "mistral": "mistral", "gpt2": "gpt2"}

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def model_spec_from_hf_config(hf_config: dict[str, Any]) -> _core.ModelSpec:
    """The ``ModelSpec`` of a Hugging Face causal LM config (``config.json`` as a dict).

    Raises:
        ValueError: the architecture is not one of ``LlamaForCausalLM``,
            ``Qwen2ForCausalLM``, ``MistralForCausalLM``, ``GPT2LMHeadModel``;
            a required field is missing; or the config asks for something the
            models do not implement (another activation, rope type, MLP
            biases, per-layer sliding windows, ...).
    """
    architecture = _architecture(hf_config)
    spec = _gpt2_spec(hf_config) if architecture == "gpt2" else _llama_spec(hf_config, architecture)
    spec.validate()
    return spec


def _architecture(c: dict[str, Any]) -> str:
    for name in c.get("architectures") or []:
        if name in _ARCHITECTURES:
            return _ARCHITECTURES[name]
    if not c.get("architectures") and c.get("model_type") in _MODEL_TYPES:
        return _MODEL_TYPES[c["model_type"]]
    found = c.get("architectures") or c.get("model_type") or "none"
    raise ValueError(f"unsupported architecture {found!r}; supported: {', '.join(_ARCHITECTURES)}")


def _require(c: dict[str, Any], key: str) -> Any:
    if c.get(key) is None:
        raise ValueError(f"config has no {key!r}")
    return c[key]


def _llama_spec(c: dict[str, Any], architecture: str) -> _core.ModelSpec:
    if c.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act must be 'silu' for {architecture}, got {c['hidden_act']!r}")
    if c.get("mlp_bias", False):
        raise ValueError("mlp_bias=True is not supported")
    if architecture == "llama" and c.get("attention_bias", False):
        # o_proj would carry a bias too; the fused q/k/v path has none for it.
        raise ValueError("attention_bias=True is not supported for llama")

    spec = _core.ModelSpec()
    spec.architecture = architecture
    spec.vocab_size = _require(c, "vocab_size")
    spec.hidden_size = _require(c, "hidden_size")
    spec.num_layers = _require(c, "num_hidden_layers")
    spec.num_heads = _require(c, "num_attention_heads")
    spec.num_kv_heads = c.get("num_key_value_heads") or spec.num_heads
    spec.head_dim = c.get("head_dim") or spec.hidden_size // spec.num_heads
    spec.intermediate_size = _require(c, "intermediate_size")
    spec.norm_eps = float(c.get("rms_norm_eps", 1e-6))
    spec.max_position_embeddings = c.get("max_position_embeddings") or 2048
    spec.tie_word_embeddings = bool(c.get("tie_word_embeddings", False))
    spec.attention_bias = architecture == "qwen2"  # Qwen2: q/k/v always biased, o_proj never
    spec.sliding_window = _sliding_window(c, architecture)
    _set_rope(spec, c)
    return spec


def _sliding_window(c: dict[str, Any], architecture: str) -> int:
    if architecture == "mistral":
        return int(c.get("sliding_window") or 0)
    if architecture == "qwen2" and c.get("use_sliding_window", False):
        # Qwen2 windows only layers from max_window_layers on; not implemented.
        raise ValueError("use_sliding_window=True is not supported for qwen2")
    return 0


def _set_rope(spec: _core.ModelSpec, c: dict[str, Any]) -> None:
    rope = rope_parameters(c)
    spec.rope_theta = float(rope["rope_theta"])
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(f"partial_rotary_factor must be 1.0, got {rope['partial_rotary_factor']}")
    rope_type = rope["rope_type"]
    scaling = _core.RopeScaling()
    if rope_type == "default":
        scaling.type = "none"
    elif rope_type == "linear":
        scaling.type = "linear"
        scaling.factor = float(rope["factor"])
    elif rope_type == "llama3":
        scaling.type = "llama3"
        scaling.factor = float(rope["factor"])
        scaling.low_freq_factor = float(rope["low_freq_factor"])
        scaling.high_freq_factor = float(rope["high_freq_factor"])
        scaling.original_max_position_embeddings = int(rope["original_max_position_embeddings"])
    else:
        raise ValueError(
            f"rope type {rope_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    spec.rope_scaling = scaling


def _gpt2_spec(c: dict[str, Any]) -> _core.ModelSpec:
    activation = c.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function must be 'gelu_new' for gpt2, got {activation!r}")
    if not c.get("scale_attn_weights", True) or c.get("scale_attn_by_inverse_layer_idx", False):
        raise ValueError(
            "gpt2 attention scaling other than 1/sqrt(head_dim) is not supported "
            "(scale_attn_weights=False or scale_attn_by_inverse_layer_idx=True)"
        )
    spec = _core.ModelSpec()
    spec.architecture = "gpt2"
    spec.vocab_size = _require(c, "vocab_size")
    spec.hidden_size = _require(c, "n_embd")
    spec.num_layers = _require(c, "n_layer")
    spec.num_heads = _require(c, "n_head")
    spec.num_kv_heads = spec.num_heads
    spec.head_dim = spec.hidden_size // spec.num_heads
    spec.intermediate_size = c.get("n_inner") or 4 * spec.hidden_size
    spec.norm_eps = float(c.get("layer_norm_epsilon", 1e-5))
    spec.max_position_embeddings = _require(c, "n_positions")
    spec.tie_word_embeddings = bool(c.get("tie_word_embeddings", True))
    return spec
