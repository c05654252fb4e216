"""The response cache in the completions and chat routes (docs/cache.md).

A route calls ``lookup`` once it knows the model version: a hit is answered
here, in the shape a miss would have had (JSON, or server-sent events when
``stream`` is true); otherwise the route runs the request and calls
``remember`` (JSON) or wraps its events in ``remembering`` (a stream), which
keep the answer from the request's record once it has ended well. The record
learns the cache's result (``x-modelbench-cache``) and, for a hit, the
request the answer came from.

``build_cache`` makes the app's ``ResponseCache`` (None when no model turns
it on); ``ServedEmbedder`` embeds prompts with an embedding model this server
serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry

from modelbench.cache.entry import Answer
from modelbench.cache.fingerprint import CacheQuery, build_query, canonical
from modelbench.cache.memory_backend import MemoryBackend
from modelbench.cache.metrics import CacheMetrics
from modelbench.cache.redis_backend import RedisBackend
from modelbench.cache.response_cache import BYPASS, Lookup, ResponseCache
from modelbench.cache.settings import CachePolicy
from modelbench.config import ModelConfig, ModelsFile, Settings
from modelbench.engine.embedding import token_ids_of
from modelbench.server.keys import KeyStore
from modelbench.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    PromptTokensDetails,
    Usage,
    now,
    random_id,
)
from modelbench.server.protocol_outputs import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatResponseMessage,
    CompletionChoice,
    CompletionResponse,
    DeltaMessage,
)
from modelbench.server.recorder import Record, current_record
from modelbench.server.registry import ModelHandle, ModelRegistry

logger = logging.getLogger("modelbench.cache")
STATE = "cache_lookup"  # where the scope's state keeps (query, lookup, record)
HEADER = "x-modelbench-cache"
# What changes the model's answer besides the request: the version's source and load options.
FINGERPRINT_FIELDS = (
    "path",
    "dtype",
    "kv_cache_dtype",
    "quantization",
    "generation_config",
    "override_generation_config",
    "max_model_len",
)


def policy_for(settings: Settings, config: ModelConfig) -> CachePolicy:
    return CachePolicy.of(
        settings.cache, settings.cache_threshold, settings.cache_ttl, config.cache
    )


class ServedEmbedder:
    """Embeds prompts with the model this server serves as ``model`` (task embed)."""

    def __init__(self, registry: ModelRegistry, model: str) -> None:
        self.registry = registry
        self.model = model

    async def __call__(self, texts: list[str]) -> np.ndarray:
        handle = self.registry.resolve(self.model, "embed")
        engine = handle.engine
        assert engine is not None
        ids = await asyncio.to_thread(token_ids_of, engine.tokenizer, texts)
        self.registry.admit(handle)
        try:
            output = await engine.embed(ids)
        finally:
            handle.end()
        return np.asarray(output.embeddings, dtype=np.float32)


def build_cache(
    settings: Settings,
    declared: ModelsFile,
    registry: ModelRegistry,
    keys: KeyStore,
    metrics: CollectorRegistry,
) -> ResponseCache | None:
    """The app's cache, or None when every model's mode is off. Semantic mode
    needs its embedding model among the models served: ValueError otherwise."""
    policies = [policy_for(settings, m) for m in declared.models]
    if settings.cache == "off" and not any(p.on for p in policies):
        return None
    embedder = None
    if settings.cache == "semantic" or any(p.mode == "semantic" for p in policies):
        name = settings.cache_embedding_model
        embedders = [m for m in declared.models if m.name == name and "embed" in m.tasks]
        if not embedders:
            served = ", ".join(sorted({m.name for m in declared.models})) or "none"
            raise ValueError(
                f"--cache semantic embeds prompts with the model {name!r} "
                "(--cache-embedding-model), which this server does not serve for the embed "
                f"task (served: {served}). Serve it (--model PATH --served-model-name {name}), "
                "name a served model with --cache-embedding-model NAME, or use --cache exact"
            )
        embedder = ServedEmbedder(registry, name)
    backend: MemoryBackend | RedisBackend
    if settings.cache_url:
        backend = RedisBackend(settings.cache_url, settings.cache_max_entries)
    else:
        backend = MemoryBackend(settings.cache_max_entries)

    def owner_active(owner: str | None) -> bool:
        return owner is None or keys.is_active(owner)

    return ResponseCache(backend, embedder, CacheMetrics(metrics), owner_active)


def _deterministic(body: CompletionRequest | ChatCompletionRequest, handle: ModelHandle) -> bool:
    if body.seed is not None:
        return True
    temperature = body.temperature
    if temperature is None:
        defaults = handle.engine.sampling_defaults if handle.engine is not None else {}
        temperature = defaults.get("temperature", 1.0)
    return temperature == 0


def _cache_control(request: Request) -> set[str]:
    header = request.headers.get("cache-control", "")
    return {part.strip().lower() for part in header.split(",") if part.strip()}


async def lookup(
    request: Request, handle: ModelHandle, body: CompletionRequest | ChatCompletionRequest
) -> Response | None:
    """The cached answer as a response, or None: run the request."""
    cache: ResponseCache | None = getattr(request.app.state, "cache", None)
    if cache is None:
        return None
    settings: Settings = request.app.state.settings
    policy = policy_for(settings, handle.config)
    if not policy.on:
        return None
    record = current_record.get()
    state = request.scope.setdefault("state", {})
    owner = state.get("api_key_id")
    caller = state.get("caller")
    key_shares = bool(caller is not None and caller.key is not None and caller.key.share_cache)
    chat = isinstance(body, ChatCompletionRequest)
    query = build_query(
        model=handle.id,
        model_fingerprint=canonical(handle.config.model_dump(include=set(FINGERPRINT_FIELDS))),
        endpoint="/v1/chat/completions" if chat else "/v1/completions",
        parameters=body.model_dump(exclude_none=True),
        prompt=None if chat else body.prompt,  # type: ignore[union-attr]
        messages=[m.for_template() for m in body.messages] if chat else None,  # type: ignore[union-attr]
        owner=owner,
        share=policy.share or key_shares,
        policy=policy,
    )
    control = _cache_control(request)
    if body.logprobs or (not chat and body.echo and not isinstance(body.prompt, str)):  # type: ignore[union-attr]
        found = Lookup(BYPASS, reason="unsupported")  # logprobs are not kept
    else:
        found = await cache.lookup(
            query,
            no_cache="no-cache" in control,
            no_store="no-store" in control,
            deterministic=_deterministic(body, handle),
        )
    state[STATE] = (query, found, record)
    if record is not None:
        record.cache_result = found.result
    if found.entry is None:
        return None
    answer = found.entry.answer
    if record is not None:
        record.cache_source_id = found.entry.source_record_id
        record.texts = dict(enumerate(answer.texts))
        record.finish_reasons = dict(enumerate(answer.finish_reasons))
        record.prompt_tokens = answer.prompt_tokens
        record.completion_tokens = answer.completion_tokens
        record.ttft_s = record.elapsed_s()
    headers = {HEADER: found.result}
    if chat:
        echoed = body.echoed()  # type: ignore[union-attr]
        if body.stream:
            return StreamingResponse(
                _chat_events(answer, handle.id, echoed, body.include_usage),
                media_type="text/event-stream",
                headers=headers,
            )
        return JSONResponse(_chat_response(answer, handle.id, echoed), headers=headers)
    prompts = body.prompts()  # type: ignore[union-attr]
    n = max(1, len(answer.texts) // max(1, len(prompts)))
    echoes = [str(p) for p in prompts] if body.echo else None  # type: ignore[union-attr]
    if body.stream:
        return StreamingResponse(
            _completion_events(answer, handle.id, echoes, n, body.include_usage),
            media_type="text/event-stream",
            headers=headers,
        )
    return JSONResponse(_completion_response(answer, handle.id, echoes, n), headers=headers)


def _usage(answer: Answer) -> Usage:
    return Usage(
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        total_tokens=answer.prompt_tokens + answer.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=answer.prompt_tokens),
    )


def _completion_response(
    answer: Answer, model: str, echoes: list[str] | None, n: int
) -> dict[str, Any]:
    return CompletionResponse(
        id=random_id("cmpl"),
        model=model,
        usage=_usage(answer),
        choices=[
            CompletionChoice(
                index=i, text=(echoes[i // n] if echoes else "") + text, finish_reason=reason
            )
            for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons))
        ],
    ).model_dump(mode="json")


def _chat_response(answer: Answer, model: str, echoed: str) -> dict[str, Any]:
    return ChatCompletionResponse(
        id=random_id("chatcmpl"),
        model=model,
        usage=_usage(answer),
        choices=[
            ChatChoice(
                index=i, message=ChatResponseMessage(content=echoed + text), finish_reason=reason
            )
            for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons))
        ],
    ).model_dump(mode="json")


def _sse(event: Any) -> str:
    return f"data: {event if isinstance(event, str) else event.model_dump_json()}\n\n"


async def _completion_events(
    answer: Answer, model: str, echoes: list[str] | None, n: int, include_usage: bool
) -> AsyncIterator[str]:
    request_id, created = random_id("cmpl"), now()
    for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons)):
        choice = CompletionChoice(
            index=i, text=(echoes[i // n] if echoes else "") + text, finish_reason=reason
        )
        yield _sse(
            CompletionResponse(id=request_id, created=created, model=model, choices=[choice])
        )
    if include_usage:
        yield _sse(
            CompletionResponse(
                id=request_id, created=created, model=model, choices=[], usage=_usage(answer)
            )
        )
    yield _sse("[DONE]")


async def _chat_events(
    answer: Answer, model: str, echoed: str, include_usage: bool
) -> AsyncIterator[str]:
    request_id, created = random_id("chatcmpl"), now()

    def chunk(index: int, delta: DeltaMessage, reason: str | None = None) -> str:
        choice = ChatChunkChoice(index=index, delta=delta, finish_reason=reason)
        return _sse(
            ChatCompletionChunk(id=request_id, created=created, model=model, choices=[choice])
        )

    for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons)):
        yield chunk(i, DeltaMessage(role="assistant", content=echoed))
        if text:
            yield chunk(i, DeltaMessage(content=text))
        yield chunk(i, DeltaMessage(), reason)
    if include_usage:
        yield _sse(
            ChatCompletionChunk(
                id=request_id, created=created, model=model, choices=[], usage=_usage(answer)
            )
        )
    yield _sse("[DONE]")


def _answer_of(record: Record) -> Answer | None:
    """The answer a finished request gave, if every choice ended well."""
    if record.error is not None or not record.texts or record.prompt_tokens is None:
        return None
    indices = sorted(record.texts)
    if indices != list(range(len(indices))) or sorted(record.finish_reasons) != indices:
        return None
    reasons = [record.finish_reasons[i] for i in indices]
    if "abort" in reasons:
        return None
    return Answer(
        texts=[record.texts[i] for i in indices],
        finish_reasons=reasons,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
    )


async def remember(request: Request) -> None:
    """Keep the answer of the request that just ended, if the lookup allows."""
    cache: ResponseCache | None = getattr(request.app.state, "cache", None)
    looked: tuple[CacheQuery, Lookup, Record | None] | None = request.scope.get("state", {}).get(
        STATE
    )
    if cache is None or looked is None:
        return
    query, found, record = looked
    if record is None or not found.may_store:
        return
    answer = _answer_of(record)
    if answer is not None:
        await cache.store(query, found, answer, record.id)


async def remembering(request: Request, events: AsyncIterator[str]) -> AsyncIterator[str]:
    """A stream's events, passed on; the answer is kept once the last has gone."""
    async for event in events:
        yield event
    await remember(request)
