"""Every inference request on record: what was asked, of which model
version, by which key, what came back, and how long each stage took.

``RecordMiddleware`` opens a ``Record`` for each inference request
(completions, chat, embeddings, the task API) and, when the response has
ended (a stream included, or the client gone), hands its row to the store's
``RecordWriter``, which writes it off the request's path. Routes and
``start_generation`` fill it in as they go through ``current_record``, so
route signatures do not change; a batch of the task API records each item as
a request of its own.

Prompts and outputs are left out when ``MODELBENCH_STORE_TEXT=false``, or for
a key created with ``store_text = false``. They never reach the log, at any
level, unless ``MODELBENCH_LOG_TEXT=true`` asks for one line per request on
the ``modelbench.text`` logger (still not for such a key).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbench.db.writer import TRACE_LINK
from modelbench.engine.outputs import RequestOutput
from modelbench.jobs.worker import BATCH_HEADER, INTERNAL_HEADER
from modelbench.server.grpc.scope import grpc_method
from modelbench.server.tracing_middleware import SPAN_KEY, trace_generation

# Inference endpoints and the task each one records (the task API says its own).
INFERENCE_PATHS = {
    "/v1/completions": "generate",
    "/v1/chat/completions": "generate",
    "/v1/responses": "generate",
    "/v1/embeddings": "embed",
    "/v1/infer": "generate",
    "/v1/predict": "predict",
}

text_logger = logging.getLogger("modelbench.text")  # only with Settings.log_text

current_record: ContextVar[Record | None] = ContextVar("modelbench_record", default=None)


@dataclass
class Record:
    """One request's row in ``requests``, filled in as the request goes."""

    endpoint: str
    task: str
    http_request_id: str | None = None
    api_key_id: str | None = None
    batch_id: str | None = None
    id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex}")
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    started: float = field(default_factory=time.monotonic)
    generation_started: float | None = None  # when its first prompt went to the engine
    stream: bool = False
    prompt: str | None = None
    messages: list | None = None
    parameters: dict[str, Any] | None = None
    model_name: str | None = None
    model_version: str | None = None
    texts: dict[int, str] = field(default_factory=dict)  # choice index -> text
    finish_reasons: dict[int, str] = field(default_factory=dict)
    output: str | None = None  # set whole by routes that do not stream deltas
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    queue_time_s: float | None = None
    ttft_s: float | None = None
    error: str | None = None
    store_text: bool = True
    upstream: str | None = None  # the upstream URL that answered, for a remote model
    attempts: list[dict[str, Any]] = field(default_factory=list)  # the gateway's tries
    compare_id: str | None = None  # the compare call this answer belongs to
    # The response cache (docs/cache.md): hit-exact | hit-semantic | miss | bypass, or
    # None when it is off for the model; a hit names the request its answer came from.
    cache_result: str | None = None
    cache_source_id: str | None = None
    stream_buffer: bytes = b""  # an upstream event not yet whole

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def describe(
        self,
        *,
        task: str | None = None,
        prompt: Any = None,
        messages: list | None = None,
        parameters: dict[str, Any] | None = None,
        stream: bool | None = None,
    ) -> None:
        """What was asked (token-id prompts are kept as JSON)."""
        if task is not None:
            self.task = task
        if prompt is not None:
            self.prompt = prompt if isinstance(prompt, str) else json.dumps(prompt)
        if messages is not None:
            self.messages = messages
        if parameters is not None:
            self.parameters = parameters
        if stream is not None:
            self.stream = stream

    def routed(self, name: str, version: str) -> None:
        self.model_name, self.model_version = name, version

    def add_prompt(self, num_tokens: int) -> None:
        """A prompt of the request started (a completion may have several)."""
        self.prompt_tokens = (self.prompt_tokens or 0) + num_tokens
        if self.generation_started is None:
            self.generation_started = time.monotonic()

    def on_delta(self, out: RequestOutput) -> None:
        delta = out.outputs[0]
        if self.queue_time_s is None and out.metrics.queue_time_s is not None:
            self.queue_time_s = out.metrics.queue_time_s
        if delta.token_ids:
            if self.ttft_s is None:
                self.ttft_s = time.monotonic() - self.started
            self.completion_tokens += len(delta.token_ids)
        self.texts[delta.index] = self.texts.get(delta.index, "") + delta.text
        if out.finished:
            self.finish_reasons[delta.index] = delta.finish_reason or "abort"

    def output_text(self) -> str | None:
        if self.output is not None:
            return self.output
        if len(self.texts) > 1:  # several choices: their texts, in order, as JSON
            return json.dumps([self.texts[i] for i in sorted(self.texts)])
        return self.texts.get(0)

    def row(self, http_status: int) -> dict[str, Any]:
        """The ``requests`` row, as the request ended with ``http_status``."""
        output = self.output_text()
        reasons = {self.finish_reasons[i] for i in self.finish_reasons}
        finish_reason = reasons.pop() if len(reasons) == 1 else (",".join(sorted(reasons)) or None)
        if http_status < 400 and (self.finish_reasons or self.output is not None):
            aborted = finish_reason == "abort" or (
                self.texts and len(self.finish_reasons) < len(self.texts)
            )
            status = "aborted" if aborted else "succeeded"
        elif http_status == 499 or (http_status < 400 and not self.finish_reasons):
            status = "aborted"  # the client went away
        else:
            status = "failed"
        return {
            "id": self.id,
            "http_request_id": self.http_request_id,
            "api_key_id": self.api_key_id,
            "endpoint": self.endpoint,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "task": self.task,
            "stream": self.stream,
            "prompt": self.prompt if self.store_text else None,
            "messages": self.messages if self.store_text else None,
            "parameters": self.parameters,
            "status": status,
            "http_status": http_status,
            "output_text": output if self.store_text else None,
            "finish_reason": finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens if self.prompt_tokens is not None else None,
            "queue_time_ms": ms(self.queue_time_s),
            "ttft_ms": ms(self.ttft_s),
            "latency_ms": ms(time.monotonic() - self.started),
            "created_at": self.created_at,
            "finished_at": datetime.now(timezone.utc),
            "error": self.error,
            "batch_id": self.batch_id,
            "upstream": self.upstream,
            "attempts": self.attempts or None,
            "compare_id": self.compare_id,
            "cache_result": self.cache_result,
            "cache_source_id": self.cache_source_id,
        }


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def new_record(
    scope: Scope, endpoint: str, task: str, http_request_id: str | None = None
) -> Record:
    """A record for a request of this HTTP exchange (the exchange's own, or a
    batch item's), with who asked and whether text may be kept."""
    state = scope.get("state", {})
    app_state = getattr(scope.get("app"), "state", None)
    settings = getattr(app_state, "settings", None)
    store = getattr(app_state, "store", None)
    headers = dict(scope.get("headers", ()))
    batch_id = None
    if store is not None and hmac.compare_digest(
        headers.get(INTERNAL_HEADER.encode(), b""), store.internal_token.encode()
    ):
        batch_id = (
            headers.get(BATCH_HEADER.encode(), b"").decode() or None
        )  # only the worker says so
    store_text = settings.store_text if settings is not None else True
    return Record(
        endpoint=endpoint,
        task=task,
        http_request_id=http_request_id or state.get("request_id"),
        api_key_id=state.get("api_key_id"),
        batch_id=batch_id,
        store_text=store_text,
    )


