"""GGUF files (llama.cpp's format) as modelbench checkpoints.

Reads with the ``gguf`` package and undoes what llama.cpp's converter did to
a Hugging Face checkpoint: tensor
names (``blk.N.attn_q.weight`` -> ``model.layers.N.self_attn.q_proj.weight``),
reversed dims, and the row permutation of Llama's Q/K projections. The
config and the tokenizer are rebuilt from the metadata.

With ``keep_quantized``, matrices in a block format (``QUANTIZED_TYPES``)
stay in their blocks: the checkpoint holds each as uint8 ``[rows,
row_bytes]``, its type in ``Checkpoint.quant_types``, and the engine keeps
it quantized (cpp/kernels/quant_matrix.h). Otherwise, and for F32, F16 and
BF16 tensors, weights are dequantized to float32 (then ``dtype``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as BackendTokenizer

from modelbench.models.checkpoint import Checkpoint, CheckpointError, check_weights
from modelbench.models.generation_defaults import from_gguf_metadata
from modelbench.models.tokenizer import Tokenizer

# GGUF general.architecture -> (HF architecture, whether Q/K rows are permuted)
_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", True),
    "qwen2": ("Qwen2ForCausalLM", False),
}

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")

# Pre-tokenizer regexes by tokenizer.ggml.pre (from llama.cpp's llama-vocab.cpp).
_GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = _LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
_DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "codeshell", "command-r")

# The block formats the engine runs quantized (ggml type names).
QUANTIZED_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
_FLOAT_TYPES = ("F32", "F16", "BF16")

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4


def load_gguf(
    path: Path, dtype: torch.dtype = torch.float32, keep_quantized: bool = False
) -> Checkpoint:
    """Load a ``.gguf`` file as a ``Checkpoint`` with Hugging Face names and
    layout; with ``keep_quantized``, block-format matrices in their blocks
    (see the module docstring), and a tensor of any other type is a
    ``CheckpointError`` naming it, its type and the supported types."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:
        raise CheckpointError(f"cannot read GGUF file {path}: {e}") from e
    metadata = {name: field.contents() for name, field in reader.fields.items()}
    arch = metadata.get("general.architecture")
    if arch not in _ARCHITECTURES:
        raise CheckpointError(
            f"unsupported GGUF architecture {arch!r} in {path}; "
            f"supported: {', '.join(_ARCHITECTURES)}"
        )
    architecture, permuted_qk = _ARCHITECTURES[arch]
    tensor_names = {t.name for t in reader.tensors}
    hf_config = gguf_to_hf_config(metadata, architecture, tensor_names, source=path)

    weights: dict[str, torch.Tensor] = {}
    quant_types: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            raise CheckpointError(
                f"{path} stores llama3 RoPE frequency factors (rope_freqs.weight); "
                "load the Hugging Face folder of this model instead"
            )
        name = gguf_to_hf_name(tensor.name)
        if name is None:
            raise CheckpointError(f"unexpected tensor {tensor.name} in {path}")
        type_name = tensor.tensor_type.name
        shape = tuple(int(d) for d in reversed(tensor.shape))
        if keep_quantized and type_name not in QUANTIZED_TYPES + _FLOAT_TYPES:
            raise CheckpointError(
                f"tensor {tensor.name} in {path} has type {type_name}, which modelbench does not "
                f"run quantized; supported types: {', '.join(QUANTIZED_TYPES + _FLOAT_TYPES)}. "
                "Load it with dtype='float32' to dequantize it, or convert the file to one of them"
            )
        if keep_quantized and type_name in QUANTIZED_TYPES and len(shape) == 2:
            # [rows, row_bytes] of blocks, copied out of the read-only map
            weights[name] = torch.from_numpy(np.array(tensor.data).reshape(shape[0], -1))
            quant_types[name] = int(tensor.tensor_type)
            shapes[name] = shape
        else:
            weights[name] = _dequantize(tensor).to(dtype).contiguous()

    if permuted_qk:
        num_heads = hf_config["num_attention_heads"]
        num_kv_heads = hf_config["num_key_value_heads"]
        for name in list(weights):
            if name.endswith("self_attn.q_proj.weight"):
                weights[name] = unpermute_qk(weights[name], num_heads)
            elif name.endswith("self_attn.k_proj.weight"):
                weights[name] = unpermute_qk(weights[name], num_kv_heads)

    check_weights(architecture, hf_config, weights, source=path, shapes=shapes)
    return Checkpoint(
        architecture=architecture,
        hf_config=hf_config,
        weights=weights,
        tokenizer=gguf_tokenizer(metadata, source=path),
        source=str(path),
        generation_config=from_gguf_metadata(metadata),
        quant_types=quant_types,
    )


