"""POST /v1/compare: the same completion or chat request to several models at
once (scatter-gather), one result per model in the order asked.

Each model runs where it lives: a local model through the generation path,
a remote name through the gateway (retries and fallbacks included, streamed
from the upstream so its time to first token is measured). A per-model
deadline bounds the call; a model that fails or runs out of time gets its
``error`` while the others keep their results. Each answer is recorded as a
request of its own, tied to the others by ``compare_id``. With ``stream:
true`` the answers' text arrives as events tagged with the model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from modelbench.engine.sampling_ranges import MaxTokens
from modelbench.gateway.config import GatewayOptions
from modelbench.gateway.forward import cancelled, finished
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError
from modelbench.server.openapi import array_limit, error_responses, streamed
from modelbench.server.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ErrorInfo,
    PromptText,
    SamplingFields,
    random_id,
)
from modelbench.server.protocol_fields import CONFLICTING_FIELDS
from modelbench.server.recorder import Record, current_record, new_record, submit
from modelbench.server.registry import ModelRegistry
from modelbench.server.routes.chat import render_prompt
from modelbench.server.routes.generation import (
    gather_choices,
    start_generation,
    until_disconnect,
)
from modelbench.server.routes.prompts import params_in_context, prompt_token_ids, room
from modelbench.server.routes.remote import note_events, send_along_fallbacks

router = APIRouter(tags=["compare"])
OnText = Callable[[str], Awaitable[None]]
MAX_DEADLINE_S = 24 * 3600.0


def max_compare_models(registry: ModelRegistry) -> int:
    gateway = registry.gateway
    options = gateway.options if gateway is not None else GatewayOptions()
    return options.max_compare_models


def _messages_or_prompt(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [
        {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
        {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
    ]


class CompareRequest(SamplingFields):
    """``models`` and either ``messages`` (chat) or ``prompt`` (completion);
    the sampling fields (``max_tokens``, ``temperature``, ``seed``, ...) are
    the completion or chat request's own, and each model's request is
    checked as that request checks it."""

    model_config = SamplingFields.model_config | {"json_schema_extra": _messages_or_prompt}

    models: list[str] = Field(
        description="the models to ask, in the order results come back",
        json_schema_extra={"minItems": 1},  # the route words the error
    )
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    prompt: PromptText | None = None
    max_tokens: MaxTokens | None = None
    stream: bool = False
    deadline_s: float | None = Field(default=None, gt=0, le=MAX_DEADLINE_S, description="per model")


array_limit("post", "/v1/compare", "models", lambda app: max_compare_models(app.state.registry))


class CompareResult(BaseModel):
    model: str
    served_by: str | None = None
    output: Any = None  # the text, or the chat message
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    error: ErrorInfo | None = None


class CompareResponse(BaseModel):
    compare_id: str
    object: str = "compare"
    results: list[CompareResult]


def one_request(body: CompareRequest, model: str) -> ChatCompletionRequest | CompletionRequest:
    """The chat or completion request each model gets (400 naming the field
    when the shared fields are wrong)."""
    fields = {
        k: v
        for k, v in body.model_dump(exclude_none=True).items()
        if k not in ("models", "deadline_s", "stream_options")
    }
    fields.update(model=model, stream=False)
    try:
        if body.messages is not None:
            return ChatCompletionRequest.model_validate(fields)
        return CompletionRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        code = first["type"] if first["type"] == CONFLICTING_FIELDS else None
        raise APIError(
            400, f"{where}: {first['msg']}", param=str(first["loc"][0]), code=code
        ) from exc


def check(body: CompareRequest, registry: ModelRegistry, max_models: int) -> None:
    if not body.models:
        raise APIError(400, "models must name at least one model to compare", param="models")
    if len(body.models) > max_models:
        raise APIError(
            400,
            f"models names {len(body.models)} models; at most {max_models} per compare",
            param="models",
        )
    if (body.messages is None) == (body.prompt is None):
        raise APIError(
            400, "send messages (chat) or prompt (completion), one of them", param="messages"
        )
    served = set(registry.available_ids())
    unknown = [m for m in body.models if m not in served]
    if unknown:
        raise APIError(
            404,
            f"models: {', '.join(repr(m) for m in unknown)} not served; served: "
            f"{', '.join(sorted(served)) or 'none'}",
            param="models",
            code="model_not_found",
            type="not_found_error",
        )


@router.post(
    "/v1/compare",
    response_model=None,
    dependencies=JSON_BODY,
    responses={**error_responses(404), **streamed(CompareResponse)},
)
async def compare(
    body: CompareRequest, request: Request, registry: RegistryDep
) -> CompareResponse | StreamingResponse:
    check(body, registry, max_compare_models(registry))
    requests = [one_request(body, m) for m in body.models]
    deadline = deadline_of(body, registry)
    compare_id = random_id("cmp")
    if body.stream:
        return StreamingResponse(
            stream_compare(request, registry, requests, deadline, compare_id),
            media_type="text/event-stream",
        )
    results = await ask_each(request, registry, requests, deadline, compare_id)
    return CompareResponse(compare_id=compare_id, results=results)


def deadline_of(body: CompareRequest, registry: ModelRegistry) -> float:
    """Seconds each model may take: ``deadline_s``, else the gateway's setting."""
    gateway = registry.gateway
    return body.deadline_s or (gateway.options.compare_deadline_s if gateway is not None else 120.0)


