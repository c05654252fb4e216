"""EngineArgs: how to build an engine for a model, and the building itself.

Loading is Python glue with no per-token work: the checkpoint's tensors go
to the C++ TransformerRunner, which owns them from then on.
"""

from __future__ import annotations

import ctypes
import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelbench import _core
from modelbench.engine.errors import CONFLICTING_FIELDS, InvalidParameter
from modelbench.engine.sampling_params import SamplingParams
from modelbench.engine.speculative import draft_model_path, speculative_config
from modelbench.models.checkpoint import Checkpoint
from modelbench.models.generation_defaults import (
    GENERATION_CONFIG_FIELDS,
    from_generation_config,
    read_generation_config,
)
from modelbench.models.loader import load_checkpoint
from modelbench.models.spec import model_spec_from_hf_config

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = ("q8_0", "q4_0")
_DEFAULT_KV_BYTES = 2 * 1024**3  # like vLLM's CPU default of a few GiB
_DEFAULT_MAX_MODEL_LEN = 8192


@dataclass
class EngineArgs:
    """Everything needed to build an engine. ``model=None`` is the default
    model (SmolLM2-135M-Instruct). ``kv_cache_memory`` is bytes (int) or a
    fraction of the memory available now (float in (0, 1]); by default 2 GiB,
    at most a quarter of what is available. ``kv_cache_dtype`` is "auto" (the
    model's dtype; bfloat16 for weights kept quantized on the CPU) or, for a
    float32 model, "bfloat16": half the bytes per
    token, so twice the tokens in the same memory and half the reads per
    decode, at bf16's precision for K and V; or "int8" (CPU): each K and V
    row (one KV head at one position) kept as int8 with one float32 scale
    (max |x| / 127, rounded to nearest), 68 bytes for bf16's 128 at head_dim
    64, as llama.cpp's q8_0 cache.

    ``generation_config`` says where requests' default sampling settings
    come from, as vLLM's flag: "auto" (what the model ships, see
    ``models.generation_defaults``), "vllm" (neutral defaults: temperature
    1, top_p 1, ...), or a folder holding a ``generation_config.json``.
    ``override_generation_config`` sets some on top, in
    ``generation_config.json``'s names (``{"temperature": 0.5,
    "max_new_tokens": 512}``). A request's own values always win.

    ``dtype`` "auto" computes in float32 and keeps a GGUF file's quantized
    matrices in their blocks (Q4_0 ... Q6_K; see docs/performance.md); an
    explicit "float32" dequantizes them (parity work), "bfloat16" too.
    ``quantization`` ("q8_0" or "q4_0", as llama.cpp's types) quantizes a
    float checkpoint's linear weights at load (embeddings and the head at
    q8_0); ``None`` keeps them as they are."""

    model: str | os.PathLike[str] | None = None
    dtype: str = "auto"
    device: str = "cpu"
    kv_cache_dtype: str = "auto"
    max_model_len: int | None = None
    kv_cache_memory: int | float | None = None
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool = True
    generation_config: str = "auto"
    override_generation_config: dict[str, Any] | None = None
    quantization: str | None = None
    # vLLM's: {"method": "ngram", "num_speculative_tokens": k, ...} (engine/speculative.py)
    speculative_config: dict[str, Any] | None = None

    def resolved_dtype(self) -> str:
        """The dtype the model computes in: "auto" is float32."""
        return "float32" if self.dtype == "auto" else self.dtype

    def keeps_quantized(self) -> bool:
        """Whether a GGUF file's block-format matrices stay quantized."""
        return self.dtype == "auto" and torch.device(self.device).type == "cpu"

    def validate(self) -> None:
        speculative_config(self.speculative_config)  # a bad one names speculative_config
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise InvalidParameter(
                f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {self.dtype!r}", "dtype"
            )
        if self.quantization is not None:
            if self.quantization not in QUANTIZATIONS:
                raise InvalidParameter(
                    f"quantization must be None or one of {', '.join(QUANTIZATIONS)}, "
                    f"got {self.quantization!r}",
                    "quantization",
                )
            if self.resolved_dtype() != "float32" or torch.device(self.device).type != "cpu":
                raise InvalidParameter(
                    f"quantization={self.quantization!r} runs on the CPU in float32: use "
                    f"dtype 'auto' and device 'cpu' (got dtype {self.dtype!r}, device "
                    f"{self.device!r}), or quantization None",
                    "quantization",
                    CONFLICTING_FIELDS,
                )
        if self.kv_cache_dtype != "auto":
            if self.kv_cache_dtype not in (*_DTYPES, "int8"):
                raise InvalidParameter(
                    f"kv_cache_dtype must be 'auto' or one of {sorted(_DTYPES) + ['int8']}, "
                    f"got {self.kv_cache_dtype!r}",
                    "kv_cache_dtype",
                )
            if self.kv_cache_dtype == "int8" and torch.device(self.device).type != "cpu":
                raise InvalidParameter(
                    "kv_cache_dtype int8 runs on the CPU; on CUDA use 'auto' or 'bfloat16'",
                    "kv_cache_dtype",
                )
            if self.kv_cache_dtype != self.resolved_dtype() and self.resolved_dtype() != "float32":
                raise InvalidParameter(
                    f"kv_cache_dtype={self.kv_cache_dtype!r} needs dtype='float32' (the "
                    f"cache can be narrower than the model, not wider); the model is "
                    f"{self.dtype!r}",
                    "kv_cache_dtype",
                )
            if self.kv_cache_dtype == "float16" and torch.device(self.device).type == "cpu":
                raise InvalidParameter(
                    "kv_cache_dtype float16 is for CUDA; on CPU use 'auto' or 'bfloat16'",
                    "kv_cache_dtype",
                )
        device = torch.device(self.device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise InvalidParameter(
                    "device 'cuda' was asked for, but torch sees no CUDA device", "device"
                )
        elif device.type != "cpu":
            raise InvalidParameter(f"device must be 'cpu' or 'cuda', got {self.device!r}", "device")
        elif self.dtype == "float16":
            raise InvalidParameter("float16 is for CUDA; on CPU use float32 or bfloat16", "dtype")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise InvalidParameter(
                f"max_model_len must be >= 1, got {self.max_model_len}", "max_model_len"
            )
        if self.max_num_seqs < 1:
            raise InvalidParameter(
                f"max_num_seqs must be >= 1, got {self.max_num_seqs}", "max_num_seqs"
            )
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise InvalidParameter(
                f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}",
                "max_num_batched_tokens",
            )
        if (
            self.generation_config not in ("auto", "vllm")
            and not Path(self.generation_config).is_dir()
        ):
            raise InvalidParameter(
                "generation_config must be 'auto', 'vllm' or a folder holding a "
                f"generation_config.json, got {self.generation_config!r}",
                "generation_config",
            )
        override = self.override_generation_config or {}
        unknown = sorted(set(override) - set(GENERATION_CONFIG_FIELDS))
        if unknown:
            raise InvalidParameter(
                f"override_generation_config has {', '.join(unknown)}, which is not a "
                f"sampling setting; use {', '.join(GENERATION_CONFIG_FIELDS)}",
                "override_generation_config",
            )
        memory = self.kv_cache_memory
        if memory is not None:
            if isinstance(memory, bool) or not isinstance(memory, (int, float)):
                raise InvalidParameter(
                    f"kv_cache_memory must be bytes (int) or a fraction (float), got {memory!r}",
                    "kv_cache_memory",
                )
            if isinstance(memory, float) and not 0.0 < memory <= 1.0:
                raise InvalidParameter(
                    f"kv_cache_memory as a fraction must be in (0, 1], got {memory}",
                    "kv_cache_memory",
                )
            if isinstance(memory, int) and memory <= 0:
                raise InvalidParameter(
                    f"kv_cache_memory must be > 0 bytes, got {memory}", "kv_cache_memory"
                )

    def sampling_defaults(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """The default sampling settings of requests to this engine (see the
        class docstring), checked: a bad value is an InvalidParameter naming
        ``generation_config`` or ``override_generation_config``."""
        if self.generation_config == "vllm":
            defaults: dict[str, Any] = {}
        elif self.generation_config == "auto":
            defaults = dict(checkpoint.generation_config)
        else:
            try:
                defaults = read_generation_config(self.generation_config)
            except ValueError as exc:
                raise InvalidParameter(str(exc), "generation_config") from exc
        override = self.override_generation_config or {}
        try:
            defaults.update(from_generation_config(override, "override_generation_config"))
            SamplingParams(**defaults)  # out-of-range values are refused here, by name
        except ValueError as exc:
            raise InvalidParameter(str(exc), "override_generation_config") from exc
        return defaults

    def resolved_kv_cache_dtype(self, quantized_weights: bool = False) -> str:
        """The KV pools' dtype. "auto" is the model's dtype, except for weights kept
        quantized on the CPU: bfloat16 there, as llama.cpp keeps a 16-bit cache (f16) by
        default; the cache is then most of what a batched decode step reads."""
        if self.kv_cache_dtype != "auto":
            return self.kv_cache_dtype
        if quantized_weights and torch.device(self.device).type == "cpu":
            return "bfloat16"
        return self.resolved_dtype()

    def available_memory(self) -> int:
        if torch.device(self.device).type == "cuda":
            free, _total = torch.cuda.mem_get_info()
            return int(free)
        return int(_core.available_host_memory_bytes())

    def kv_cache_bytes(self) -> int:
        memory = self.kv_cache_memory
        if memory is None:
            return min(_DEFAULT_KV_BYTES, self.available_memory() // 4)
        if isinstance(memory, float):
            return int(memory * self.available_memory())
        return int(memory)


@dataclass
class BuiltEngine:
    """What ``build_engine`` gives: the C++ engine (not started), the
    checkpoint it was built from (its weights already handed to the runner),
    the validated config, and the runner (embeddings run on it directly).
    ``sampling_defaults`` fill the fields a request leaves out."""

    engine: _core.Engine
    checkpoint: Checkpoint
    config: _core.EngineConfig
    runner: _core.TransformerRunner
    sampling_defaults: dict[str, Any] = field(default_factory=dict)


def release_freed_memory() -> None:
    """Hand the loader's freed copies back to the OS.

    Loading reads each tensor into a buffer that the runner then repacks or
    converts; glibc keeps freed memory of that size in its heap (its mmap
    threshold rises after large frees), so without a trim the process keeps
    about as much again as the weights (83 MB for the default model's 94 MB
    file: 1.9x the file's size resident, 1.0x after). A no-op on other C
    libraries.
    """
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


def add_draft_model(
    runner: _core.TransformerRunner, path: str, checkpoint: Checkpoint, args: EngineArgs
) -> None:
    """Speculative decoding's draft model: loaded as the model is, and
    refused (naming speculative_config) unless its tokenizer is the model's."""
    try:
        draft = load_checkpoint(
            path, dtype=_DTYPES[args.resolved_dtype()], keep_quantized=args.keeps_quantized()
        )
    except (OSError, ValueError) as e:
        raise InvalidParameter(
            f"speculative_config: cannot load the draft model {path}: {e}", "speculative_config"
        ) from e
    if draft.tokenizer.backend.get_vocab() != checkpoint.tokenizer.backend.get_vocab():
        raise InvalidParameter(
            f"speculative_config: the draft model {path} has another tokenizer than the "
            "model's; a draft must share the model's vocabulary",
            "speculative_config",
        )
    runner.set_draft_model(
        model_spec_from_hf_config(draft.hf_config), draft.weights, quant_types=draft.quant_types
    )
    draft.weights = {}


def build_engine(args: EngineArgs) -> BuiltEngine:
    """Load the checkpoint and build a C++ engine with its runner (not started)."""
    args.validate()
    checkpoint = load_checkpoint(
        args.model, dtype=_DTYPES[args.resolved_dtype()], keep_quantized=args.keeps_quantized()
    )
    sampling_defaults = args.sampling_defaults(checkpoint)
    spec = model_spec_from_hf_config(checkpoint.hf_config)
    max_model_len = args.max_model_len or min(spec.max_position_embeddings, _DEFAULT_MAX_MODEL_LEN)
    if max_model_len > spec.max_position_embeddings:
        raise InvalidParameter(
            f"max_model_len={max_model_len} exceeds the model's max_position_embeddings="
            f"{spec.max_position_embeddings}",
            "max_model_len",
        )
    quantized_weights = bool(args.quantization) or (
        args.keeps_quantized() and bool(checkpoint.quant_types)
    )
    kv_cache_dtype = args.resolved_kv_cache_dtype(quantized_weights)
    kv_spec = _core.KVCacheSpec(
        num_layers=spec.num_layers,
        num_kv_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        block_size=args.block_size,
        dtype=kv_cache_dtype,
        device=args.device,
    )
    kv_bytes = args.kv_cache_bytes()
    num_blocks = _core.num_blocks_for_memory(kv_spec, kv_bytes)
    needed = -(-max_model_len // args.block_size)
    if num_blocks < needed:
        raise InvalidParameter(
            f"kv_cache_memory of {kv_bytes} bytes holds {num_blocks} blocks of {args.block_size} "
            f"tokens, fewer than one sequence of max_model_len={max_model_len} needs ({needed}): "
            f"give it at least {needed * kv_spec.bytes_per_block()} bytes or lower max_model_len",
            "kv_cache_memory",
        )
    config = _core.EngineConfig()
    config.cache.block_size = args.block_size
    config.cache.num_blocks = num_blocks
    config.cache.enable_prefix_caching = args.enable_prefix_caching
    config.scheduler.max_model_len = max_model_len
    config.scheduler.max_num_seqs = args.max_num_seqs
    config.scheduler.max_num_batched_tokens = args.max_num_batched_tokens or max(
        2048, args.max_num_seqs
    )
    config.scheduler.speculative = speculative_config(args.speculative_config)
    eos = checkpoint.tokenizer.eos_token_id
    config.eos_token_id = -1 if eos is None else eos
    config.vocab_size = spec.vocab_size
    config.validate()
    runner = _core.TransformerRunner(
        spec,
        checkpoint.weights,
        config,
        args.resolved_dtype(),
        args.device,
        kv_cache_dtype,
        quant_types=checkpoint.quant_types,
        quantization=args.quantization or "none",
    )
    checkpoint.weights = {}  # the runner holds what it needs; drop our references
    draft_path = draft_model_path(args.speculative_config)
    if draft_path is not None:
        add_draft_model(runner, draft_path, checkpoint, args)
    release_freed_memory()
    engine = _core.Engine(config, runner)
    return BuiltEngine(engine, checkpoint, config, runner, sampling_defaults)