def gguf_to_hf_name(name: str) -> str | None:
    """The Hugging Face name of a llama.cpp tensor name, or ``None`` if unknown."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    match = _BLOCK_RE.fullmatch(name)
    if match is None or match.group(2) not in _BLOCK_NAMES:
        return None
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{kind}"


def unpermute_qk(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo convert_hf_to_gguf.py's ``permute`` of Q/K rows.

    llama.cpp's RoPE rotates interleaved pairs (0,1), (2,3), ...; HF's
    ``rotate_half`` rotates (i, i + head_dim/2). The converter reorders each
    head's rows from the second layout to the first; this puts them back.
    """
    rows = weight.shape[0]
    # [num_heads, head_dim/2, 2, ...] -> [num_heads, 2, head_dim/2, ...]
    w = weight.reshape(num_heads, rows // num_heads // 2, 2, *weight.shape[1:])
    return w.swapaxes(1, 2).reshape(weight.shape).contiguous()


def _dequantize(tensor: Any) -> torch.Tensor:
    """A GGUF tensor as float32 in HF shape (GGUF lists dims innermost first)."""
    from gguf.quants import dequantize

    array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    if not array.flags.writeable:  # unquantized tensors are views of the mmapped file
        array = array.copy()
    shape = tuple(int(d) for d in reversed(tensor.shape))
    return torch.from_numpy(np.ascontiguousarray(array).reshape(shape))


def gguf_to_hf_config(
    metadata: dict[str, Any], architecture: str, tensor_names: set[str], source: Path
) -> dict[str, Any]:
    """A ``config.json``-like dict (``LlamaConfig`` field names) from GGUF metadata."""
    arch = metadata["general.architecture"]

    def get(key: str, default: Any = None) -> Any:
        value = metadata.get(f"{arch}.{key}", default)
        if value is None:
            raise CheckpointError(f"GGUF file {source} lacks metadata {arch}.{key}")
        return value

    hidden = int(get("embedding_length"))
    num_heads = int(get("attention.head_count"))
    rope_theta = _float32(get("rope.freq_base", 10000.0))
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": rope_theta}
    scaling = metadata.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        if scaling != "linear":
            raise CheckpointError(f"unsupported GGUF rope scaling {scaling!r} in {source}")
        rope = {**rope, "rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    config = {
        "architectures": [architecture],
        "model_type": {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}[architecture],
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(get("attention.head_count_kv", num_heads)),
        "head_dim": int(get("attention.key_length", hidden // num_heads)),
        "rms_norm_eps": _float32(get("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(get("context_length")),
        "vocab_size": len(metadata["tokenizer.ggml.tokens"]),
        "rope_theta": rope_theta,
        "rope_parameters": rope,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "hidden_act": "silu",
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
    }
    if architecture == "LlamaForCausalLM":
        config["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
    return config


def _float32(value: float) -> float:
    """A float32 metadata value as the decimal it was written from (1e-05, not 9.99e-06)."""
    return float(f"{float(value):.7g}")


def gguf_tokenizer(metadata: dict[str, Any], source: Path) -> Tokenizer:
    """The tokenizer in GGUF metadata; byte-level BPE (``tokenizer.ggml.model == "gpt2"``) only."""
    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise CheckpointError(
            f"unsupported GGUF tokenizer {model!r} in {source}; supported: 'gpt2' (byte-level BPE)"
        )
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    token_types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    vocab = {token: i for i, token in enumerate(tokens)}
    backend = BackendTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    backend.pre_tokenizer = _pre_tokenizer(metadata.get("tokenizer.ggml.pre", "gpt2"), source)
    backend.decoder = decoders.ByteLevel()
    backend.add_tokens(
        [
            AddedToken(tokens[i], special=token_types[i] == _TOKEN_CONTROL, normalized=False)
            for i in range(len(tokens))
            if token_types[i] in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
        ]
    )

    def token_at(key: str) -> str | None:
        token_id = metadata.get(key)
        return None if token_id is None else tokens[int(token_id)]

    bos = token_at("tokenizer.ggml.bos_token_id")
    if metadata.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
        bos_id = vocab[bos]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return Tokenizer(
        backend,
        bos_token=bos,
        eos_token=token_at("tokenizer.ggml.eos_token_id"),
        chat_template=metadata.get("tokenizer.chat_template"),
    )


def _pre_tokenizer(pre: str, source: Path) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer that llama.cpp uses for ``tokenizer.ggml.pre``."""
    if pre in ("gpt2", "default"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGIT_SPLIT_PRE:  # each digit alone, then GPT-2's regex
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    patterns = {"llama-bpe": _LLAMA3_PATTERN, "qwen2": _QWEN2_PATTERN}
    if pre not in patterns:
        raise CheckpointError(f"unsupported GGUF pre-tokenizer {pre!r} in {source}")
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(patterns[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
