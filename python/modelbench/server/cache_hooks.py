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
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator
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
from modelbench.server import cache_responses
from modelbench.server.keys import KeyStore
from modelbench.server.protocol import ChatCompletionRequest, CompletionRequest
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
        if handle.encoder is not None:  # an embedding model: long prompts are truncated
            encoder = handle.encoder
            ids, truncated = await asyncio.to_thread(encoder.token_ids, texts, True)
            self.registry.admit(handle)
            try:
                output = await encoder.embed_ids(ids, truncated)
            finally:
                handle.end()
            return np.asarray(output.embeddings, dtype=np.float32)
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
                f"task (served: {served}). Serve it (--embedding-model {name} for an embedding "
                f"model's name or folder, or --model PATH --served-model-name {name}), "
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


def _temperature_zero_or_seeded(
    body: CompletionRequest | ChatCompletionRequest, default_temperature: float | None
) -> bool:
    if body.seed is not None:
        return True
    temperature = body.temperature if body.temperature is not None else default_temperature
    return temperature == 0


def _cache_control(request: Request) -> set[str]:
    header = request.headers.get("cache-control", "")
    return {part.strip().lower() for part in header.split(",") if part.strip()}


async def lookup(
    request: Request, handle: ModelHandle, body: CompletionRequest | ChatCompletionRequest
) -> Response | None:
    """For a local version: the cached answer as a response, or None: run it."""
    cache: ResponseCache | None = getattr(request.app.state, "cache", None)
    if cache is None:
        return None
    policy = policy_for(request.app.state.settings, handle.config)
    defaults = handle.engine.sampling_defaults if handle.engine is not None else {}
    return await _lookup(
        request,
        cache,
        body,
        model=handle.id,
        shown_as=handle.id,
        fingerprint=canonical(handle.config.model_dump(include=set(FINGERPRINT_FIELDS))),
        policy=policy,
        deterministic=_temperature_zero_or_seeded(body, defaults.get("temperature", 1.0)),
    )


async def lookup_remote(
    request: Request, registry: ModelRegistry, body: CompletionRequest | ChatCompletionRequest
) -> Response | None:
    """For a gateway's remote name: the cached answer, or None: forward it.
    Its "version" is the name's replicas (URL and upstream model); the
    upstream's default temperature is unknown, so only an explicit 0 or a
    seed is deterministic."""
    cache: ResponseCache | None = getattr(request.app.state, "cache", None)
    pool = registry.remote(body.model)
    if cache is None or pool is None:
        return None
    settings: Settings = request.app.state.settings
    policy = CachePolicy.of(settings.cache, settings.cache_threshold, settings.cache_ttl, None)
    replicas = sorted((r.url, r.config.model or "") for r in pool.replicas)
    return await _lookup(
        request,
        cache,
        body,
        model=f"{pool.name}:remote",
        shown_as=pool.name,
        fingerprint=canonical(replicas),
        policy=policy,
        deterministic=_temperature_zero_or_seeded(body, None),
    )


async def _lookup(
    request: Request,
    cache: ResponseCache,
    body: CompletionRequest | ChatCompletionRequest,
    *,
    model: str,
    shown_as: str,
    fingerprint: str,
    policy: CachePolicy,
    deterministic: bool,
) -> Response | None:
    if not policy.on:
        return None
    record = current_record.get()
    state = request.scope.setdefault("state", {})
    owner = state.get("api_key_id")
    caller = state.get("caller")
    key_shares = bool(caller is not None and caller.key is not None and caller.key.share_cache)
    chat = isinstance(body, ChatCompletionRequest)
    query = build_query(
        model=model,
        model_fingerprint=fingerprint,
        endpoint="/v1/chat/completions" if chat else "/v1/completions",
        parameters=body.model_dump(exclude_none=True),
        prompt=None if isinstance(body, ChatCompletionRequest) else body.prompt,
        messages=[m.for_template() for m in body.messages]
        if isinstance(body, ChatCompletionRequest)
        else None,
        owner=owner,
        share=policy.share or key_shares,
        policy=policy,
    )
    control = _cache_control(request)
    token_echo = (
        isinstance(body, CompletionRequest) and body.echo and not isinstance(body.prompt, str)
    )
    if body.logprobs or token_echo:
        found = Lookup(BYPASS, reason="unsupported")  # logprobs and token ids are not kept
    else:
        found = await cache.lookup(
            query,
            no_cache="no-cache" in control,
            no_store="no-store" in control,
            deterministic=deterministic,
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
    return _hit_response(body, answer, shown_as, found.result)


def _hit_response(
    body: CompletionRequest | ChatCompletionRequest, answer: Answer, model: str, result: str
) -> Response:
    headers = {HEADER: result}
    if isinstance(body, ChatCompletionRequest):
        echoed = body.echoed()
        if body.stream:
            events = cache_responses.chat_events(answer, model, echoed, body.include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return JSONResponse(cache_responses.chat_response(answer, model, echoed), headers=headers)
    prompts = body.prompts()
    n = max(1, len(answer.texts) // max(1, len(prompts)))
    echoes = [str(p) for p in prompts] if body.echo else None
    if body.stream:
        events = cache_responses.completion_events(answer, model, echoes, n, body.include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    whole = cache_responses.completion_response(answer, model, echoes, n)
    return JSONResponse(whole, headers=headers)


def _answer_of(record: Record) -> Answer | None:
    """The answer a finished request gave, if every choice ended well."""
    if record.error is not None or record.prompt_tokens is None:
        return None
    texts = dict(record.texts)
    if not texts and record.output is not None:  # a remote answer, whole: its text, or a list
        many = len(record.finish_reasons) > 1
        texts = dict(enumerate(json.loads(record.output) if many else [record.output]))
    if not texts:
        return None
    indices = sorted(texts)
    if indices != list(range(len(indices))) or sorted(record.finish_reasons) != indices:
        return None
    reasons = [record.finish_reasons[i] for i in indices]
    if "abort" in reasons:
        return None
    return Answer(
        texts=[texts[i] for i in indices],
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


async def remembered(request: Request, response: Response) -> Response:
    """A gateway's answer from upstream, kept when it succeeded (a stream
    once its last event has gone)."""
    if response.status_code != 200:
        return response
    if isinstance(response, StreamingResponse):
        response.body_iterator = remembering(request, response.body_iterator)
    else:
        await remember(request)
    return response


async def remembering(request: Request, events: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """A stream's events, passed on; the answer is kept once the last has gone."""
    async for event in events:
        yield event
    await remember(request)
