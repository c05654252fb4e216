"""Completions and chat for a name that upstreams serve: the validated body
goes to the name's replicas through the gateway (retries, breakers,
timeouts), and on to its fallback when none can answer, a remote name or a
local model. The answer reaches the client as the upstream gave it, with
``X-Modelbench-Served-By`` saying which model and upstream served it; the
request's record learns the upstream and every attempt."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from modelbench.gateway.forward import BROKEN, Answer, UpstreamsFailed, cancelled, finished
from modelbench.gateway.service import Gateway
from modelbench.gateway.upstream import UpstreamPool
from modelbench.server.errors import APIError
from modelbench.server.recorder import Record, current_record
from modelbench.server.registry import ModelRegistry
from modelbench.server.routes.generation import until_disconnect

SERVED_BY = "x-modelbench-served-by"


B = TypeVar("B", bound=BaseModel)


async def answer_if_remote(
    request: Request, registry: ModelRegistry, path: str, body: B
) -> Response | B:
    """The upstreams' response when ``body.model`` is a remote name; else the
    body to serve here (naming the local fallback when one was taken)."""
    model = getattr(body, "model", None)
    pool = registry.remote(model) if isinstance(model, str) else None
    if pool is None:
        return body
    answer = await forward(request, registry, pool, path, body)
    if isinstance(answer, str):
        return body.model_copy(update={"model": answer})
    return answer


async def forward(
    request: Request, registry: ModelRegistry, pool: UpstreamPool, path: str, body: BaseModel
) -> Response | str:
    """The response of the first name in ``pool``'s fallback chain that can
    answer, or the name of a local model to fall back to (the route serves
    it). Raises APIError when neither the name nor its fallbacks can."""
    gateway = registry.gateway
    assert gateway is not None
    payload = body.model_dump(exclude_unset=True)
    stream = bool(payload.get("stream"))
    key = affinity_key(payload, gateway.options.affinity_key)
    record = current_record.get()
    # A stream's response watches for the client's disconnect itself, and a
    # watcher here would take that message from it.
    sent = await send_along_fallbacks(
        gateway,
        pool,
        path,
        payload,
        key,
        record,
        read_body=not stream,
        watch=None if stream else request,
    )
    if isinstance(sent, str):
        return sent  # a local model
    pool, answer = sent
    headers = {SERVED_BY: f"{pool.name}@{answer.upstream.url}"}
    if not stream or not answer.ok:
        if answer.content is None:  # a stream the upstream refused: its error body
            try:
                answer.content = await answer.read()
            finally:
                answer.close()
        return whole(answer, pool, headers, record)
    return StreamingResponse(relay(answer, record), media_type="text/event-stream", headers=headers)


async def send_along_fallbacks(
    gateway: Gateway,
    pool: UpstreamPool,
    path: str,
    payload: dict[str, Any],
    key: str | None,
    record: Record | None,
    read_body: bool = False,
    watch: Request | None = None,
) -> tuple[UpstreamPool, Answer] | str:
    """The first answer along ``pool``'s fallback chain and the pool that
    gave it, or the name of a local model the chain falls back to. The
    record learns every attempt and who answered; ``watch`` cancels the
    sending when that client goes away. APIError when the chain ends."""
    seen = [pool.name]
    while True:
        sending = gateway.send_request(pool, path, payload, key, read_body=read_body)
        try:
            answer = await (sending if watch is None else until_disconnect(watch, sending))
            break
        except UpstreamsFailed as exc:
            if record is not None:
                record.attempts += [a.as_dict() for a in exc.attempts]
            fallback = pool.fallback
            if fallback is None or fallback in seen:
                raise failed(exc, seen) from exc
            seen.append(fallback)
            next_pool = gateway.pool(fallback)
            if next_pool is None:
                return fallback
            pool = next_pool
    if record is not None:
        record.attempts += [a.as_dict() for a in answer.attempts]
        record.routed(pool.name, answer.upstream.id)
        record.upstream = answer.upstream.url
    return pool, answer


def whole(
    answer: Answer, pool: UpstreamPool, headers: dict[str, str], record: Record | None
) -> Response:
    """A non-streamed answer (or a client error, which is passed on as is)."""
    content = answer.content or b""
    parsed = parse_json(content)
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    finished(answer, ok=True, num_tokens=tokens if isinstance(tokens, int) else None)
    if record is not None and isinstance(parsed, dict) and answer.ok:
        note_output(record, parsed)
    if answer.ok and isinstance(parsed, dict) and "model" in parsed:
        parsed["model"] = pool.name  # the name that served it, as clients know it
        content = json.dumps(parsed).encode()
    return Response(
        content, status_code=answer.status, headers=headers, media_type=answer.content_type
    )


async def relay(answer: Answer, record: Record | None) -> AsyncIterator[bytes]:
    """The upstream's events as they come. Nothing is replayed once a byte
    has gone out: a stream that breaks off ends with an error event."""
    num_chunks = 0
    ok = False
    try:
        async for chunk in answer.chunks():
            if record is not None:
                num_chunks += note_events(record, chunk)
            else:
                num_chunks += chunk.count(b"data: ")
            yield chunk
        ok = True
    except BROKEN as exc:
        error = {
            "error": {
                "message": f"the upstream {answer.upstream.url} broke off the stream: "
                f"{type(exc).__name__}",
                "type": "upstream_error",
                "param": None,
                "code": "upstream_stream_broken",
            }
        }
        if record is not None:
            record.error = error["error"]["message"]
        yield f"data: {json.dumps(error)}\n\n".encode()
    except BaseException:  # the client went away: the upstream request is cancelled below
        answer.close()
        cancelled(answer)
        raise
    answer.close()
    finished(answer, ok=ok, num_tokens=num_chunks or None)


def failed(exc: UpstreamsFailed, names: list[str]) -> APIError:
    chain = " -> ".join(names)
    headers = None
    if exc.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    kind = "rate_limit_error" if exc.status == 429 else "upstream_error"
    return APIError(
        exc.status,
        f"{exc} (tried {chain})",
        code="upstreams_unavailable",
        type=kind,
        headers=headers,
    )


def affinity_key(payload: dict[str, Any], field: str) -> str | None:
    """What the affinity policy hashes: the ``user``, or the conversation's
    first message / the prompt's start (its prefix is what the replica has
    cached)."""
    if field == "user":
        user = payload.get("user")
        if isinstance(user, str) and user:
            return user
    messages = payload.get("messages")
    if isinstance(messages, list) and messages:
        return json.dumps(messages[0], sort_keys=True)[:512]
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        return prompt[:512]
    return None


def parse_json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def note_output(record: Record, body: dict[str, Any]) -> None:
    """The request log's output and token counts, from a whole answer."""
    choices = body.get("choices") or []
    texts = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        texts.append(text or "")
        if choice.get("finish_reason"):
            record.finish_reasons[int(choice.get("index", 0))] = str(choice["finish_reason"])
    record.output = texts[0] if len(texts) == 1 else json.dumps(texts)
    usage = body.get("usage")
    if isinstance(usage, dict):
        record.prompt_tokens = usage.get("prompt_tokens")
        record.completion_tokens = int(usage.get("completion_tokens") or 0)


def note_events(record: Record, chunk: bytes) -> int:
    """The text of the server-sent events in ``chunk`` into the request log
    (an event may be split across chunks: only whole lines are read);
    returns how many events carried text."""
    buffered = record.stream_buffer + chunk
    *lines, record.stream_buffer = buffered.split(b"\n")
    num = 0
    for line in lines:
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        event = parse_json(line[6:])
        if not isinstance(event, dict):
            continue
        if record.ttft_s is None:
            record.ttft_s = record.elapsed_s()
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = int(choice.get("index", 0))
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                record.texts[index] = record.texts.get(index, "") + text
                num += 1
            if choice.get("finish_reason"):
                record.finish_reasons[index] = str(choice["finish_reason"])
        usage = event.get("usage")
        if isinstance(usage, dict):
            record.prompt_tokens = usage.get("prompt_tokens")
            record.completion_tokens = int(usage.get("completion_tokens") or 0)
    return num