async def ask_each(
    request: Request,
    registry: ModelRegistry,
    requests: list[ChatCompletionRequest | CompletionRequest],
    deadline: float,
    compare_id: str,
) -> list[CompareResult]:
    """Every model's result, concurrently, in the order asked (one record
    each, tied by ``compare_id``); /v1/verify asks its models this way too."""
    work = asyncio.gather(
        *(run_one(request, registry, r, deadline, compare_id, None) for r in requests)
    )
    return list(await until_disconnect(request, work))


async def stream_compare(
    request: Request,
    registry: ModelRegistry,
    requests: list[ChatCompletionRequest | CompletionRequest],
    deadline: float,
    compare_id: str,
) -> AsyncIterator[str]:
    """Events: ``{"compare_id", "model", "index", "delta"}`` as text comes,
    then each model's result (``"result": {...}``) as it ends, then [DONE]."""
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def one(i: int, r: ChatCompletionRequest | CompletionRequest) -> None:
        async def on_text(text: str) -> None:
            event = {"compare_id": compare_id, "model": r.model, "index": i, "delta": text}
            await queue.put(f"data: {json.dumps(event)}\n\n")

        result = await run_one(request, registry, r, deadline, compare_id, on_text)
        event = {
            "compare_id": compare_id,
            "model": r.model,
            "index": i,
            "result": result.model_dump(exclude_none=True),
        }
        await queue.put(f"data: {json.dumps(event)}\n\n")

    tasks = [asyncio.create_task(one(i, r)) for i, r in enumerate(requests)]
    waiting = asyncio.ensure_future(asyncio.gather(*tasks))
    try:
        while not (waiting.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            watched: set[asyncio.Future[Any]] = {getter, waiting}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        yield "data: [DONE]\n\n"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_one(
    request: Request,
    registry: ModelRegistry,
    body: ChatCompletionRequest | CompletionRequest,
    deadline: float,
    compare_id: str,
    on_text: OnText | None,
) -> CompareResult:
    """One model's result (or its error), recorded as a request of its own."""
    endpoint = (
        "/v1/chat/completions" if isinstance(body, ChatCompletionRequest) else "/v1/completions"
    )
    record = new_record(request.scope, endpoint, "generate")
    record.compare_id = compare_id
    record.model_name = body.model  # until a version or upstream answers for it
    record.describe(
        prompt=getattr(body, "prompt", None),
        messages=[m.model_dump(exclude_none=True) for m in body.messages]
        if isinstance(body, ChatCompletionRequest)
        else None,
        parameters=body.model_dump(exclude={"model", "prompt", "messages"}, exclude_none=True),
    )
    current_record.set(record)  # this task's own context
    started = time.monotonic()
    status = 200
    try:
        result = await asyncio.wait_for(run_model(registry, body, record, on_text), deadline)
    except asyncio.TimeoutError:
        status = 504
        result = error_result(
            body.model,
            504,
            f"{body.model} gave no answer within {deadline:g} s (deadline_s)",
            "deadline_exceeded",
            "timeout",
        )
    except APIError as exc:
        status = exc.status_code
        result = error_result(body.model, exc.status_code, exc.message, exc.code, exc.type)
    except asyncio.CancelledError:
        submit(request.scope, record, 499)
        raise
    result.latency_ms = round((time.monotonic() - started) * 1e3, 3)
    if record.ttft_s is not None:
        result.ttft_ms = round(record.ttft_s * 1e3, 3)
    if result.error is not None:
        record.error = result.error.message
    submit(request.scope, record, status)
    return result


def error_result(
    model: str, status: int, message: str, code: str | None, kind: str
) -> CompareResult:
    return CompareResult(
        model=model,
        error=ErrorInfo(message=message, type=kind, param=None, code=code or str(status)),
    )


async def run_model(
    registry: ModelRegistry,
    body: ChatCompletionRequest | CompletionRequest,
    record: Record,
    on_text: OnText | None,
) -> CompareResult:
    pool = registry.remote(body.model)
    if pool is not None:
        return await run_remote(registry, body, record, on_text)
    return await run_local(registry, body, record, on_text)


async def run_local(
    registry: ModelRegistry,
    body: ChatCompletionRequest | CompletionRequest,
    record: Record,
    on_text: OnText | None,
) -> CompareResult:
    handle = registry.resolve(body.model)
    record.routed(handle.name, handle.version)
    engine = handle.engine
    assert engine is not None
    rename = None
    if isinstance(body, ChatCompletionRequest):
        prompt = await render_prompt(engine, body)
        rename, prompt_param = {"max_tokens": body.max_tokens_param}, "messages"
    else:
        prompt = await prompt_token_ids(engine, body.prompts()[0], "prompt")
        prompt_param = "prompt"
    make = partial(body.sampling_params, room(engine, len(prompt)), engine.sampling_defaults)
    params = params_in_context(make, len(prompt), engine.max_model_len, rename)
    params.n = 1
    deltas = await start_generation(
        registry, handle, prompt, params, random_id("cmpl"), prompt_param
    )

    async def watched() -> AsyncIterator[Any]:
        async for out in deltas:
            if on_text is not None and out.outputs[0].text:
                await on_text(out.outputs[0].text)
            yield out

    choices, last = await gather_choices(watched(), 1)
    text = choices[0].text
    output: Any = (
        {"role": "assistant", "content": text} if isinstance(body, ChatCompletionRequest) else text
    )
    usage = {
        "prompt_tokens": len(last.prompt_token_ids),
        "completion_tokens": choices[0].num_generated,
        "total_tokens": len(last.prompt_token_ids) + choices[0].num_generated,
    }
    return CompareResult(
        model=handle.id,
        served_by=handle.id,
        output=output,
        finish_reason=choices[0].finish_reason,
        usage=usage,
    )


async def run_remote(
    registry: ModelRegistry,
    body: ChatCompletionRequest | CompletionRequest,
    record: Record,
    on_text: OnText | None,
) -> CompareResult:
    """Streamed from the upstream (so the time to first token is real) and
    put together here; a remote name's fallback chain is followed."""
    gateway = registry.gateway
    assert gateway is not None
    chat = isinstance(body, ChatCompletionRequest)
    path = "/chat/completions" if chat else "/completions"
    payload = body.model_dump(exclude_unset=True)
    payload.update(stream=True, stream_options={"include_usage": True})
    pool = gateway.pool(body.model)
    assert pool is not None
    sent = await send_along_fallbacks(gateway, pool, path, payload, None, record)
    if isinstance(sent, str):  # fell back to a local model
        local = body.model_copy(update={"model": sent})
        return await run_local(registry, local, record, on_text)
    pool, answer = sent
    if not answer.ok:
        content = await answer.read()
        finished(answer, ok=True)
        try:
            message = json.loads(content)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = content.decode(errors="replace")[:500]
        raise APIError(
            answer.status,
            f"{pool.name}: {message}",
            code="upstream_error",
            type="upstream_error",
        )
    chunks = 0
    try:
        async for chunk in answer.chunks():
            before = dict(record.texts)
            chunks += note_events(record, chunk)
            if on_text is not None:
                for index, text in record.texts.items():
                    new = text[len(before.get(index, "")) :]
                    if new:
                        await on_text(new)
    except asyncio.CancelledError:
        answer.close()
        cancelled(answer)
        raise
    except Exception as exc:
        answer.close()
        finished(answer, ok=False)
        raise APIError(
            502,
            f"{pool.name}: the upstream broke off: {type(exc).__name__}",
            code="upstream_stream_broken",
            type="upstream_error",
        ) from exc
    answer.close()
    finished(answer, ok=True, num_tokens=chunks or None)
    text = record.texts.get(0, "")
    usage = None
    if record.prompt_tokens is not None:
        usage = {
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "total_tokens": record.prompt_tokens + record.completion_tokens,
        }
    return CompareResult(
        model=pool.name,
        served_by=f"{pool.name}@{answer.upstream.url}",
        output={"role": "assistant", "content": text} if chat else text,
        finish_reason=record.finish_reasons.get(0),
        usage=usage,
    )
