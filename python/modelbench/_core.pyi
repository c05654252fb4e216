"""
modelbench's C++ engine core: paged KV cache, continuous-batching scheduler, engine loop.
"""

from __future__ import annotations

import collections.abc
import typing

import torch

__all__: list[str] = [
    "BertSpec",
    "CacheConfig",
    "Engine",
    "EngineConfig",
    "EmbeddingRunner",
    "DynamicBatcherConfig",
    "DynamicBatcherStats",
    "EngineStats",
    "GuideEvent",
    "InvalidArgument",
    "KVCacheSpec",
    "ModelRunner",
    "ModelSpec",
    "PositionLogprobs",
    "RequestOutput",
    "RopeScaling",
    "RunnerOutput",
    "SamplingParams",
    "ScheduledSequence",
    "SchedulerConfig",
    "SpeculativeConfig",
    "TensorModel",
    "TensorResult",
    "SchedulerOutput",
    "SchedulerStats",
    "TokenLogprob",
    "TransformerRunner",
    "available_host_memory_bytes",
    "num_blocks_for_memory",
    "testing",
]

class InvalidArgument(ValueError):
    """
    A value a user can get wrong. str() is the message, naming the value; `param` names the offending field (None when no single field is at fault).
    """

    param: str | None

class BertSpec:
    """
    A BERT encoder's shape; build one from a Hugging Face config with modelbench.models.encoder_loader.bert_spec_from_hf_config.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    def __init__(self) -> None: ...
    def __repr__(self) -> str: ...
    def validate(self) -> None:
        """
        Raise InvalidArgument (a ValueError) naming the first inconsistent field; its `param` is the field.
        """

class EmbeddingRunner:
    """
    A BERT encoder and its pooling: lists of token ids in, one vector each out. Packed (padding-free) forwards over inputs sorted by length, bidirectional attention, no KV cache.
    """
    def __init__(
        self,
        spec: BertSpec,
        weights: collections.abc.Mapping[str, torch.Tensor],
        dtype: str = "float32",
        device: str = "cpu",
        pooling: str = "mean",
        normalize: bool = True,
        max_seq_len: typing.SupportsInt = 512,
        max_batch_tokens: typing.SupportsInt = 8192,
        matmul_precision: str = "highest",
    ) -> None:
        """
        weights: Hugging Face names (with or without 'bert.'); pooling 'mean' or 'cls'; max_seq_len: the longest input accepted; matmul_precision 'highest' (float32 products) or 'medium' (bf16 products, fp32 sums, on CPUs with AMX). Raises ValueError naming a bad field or tensor.
        """
    def embed(
        self, prompts: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt]]
    ) -> torch.Tensor:
        """
        [num_prompts, hidden_size] float32 vectors of the prompts (lists of token ids), pooled and, when normalize is on, L2-normalized. Raises ValueError for no prompts, an empty one, an id outside the vocabulary or one longer than max_seq_len.
        """
    @property
    def spec(self) -> BertSpec: ...
    @property
    def max_seq_len(self) -> int: ...
    @property
    def pooling(self) -> str: ...
    @property
    def normalize(self) -> bool: ...
    @property
    def matmul_precision(self) -> str:
        """
        'medium' where the linears run with bf16 products, else 'highest'.
        """

class CacheConfig:
    """
    KV block pool configuration.
    """

    enable_prefix_caching: bool
    def __init__(self) -> None: ...
    def validate(self) -> None: ...
    @property
    def block_size(self) -> int:
        """
        Tokens per KV block.
        """
    @block_size.setter
    def block_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def num_blocks(self) -> int:
        """
        Blocks in the pool.
        """
    @num_blocks.setter
    def num_blocks(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def watermark(self) -> float:
        """
        Fraction of blocks kept free when admitting new prompts.
        """
    @watermark.setter
    def watermark(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...

class SpeculativeConfig:
    """
    Speculative decoding by n-gram (prompt lookup).
    """
    def __init__(self) -> None: ...
    def validate(self) -> None: ...
    draft_model: bool
    @property
    def disable_by_batch_size(self) -> int: ...
    @disable_by_batch_size.setter
    def disable_by_batch_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def num_speculative_tokens(self) -> int: ...
    @num_speculative_tokens.setter
    def num_speculative_tokens(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def prompt_lookup_max(self) -> int: ...
    @prompt_lookup_max.setter
    def prompt_lookup_max(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def prompt_lookup_min(self) -> int: ...
    @prompt_lookup_min.setter
    def prompt_lookup_min(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...

class SchedulerConfig:
    """
    Per-step limits of the scheduler.
    """

    enable_chunked_prefill: bool
    speculative: SpeculativeConfig
    def __init__(self) -> None: ...
    def validate(self) -> None: ...
    @property
    def max_model_len(self) -> int: ...
    @max_model_len.setter
    def max_model_len(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def max_num_batched_tokens(self) -> int: ...
    @max_num_batched_tokens.setter
    def max_num_batched_tokens(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def max_num_seqs(self) -> int: ...
    @max_num_seqs.setter
    def max_num_seqs(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...

class EngineConfig:
    """
    Cache and scheduler configuration plus model facts.
    """

    cache: CacheConfig
    scheduler: SchedulerConfig
    def __init__(self) -> None: ...
    def validate(self) -> None: ...
    @property
    def eos_token_id(self) -> int: ...
    @eos_token_id.setter
    def eos_token_id(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def vocab_size(self) -> int: ...
    @vocab_size.setter
    def vocab_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...

class SamplingParams:
    """
    Per-request sampling and stopping parameters.
    """

    guided: bool
    ignore_eos: bool
    def __init__(self) -> None: ...
    def validate(self) -> None:
        """
        Raise InvalidArgument (a ValueError) naming the first invalid field; its `param` is the field.
        """
    @property
    def frequency_penalty(self) -> float: ...
    @frequency_penalty.setter
    def frequency_penalty(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def logprobs(self) -> int: ...
    @logprobs.setter
    def logprobs(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def max_tokens(self) -> int: ...
    @max_tokens.setter
    def max_tokens(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def min_p(self) -> float: ...
    @min_p.setter
    def min_p(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def min_tokens(self) -> int: ...
    @min_tokens.setter
    def min_tokens(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def presence_penalty(self) -> float: ...
    @presence_penalty.setter
    def presence_penalty(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def prompt_logprobs(self) -> int: ...
    @prompt_logprobs.setter
    def prompt_logprobs(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def repetition_penalty(self) -> float: ...
    @repetition_penalty.setter
    def repetition_penalty(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def seed(self) -> int | None: ...
    @seed.setter
    def seed(self, arg0: typing.SupportsInt | typing.SupportsIndex | None) -> None: ...
    @property
    def stop_token_ids(self) -> list[int]: ...
    @stop_token_ids.setter
    def stop_token_ids(
        self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]
    ) -> None: ...
    @property
    def temperature(self) -> float: ...
    @temperature.setter
    def temperature(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def top_k(self) -> int: ...
    @top_k.setter
    def top_k(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def top_p(self) -> float: ...
    @top_p.setter
    def top_p(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...

class ScheduledSequence:
    """
    One sequence's share of a step.
    """
    @property
    def block_table(self) -> list[int]: ...
    @property
    def draft_token_ids(self) -> list[int]: ...
    @property
    def needs_sample(self) -> bool: ...
    @property
    def num_computed_tokens(self) -> int: ...
    @property
    def num_prompt_tokens(self) -> int: ...
    @property
    def num_scheduled_tokens(self) -> int: ...
    @property
    def params(self) -> SamplingParams: ...
    @property
    def request_id(self) -> str: ...
    @property
    def token_ids(self) -> list[int]: ...

class SchedulerOutput:
    """
    What one step computes.
    """
    @property
    def finished_request_ids(self) -> list[str]: ...
    @property
    def num_batched_tokens(self) -> int: ...
    @property
    def preempted_request_ids(self) -> list[str]: ...
    @property
    def scheduled(self) -> list[ScheduledSequence]: ...

class GuideEvent:
    """
    Tokens a guided request gained in a step (or that it finished).
    """
    @property
    def finished(self) -> bool: ...
    @property
    def first_position(self) -> int: ...
    @property
    def new_token_ids(self) -> list[int]: ...
    @property
    def request_id(self) -> str: ...

class RunnerOutput:
    """
    Sampled token per scheduled sequence (-1: none).
    """
    @property
    def spec_token_ids(self) -> list[list[int]]: ...
    @spec_token_ids.setter
    def spec_token_ids(
        self,
        arg0: collections.abc.Sequence[
            collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]
        ],
    ) -> None: ...
    @property
    def guide_failed(self) -> list[int]: ...
    @guide_failed.setter
    def guide_failed(
        self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]
    ) -> None: ...
    @typing.overload
    def __init__(self) -> None: ...
    @typing.overload
    def __init__(
        self, sampled_token_ids: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]
    ) -> None: ...
    @property
    def sampled_token_ids(self) -> list[int]: ...
    @sampled_token_ids.setter
    def sampled_token_ids(
        self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]
    ) -> None: ...

class ModelRunner:
    """
    Computes a step: subclass and implement execute_model(scheduler_output).
    """
    def __init__(self) -> None: ...
    def execute_model(self, scheduler_output: SchedulerOutput) -> RunnerOutput: ...

class TokenLogprob:
    @property
    def logprob(self) -> float: ...
    @property
    def rank(self) -> int: ...
    @property
    def token_id(self) -> int: ...

class PositionLogprobs:
    """
    The token at a position and the top alternatives.
    """
    @property
    def chosen(self) -> TokenLogprob: ...
    @property
    def top(self) -> list[TokenLogprob]: ...

class RequestOutput:
    """
    A request's progress after one step.
    """
    def __repr__(self) -> str: ...
    @property
    def finish_reason(self) -> typing.Any: ...
    @property
    def finished(self) -> bool: ...
    @property
    def first_token_time_s(self) -> float: ...
    @property
    def logprobs(self) -> list[PositionLogprobs]: ...
    @property
    def new_token_ids(self) -> list[int]: ...
    @property
    def num_cached_tokens(self) -> int: ...
    @property
    def num_output_tokens(self) -> int: ...
    @property
    def num_preemptions(self) -> int: ...
    @property
    def num_prompt_tokens(self) -> int: ...
    @property
    def prompt_logprobs(self) -> list[PositionLogprobs]: ...
    @property
    def queue_time_s(self) -> float: ...
    @property
    def request_id(self) -> str: ...

class SchedulerStats:
    @property
    def kv_cache_usage(self) -> float: ...
    @property
    def num_free_blocks(self) -> int: ...
    @property
    def num_preemptions(self) -> int: ...
    @property
    def num_prefix_hit_tokens(self) -> int: ...
    @property
    def num_spec_accepted_tokens(self) -> int: ...
    @property
    def num_spec_accepted_tokens_per_pos(self) -> list[int]: ...
    @property
    def num_spec_draft_tokens(self) -> int: ...
    @property
    def num_spec_drafts(self) -> int:
        """
        Steps that verified a speculative proposal, since start.
        """
    @property
    def num_prefix_query_tokens(self) -> int: ...
    @property
    def num_running(self) -> int: ...
    @property
    def num_total_blocks(self) -> int: ...
    @property
    def num_waiting(self) -> int: ...

class EngineStats:
    @property
    def is_running(self) -> bool: ...
    @property
    def num_generation_tokens(self) -> int: ...
    @property
    def num_prompt_tokens(self) -> int: ...
    @property
    def num_steps(self) -> int: ...
    @property
    def scheduler(self) -> SchedulerStats: ...
    @property
    def schedule_seconds(self) -> float:
        """
        Time in Scheduler::schedule, all steps.
        """
    @property
    def execute_seconds(self) -> float:
        """
        Time in the runner (inputs, forward, sampling), all steps.
        """
    @property
    def update_seconds(self) -> float:
        """
        Time in update_from_output and building outputs, all steps.
        """

class Engine:
    """
    Scheduler + runner; step by hand or run the background loop.
    """
    def __init__(self, config: EngineConfig, runner: ModelRunner) -> None: ...
    def abort(self, request_id: str) -> bool:
        """
        End a request at the next step; False (a no-op) when the id is unknown.
        """
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
        params: SamplingParams,
        priority: typing.SupportsInt | typing.SupportsIndex = 0,
    ) -> None:
        """
        Queue a request; raises InvalidArgument (a ValueError) naming what is wrong with it, `param` the field.
        """
    def get_outputs(
        self, timeout_s: typing.SupportsFloat | typing.SupportsIndex = -1.0
    ) -> list[RequestOutput]:
        """
        Wait up to timeout_s (negative: forever) for outputs of the loop and return them all.
        """
    def fail_guide(self, request_id: str, error: str) -> bool:
        """
        End a guided request with 'abort' at its next sampling; False when unknown.
        """
    def get_guide_events(
        self, timeout_s: typing.SupportsFloat | typing.SupportsIndex = -1.0
    ) -> list[GuideEvent]:
        """
        Wait up to timeout_s for guided requests' new tokens and return them all (early and possibly empty after shutdown).
        """
    def has_unfinished_requests(self) -> bool: ...
    def num_unfinished_requests(self) -> int: ...
    def post_token_mask(
        self, request_id: str, position: typing.SupportsInt | typing.SupportsIndex, mask: bytes
    ) -> bool:
        """
        The allowed tokens of a guided request's output position (bit t of the little-endian 32-bit words allows token t); False when no unfinished guided request has the id.
        """
    def set_output_notifier(self, callback: typing.Any) -> None:
        """
        Call `callback()` from the loop thread whenever outputs are queued.
        """
    def shutdown(self) -> None:
        """
        Stop and join the loop; unfinished requests end with 'abort'.
        """
    def start(self) -> None:
        """
        Start the background loop thread.
        """
    def stats(self) -> EngineStats: ...
    def step(self) -> list[RequestOutput]:
        """
        Run one step by hand and return its outputs.
        """
    @property
    def config(self) -> EngineConfig: ...
    @property
    def is_running(self) -> bool: ...

class KVCacheSpec:
    """
    Shape and dtype of the per-layer KV pools.
    """
    def __init__(
        self,
        num_layers: typing.SupportsInt | typing.SupportsIndex,
        num_kv_heads: typing.SupportsInt | typing.SupportsIndex,
        head_dim: typing.SupportsInt | typing.SupportsIndex,
        block_size: typing.SupportsInt | typing.SupportsIndex = 16,
        dtype: str = "float32",
        device: str = "cpu",
    ) -> None: ...
    def bytes_per_block(self) -> int: ...
    @property
    def dtype(self) -> str: ...

class RopeScaling:
    """
    Rotary embedding scaling: type none | linear | llama3.
    """

    type: str
    def __init__(self) -> None: ...
    @property
    def factor(self) -> float: ...
    @factor.setter
    def factor(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def high_freq_factor(self) -> float: ...
    @high_freq_factor.setter
    def high_freq_factor(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def low_freq_factor(self) -> float: ...
    @low_freq_factor.setter
    def low_freq_factor(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def original_max_position_embeddings(self) -> int: ...
    @original_max_position_embeddings.setter
    def original_max_position_embeddings(
        self, arg0: typing.SupportsInt | typing.SupportsIndex
    ) -> None: ...

class ModelSpec:
    """
    A model's shape in modelbench's names; build one from a Hugging Face config with modelbench.models.spec.model_spec_from_hf_config.
    """

    rope_scaling: RopeScaling
    tie_word_embeddings: bool
    def __init__(self) -> None: ...
    def __repr__(self) -> str: ...
    def validate(self) -> None:
        """
        Raise InvalidArgument (a ValueError) naming the first inconsistent field; its `param` is the field.
        """
    @property
    def architecture(self) -> str:
        """
        llama | qwen2 | mistral | gpt2
        """
    @architecture.setter
    def architecture(self, arg0: str) -> None: ...
    @property
    def attention_bias(self) -> bool:
        """
        q/k/v projections carry biases
        """
    @attention_bias.setter
    def attention_bias(self, arg0: bool) -> None: ...
    @property
    def head_dim(self) -> int: ...
    @head_dim.setter
    def head_dim(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def hidden_size(self) -> int: ...
    @hidden_size.setter
    def hidden_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def intermediate_size(self) -> int: ...
    @intermediate_size.setter
    def intermediate_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def max_position_embeddings(self) -> int: ...
    @max_position_embeddings.setter
    def max_position_embeddings(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def norm_eps(self) -> float: ...
    @norm_eps.setter
    def norm_eps(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def num_heads(self) -> int: ...
    @num_heads.setter
    def num_heads(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def num_kv_heads(self) -> int: ...
    @num_kv_heads.setter
    def num_kv_heads(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def num_layers(self) -> int: ...
    @num_layers.setter
    def num_layers(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def rope_theta(self) -> float: ...
    @rope_theta.setter
    def rope_theta(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
    @property
    def sliding_window(self) -> int:
        """
        0: full causal attention
        """
    @sliding_window.setter
    def sliding_window(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    @property
    def vocab_size(self) -> int: ...
    @vocab_size.setter
    def vocab_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None: ...

class TransformerRunner(ModelRunner):
    """
    The model runner over LibTorch: paged KV pools, batched forward, sampler. Pass it to Engine.
    """
    def __init__(
        self,
        spec: ModelSpec,
        weights: collections.abc.Mapping[str, torch.Tensor],
        config: EngineConfig,
        dtype: str = "float32",
        device: str = "cpu",
        kv_cache_dtype: str = "auto",
        quant_types: collections.abc.Mapping[str, typing.SupportsInt] = {},
        quantization: str = "none",
    ) -> None:
        """
        weights: Hugging Face name -> tensor. kv_cache_dtype: 'auto' (the model's dtype), or 'bfloat16' for a float32 model. quant_types: name -> ggml type id for weights given as uint8 [rows, row_bytes] GGUF blocks, kept quantized. quantization: 'none', 'q8_0' or 'q4_0' quantizes float linear weights at load. Raises ValueError naming a missing or misshapen tensor, or a bad dtype.
        """
    def set_draft_model(
        self,
        spec: ModelSpec,
        weights: collections.abc.Mapping[str, torch.Tensor],
        quant_types: collections.abc.Mapping[str, typing.SupportsInt | typing.SupportsIndex] = {},
    ) -> None:
        """
        Speculative decoding's draft model (SpeculativeConfig.draft_model): built in this runner's dtype and device with a KV pool in its block layout. Raises ValueError when its vocabulary differs.
        """
    @property
    def has_draft_model(self) -> bool: ...
    @property
    def device(self) -> str: ...
    @property
    def kv_cache_dtype(self) -> str:
        """
        the KV pools' dtype: float32 | bfloat16 | float16
        """
    @property
    def dtype(self) -> str:
        """
        float32 | bfloat16 | float16
        """
    def embed(
        self, prompts: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt]]
    ) -> torch.Tensor:
        """
        Mean-pooled, L2-normalized final hidden states of each prompt (lists of token ids): [num_prompts, hidden_size] float32. Runs over a scratch KV pool, so it may run while the engine steps, in groups of at most max_num_batched_tokens tokens. Raises ValueError for an empty prompt, an id outside the vocabulary, or a prompt longer than max_model_len.
        """
    @property
    def num_kv_blocks(self) -> int: ...
    @property
    def kv_cache_bytes(self) -> int:
        """bytes of the K and V pools, all layers"""
    @property
    def spec(self) -> ModelSpec: ...

# Set by _core.py, which loads the variant: "avx512", "avx2" or "generic".
cpu_variant: str

def amx_linear_supported() -> bool:
    """
    Whether this process can run float32 linears with bf16 products on AMX tiles (the AVX-512 build level, a CPU with AMX-BF16, and the OS granting the tile state): where an embedding model's matmul_precision 'medium' uses them.
    """

def available_host_memory_bytes() -> int:
    """
    Memory the OS reports as available (MemAvailable).
    """

def num_blocks_for_memory(
    spec: KVCacheSpec, bytes: typing.SupportsInt | typing.SupportsIndex
) -> int:
    """
    KV blocks that fit in a memory budget of `bytes`.
    """

class testing:
    """
    Kernels and internals for tests and benchmarks; not part of modelbench's API.
    (A pybind11 submodule, declared as a class so that attribute access type-checks.)
    """
    class KVPool:
        """
        Preallocated K and V pools, one pair per layer.
        """
        def __init__(
            self, spec: KVCacheSpec, num_blocks: typing.SupportsInt | typing.SupportsIndex
        ) -> None: ...
        def key(self, layer: typing.SupportsInt | typing.SupportsIndex) -> torch.Tensor:
            """
            [num_blocks, num_kv_heads, block_size, head_dim]
            """
        def value(self, layer: typing.SupportsInt | typing.SupportsIndex) -> torch.Tensor: ...
        def row_scales(
            self, layer: typing.SupportsInt | typing.SupportsIndex
        ) -> tuple[torch.Tensor, torch.Tensor] | None:
            """
            An int8 pool's (key, value) row scales [num_blocks, num_kv_heads, block_size]; None otherwise.
            """
        def write(
            self,
            layer: typing.SupportsInt | typing.SupportsIndex,
            slot_mapping: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
        ) -> None:
            """
            Write [num_tokens, num_kv_heads, head_dim] rows into their slots.
            """
        @property
        def num_blocks(self) -> int: ...
        @property
        def num_bytes(self) -> int: ...

    class Sampler:
        """
        Next-token sampling with penalties, temperature, top-k/p, min-p, seeds, logprobs.
        """
        @staticmethod
        def compute_logprobs(
            logits: torch.Tensor,
            target_ids: torch.Tensor,
            num_top: typing.SupportsInt | typing.SupportsIndex,
        ) -> list[PositionLogprobs]:
            """
            logits: [n, vocab_size]; target_ids: [n]. Logprob and rank of each target under log_softmax(logits), plus the top num_top.
            """
        def __init__(self, eos_token_id: typing.SupportsInt | typing.SupportsIndex = -1) -> None:
            """
            eos_token_id < 0: the model has none. EOS is held back before min_tokens.
            """
        def drop_request(self, request_id: str) -> None:
            """
            Forget a finished request's seeded generator.
            """
        def sample(
            self,
            logits: torch.Tensor,
            requests: collections.abc.Sequence[
                tuple[
                    str,
                    collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
                    collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
                    SamplingParams,
                ]
            ],
        ) -> tuple[list[int], list[list[PositionLogprobs]]]:
            """
            logits: [num_rows, vocab_size]; requests: one (request_id, prompt_ids, output_ids, SamplingParams) per row. Returns (token_ids, logprobs), logprobs[i] holding one PositionLogprobs when params.logprobs >= 0, else none.
            """

    class RecordedLogits:
        """
        One sequence's logits from the last step.
        """
        @property
        def first_position(self) -> int:
            """
            Position of row 0.
            """
        @property
        def logits(self) -> torch.Tensor:
            """
            [num_scheduled_tokens, vocab_size] float32
            """
        @property
        def request_id(self) -> str: ...

    @staticmethod
    def set_record_logits(runner: TransformerRunner, record: bool) -> None:
        """
        Keep every scheduled token's logits of the runner's last step (slower).
        """
    @staticmethod
    def recorded_logits(runner: TransformerRunner) -> list[testing.RecordedLogits]:
        """
        list[RecordedLogits] of the runner's last step, when set_record_logits is on.
        """
    @staticmethod
    def paged_attention_cpu(
        query: torch.Tensor,
        key_pool: torch.Tensor,
        value_pool: torch.Tensor,
        query_start_loc: torch.Tensor,
        context_lens: torch.Tensor,
        block_tables: torch.Tensor,
        scale: typing.SupportsFloat | typing.SupportsIndex,
        sliding_window: typing.SupportsInt | typing.SupportsIndex = 0,
        key_scales: torch.Tensor | None = None,
        value_scales: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        The Eigen paged attention kernel. query [T, H, D]; pools [N, H_kv, block_size, D]; query_start_loc [S+1] int64, context_lens [S] int64, block_tables [S, max_blocks] int32 (CPU); int8 pools with key_scales and value_scales [N, H_kv, block_size] float32 (a row is int8 * scale).
        """
    @staticmethod
    def paged_attention_reference(
        query: torch.Tensor,
        key_pool: torch.Tensor,
        value_pool: torch.Tensor,
        query_start_loc: torch.Tensor,
        context_lens: torch.Tensor,
        block_tables: torch.Tensor,
        scale: typing.SupportsFloat | typing.SupportsIndex,
        sliding_window: typing.SupportsInt | typing.SupportsIndex = 0,
        key_scales: torch.Tensor | None = None,
        value_scales: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        The ATen paged attention path (gather + matmul + softmax); same arguments as paged_attention_cpu.
        """
    @staticmethod
    def pack_linear_weight(weight: torch.Tensor) -> torch.Tensor:
        """
        weight [N, K] float32 -> panels [ceil(N / W), K, W] for packed_linear (what model layers keep); W is 64 with AVX-512, 16 with AVX2.
        """
    @staticmethod
    def packed_linear(
        x: torch.Tensor,
        packed: torch.Tensor,
        out_features: typing.SupportsInt | typing.SupportsIndex,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        The CPU float32 linear kernel of model layers: x [M, K] @ weight^T + bias -> [M, out_features], with the weight from pack_linear_weight.
        """
    class QuantMatrix:
        """
        A weight matrix kept quantized, in the kernels' layout (cpp/kernels/quant_kernels.h).
        """
        @property
        def rows(self) -> int: ...
        @property
        def cols(self) -> int: ...
        @property
        def bits(self) -> int: ...
        @property
        def group(self) -> int: ...
        @property
        def ggml_type(self) -> int: ...
        @property
        def nbytes(self) -> int:
            """
            bytes the layout takes in memory
            """

    @staticmethod
    def repack_ggml(
        raw: torch.Tensor,
        ggml_type: typing.SupportsInt,
        cols: typing.SupportsInt,
        name: str = "weight",
    ) -> testing.QuantMatrix:
        """
        raw: uint8 [rows, row_bytes] GGUF blocks of ggml_type -> QuantMatrix. ValueError names the tensor for an unsupported type or a bad size.
        """
    @staticmethod
    def quantize_matrix(weight: torch.Tensor, ggml_type: typing.SupportsInt) -> testing.QuantMatrix:
        """
        weight [rows, cols] float -> QuantMatrix of Q8_0 (8) or Q4_0 (2) blocks, as ggml quantizes.
        """
    @staticmethod
    def dequantize(w: testing.QuantMatrix) -> torch.Tensor:
        """
        QuantMatrix -> [rows, cols] float32.
        """
    @staticmethod
    def dequantize_rows(w: testing.QuantMatrix, ids: torch.Tensor) -> torch.Tensor:
        """
        Rows ids of the QuantMatrix as float32 [n, cols].
        """
    @staticmethod
    def dequantize_ggml(
        raw: torch.Tensor, ggml_type: typing.SupportsInt, cols: typing.SupportsInt
    ) -> torch.Tensor:
        """
        GGUF blocks [rows, row_bytes] -> float32 [rows, cols], decoded straight from the file's bytes.
        """
    @staticmethod
    def quantize_ggml(weight: torch.Tensor, ggml_type: typing.SupportsInt) -> torch.Tensor:
        """
        float [rows, cols] -> GGUF Q8_0 (8) or Q4_0 (2) blocks, uint8 [rows, row_bytes].
        """
    @staticmethod
    def quant_linear(x: torch.Tensor, w: testing.QuantMatrix, isa: str = "") -> torch.Tensor:
        """
        x [M, cols] float32 @ w^T -> [M, rows] with the kernel set isa (generic | avx2 | avx512; '' for the active one). ValueError when this CPU cannot run it.
        """
    @staticmethod
    def quant_isa_supported(isa: str) -> bool:
        """
        Whether this CPU runs the kernel set isa.
        """
    @staticmethod
    def active_quant_isa() -> str:
        """
        The quantized kernels in use: MODELBENCH_ISA, or the best this CPU runs.
        """
    @staticmethod
    def best_quant_isa() -> str: ...
    @staticmethod
    def bf16_linear_supported() -> bool:
        """
        Whether this build has the bfloat16 linear kernel (compiled for a CPU with AVX512-BF16).
        """
    @staticmethod
    def pack_linear_weight_bf16(weight: torch.Tensor) -> torch.Tensor:
        """
        weight [N, K] bfloat16 -> panels [ceil(N / 64), ceil(K / 2), 64, 2] for packed_linear_bf16.
        """
    @staticmethod
    def packed_linear_bf16(
        x: torch.Tensor,
        packed: torch.Tensor,
        out_features: typing.SupportsInt | typing.SupportsIndex,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        The CPU bfloat16 linear kernel of model layers: x [M, K] @ weight^T + bias -> [M, out_features] bfloat16 (fp32 accumulation, one rounding), with the weight from pack_linear_weight_bf16.
        """

class DynamicBatcherConfig:
    """
    A tensor model's dynamic batching, as Triton's.
    """

    enabled: bool
    max_batch_size: int
    max_queue_delay_us: int
    max_queue_size: int
    preferred_batch_sizes: list[int]
    def __init__(self) -> None: ...
    def validate(self) -> None: ...

class DynamicBatcherStats:
    @property
    def num_batched_rows(self) -> int: ...
    @property
    def num_batches(self) -> int: ...
    @property
    def num_failed(self) -> int: ...
    @property
    def num_rejected(self) -> int: ...
    @property
    def num_requests(self) -> int: ...
    @property
    def num_timed_out(self) -> int: ...
    @property
    def queue_size(self) -> int: ...

class TensorResult:
    """
    A tensor model request's outputs, or why it has none.
    """
    @property
    def error(self) -> str: ...
    @property
    def outputs(self) -> list[torch.Tensor]: ...
    @property
    def ticket(self) -> int: ...
    @property
    def timed_out(self) -> bool: ...

class TensorModel:
    """
    A TorchScript module served through the C++ dynamic batcher.
    """
    def __init__(
        self,
        path: str,
        num_inputs: typing.SupportsInt | typing.SupportsIndex,
        num_outputs: typing.SupportsInt | typing.SupportsIndex,
        device: str = "cpu",
        batching: DynamicBatcherConfig = ...,
    ) -> None: ...
    def submit(
        self,
        inputs: collections.abc.Sequence[torch.Tensor],
        timeout_s: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    ) -> int:
        """
        Queue a request (one tensor per input, each [rows, ...]); its ticket, or -1 when the queue is full.
        """
    def wait_results(
        self, timeout_s: typing.SupportsFloat | typing.SupportsIndex = -1.0
    ) -> list[TensorResult]:
        """
        Wait for results and return all that are ready.
        """
    def run_one(self, inputs: collections.abc.Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """
        Run inputs straight through the module, unbatched.
        """
    def stats(self) -> DynamicBatcherStats: ...
    @property
    def batching(self) -> DynamicBatcherConfig: ...
    def shutdown(self) -> None: ...