def submit(scope: Scope, record: Record, http_status: int) -> None:
    """Hand the row to the writer, and the tokens to the caller's budget."""
    from modelbench.server.auth import charge_tokens

    if record.cache_source_id is None and not (record.cache_result or "").startswith("hit"):
        charge_tokens(scope, (record.prompt_tokens or 0) + record.completion_tokens)
    app_state = getattr(scope.get("app"), "state", None)
    store = getattr(app_state, "store", None)
    settings = getattr(app_state, "settings", None)
    state = scope.get("state", {})  # auth has run by now: who asked, and may text be kept
    span = state.get(SPAN_KEY)  # the request's server span, when tracing is on
    tracer = getattr(app_state, "tracer", None)
    if span is not None and tracer is not None:
        trace_generation(tracer, span, record)
    log_text = settings is not None and settings.log_text
    if store is None and not log_text:
        return
    record.api_key_id = record.api_key_id or state.get("api_key_id")
    key_keeps_text = state.get("api_key_store_text") is not False
    if not key_keeps_text:
        record.store_text = False
    if store is not None:
        row = record.row(http_status)
        if span is not None:  # the store's write span links to the request's
            row[TRACE_LINK] = span.get_span_context()
        store.writer.submit(row)
    if log_text and key_keeps_text:
        text_logger.info(
            "request %s: prompt %r, output %r",
            record.id,
            record.prompt if record.messages is None else record.messages,
            record.output_text(),
            extra={"record_id": record.id, "http_request_id": record.http_request_id},
        )


class RecordMiddleware:
    """Opens a record for each inference request and submits it when the
    response ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = INFERENCE_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if task is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        # A gRPC call is on record under its method (/modelbench.v1.Inference/Predict).
        record = new_record(scope, grpc_method(scope) or scope["path"], task)
        status = 500
        error_body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-modelbench-record-id", record.id.encode()),
                ]
                names = {k.lower() for k, _ in message["headers"]}
                if record.cache_result is not None and b"x-modelbench-cache" not in names:
                    message["headers"].append((b"x-modelbench-cache", record.cache_result.encode()))
            elif (
                message["type"] == "http.response.body"
                and status >= 400
                and len(error_body) < 65536
            ):
                error_body.extend(message.get("body", b""))
            await send(message)

        token = current_record.set(record)
        try:
            await self.app(scope, receive, capture)
        finally:
            current_record.reset(token)
            if status >= 400 and record.error is None:
                record.error = error_message(bytes(error_body)) or f"HTTP {status}"
            submit(scope, record, status)


def error_message(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("message") if isinstance(error, dict) else None
