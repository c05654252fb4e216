"""The server's spans (modelbench/tracing.py says when tracing is on):

- ``TracingMiddleware``: one SERVER span per HTTP request, named by its
  route template (``POST /v1/chat/completions``), continuing the caller's
  W3C ``traceparent``, with the HTTP attributes and the request id; it is
  the current span while the route runs, so the gateway's attempts and the
  sandbox nest under it.
- ``trace_generation``: when a request's record is submitted
  (server/recorder.py), a GenAI span ``{operation} {model}`` under the
  server span with the semantic-convention attributes, and for a local
  generation its ``queue``, ``prefill`` and ``decode`` child spans, timed
  from the record's clock (no span is open while the engine runs).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbench import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer


class Record(Protocol):
    """What ``trace_generation`` reads of a request's record (server/recorder.py)."""

    id: str
    endpoint: str
    task: str
    started: float
    generation_started: float | None
    model_name: str | None
    model_version: str | None
    parameters: dict[str, Any] | None
    prompt_tokens: int | None
    completion_tokens: int
    queue_time_s: float | None
    ttft_s: float | None
    finish_reasons: dict[int, str]
    error: str | None
    stream: bool
    cache_result: str | None
    upstream: str | None


SPAN_KEY = "trace_span"  # scope["state"][SPAN_KEY]: the request's server span

# The GenAI operation of each inference endpoint.
OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}


class TracingMiddleware:
    """A SERVER span around each HTTP request (plain ASGI: streams included)."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import context
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = tracing.extract(headers)
        method, path = scope["method"], scope["path"]
        client, server = scope.get("client"), scope.get("server")
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": scope.get("scheme", "http"),
        }
        if client:
            attributes["client.address"] = client[0]
        if server:
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if "user-agent" in headers:
            attributes["user_agent.original"] = headers["user-agent"]
        span = self.tracer.start_span(
            f"{method} {path}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        state = scope.setdefault("state", {})
        state[SPAN_KEY] = span
        status = 500

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
            await send(message)

        token = context.attach(set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            if state.get("request_id"):
                span.set_attribute("modelbench.request_id", state["request_id"])
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            context.detach(token)
            span.end()


def _ns(monotonic_s: float, now_ns: int, now_s: float) -> int:
    """A ``time.monotonic()`` instant as the epoch nanoseconds spans take."""
    return now_ns - int((now_s - monotonic_s) * 1e9)


def trace_generation(tracer: Tracer, parent: Span, record: Record) -> None:
    """The request's GenAI span (and, for a local generation, its stages),
    ending now, under ``parent``."""
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    now_ns, now_s = time.time_ns(), time.monotonic()
    operation = OPERATIONS.get(record.endpoint, record.task)
    requested = record.model_name or "unknown"
    attributes: dict[str, Any] = {
        tracing.GEN_AI_OPERATION: operation,
        tracing.GEN_AI_SYSTEM: "modelbench",
        tracing.GEN_AI_REQUEST_MODEL: requested,
        tracing.GEN_AI_RESPONSE_ID: record.id,
        **tracing.request_attributes(record.parameters),
    }
    if record.model_version:
        attributes[tracing.GEN_AI_RESPONSE_MODEL] = f"{requested}:{record.model_version}"
    if record.prompt_tokens is not None:
        attributes[tracing.GEN_AI_INPUT_TOKENS] = record.prompt_tokens
        attributes[tracing.GEN_AI_OUTPUT_TOKENS] = record.completion_tokens
    if record.finish_reasons:
        attributes[tracing.GEN_AI_FINISH_REASONS] = [
            record.finish_reasons[i] for i in sorted(record.finish_reasons)
        ]
    for name, value in (
        ("modelbench.cache_result", record.cache_result),
        ("modelbench.upstream", record.upstream),
        ("modelbench.stream", record.stream),
    ):
        if value is not None:
            attributes[name] = value
    begun = record.generation_started or record.started
    span = tracer.start_span(
        f"{operation} {requested}",
        context=set_span_in_context(parent),
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        start_time=_ns(begun, now_ns, now_s),
    )
    if record.error is not None:
        span.set_status(Status(StatusCode.ERROR, record.error[:200]))
    if record.generation_started is not None and record.upstream is None:
        inside = set_span_in_context(span)
        start = record.generation_started
        queued_until = start + (record.queue_time_s or 0.0)
        first = record.started + record.ttft_s if record.ttft_s is not None else None
        if first is not None and first < queued_until:
            # The engine's queue time and the record's first-token time come
            # from two clocks: a prefill shorter than their skew must not
            # vanish, so the queue ends where the first token says.
            queued_until = max(start, first)
        stages: list[tuple[str, float, float | None, dict[str, Any]]] = [
            ("queue", start, queued_until, {}),
            ("prefill", queued_until, first, {tracing.GEN_AI_INPUT_TOKENS: record.prompt_tokens}),
            (
                "decode",
                first or now_s,
                now_s if first else None,
                {tracing.GEN_AI_OUTPUT_TOKENS: record.completion_tokens},
            ),
        ]
        for name, begin, end, extra in stages:
            if end is None or end < begin:
                continue
            stage = tracer.start_span(
                name,
                context=inside,
                kind=SpanKind.INTERNAL,
                attributes={k: v for k, v in extra.items() if v is not None},
                start_time=_ns(begin, now_ns, now_s),
            )
            stage.end(end_time=_ns(end, now_ns, now_s))
    span.end(end_time=now_ns)
