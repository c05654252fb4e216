"""Sending one request to the replicas of a name: the policy's order, a
breaker per replica, timeouts (connect, first byte, total), retries with
backoff and jitter on another replica (honouring ``Retry-After``), and only
while nothing has reached the client.

``send`` returns the first answer a replica gives that is not a failure (a
2xx, or a 4xx other than 429, which is the client's to see), its body still
unread; ``UpstreamsFailed`` says that every attempt failed and why, which is
when the caller turns to the name's fallback."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from modelbench import tracing
from modelbench.gateway.config import GatewayOptions
from modelbench.gateway.upstream import Upstream, UpstreamPool

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer


@dataclass
class Attempt:
    """One try of one replica, for the request's record."""

    upstream: str
    breaker: str  # the breaker's state the attempt met
    outcome: str  # ok | client_error | http_<status> | timeout | connect_error | open
    elapsed_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "breaker": self.breaker,
            "outcome": self.outcome,
            "elapsed_ms": round(self.elapsed_ms, 2),
        }


class UpstreamsFailed(Exception):
    """Every attempt on the name's replicas failed (or none was available).
    ``status`` is what the client gets when there is no fallback: 429 when
    every replica said so, 504 when they timed out, else 502 or 503."""

    def __init__(
        self, name: str, attempts: list[Attempt], status: int, retry_after_s: float | None
    ) -> None:
        tried = ", ".join(f"{a.upstream}: {a.outcome}" for a in attempts) or "none available"
        super().__init__(f"no upstream of {name!r} could answer ({tried})")
        self.name = name
        self.attempts = attempts
        self.status = status
        self.retry_after_s = retry_after_s


# What a response that breaks off, or a connection that fails, raises.
BROKEN = (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError)


@dataclass
class Answer:
    """A replica's answer. Its body is in ``content`` when ``send`` read it;
    else read it with ``chunks()`` and ``close()`` the answer when done."""

    response: aiohttp.ClientResponse
    upstream: Upstream
    attempts: list[Attempt]
    started: float  # time.monotonic() when this attempt was sent
    first_byte: float  # when its headers arrived
    content: bytes | None = None  # the body, when send() was asked to read it

    @property
    def ok(self) -> bool:
        return 200 <= self.response.status < 300

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def content_type(self) -> str:
        return self.response.headers.get("content-type", "application/json")

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (raises one of BROKEN if it breaks off)."""
        return self.response.content.iter_any()

    async def read(self) -> bytes:
        return await self.response.read()

    def close(self) -> None:
        """Drop the connection (a body not read to the end cannot be reused)."""
        self.response.close()


def retry_after_seconds(response: aiohttp.ClientResponse) -> float | None:
    """``Retry-After`` as seconds (a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_s(attempt: int, options: GatewayOptions, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS's "full jitter")."""
    cap = min(options.backoff_max_s, options.backoff_base_s * (2**attempt))
    return rng.uniform(0.0, cap)


async def send(
    client: aiohttp.ClientSession,
    pool: UpstreamPool,
    path: str,
    payload: dict[str, Any],
    options: GatewayOptions,
    key: str | None = None,
    rng: random.Random | None = None,
    read_body: bool = False,
    tracer: Tracer | None = None,
) -> Answer:
    """POST ``payload`` (its ``model`` set to each replica's own name) to
    ``{url}{path}`` of the pool's replicas in the policy's order, retrying on
    failure. With ``read_body`` the whole body is read within the attempt
    (``total_timeout_s``), so a body that breaks off is retried too. Raises
    UpstreamsFailed when no attempt succeeds. With a ``tracer`` each attempt
    is a CLIENT span (until the answer's headers, or its body when read)
    whose context the upstream gets in ``traceparent``."""
    rng = rng or random.Random()
    order = pool.router.order(pool.replicas, key)
    attempts: list[Attempt] = []
    if not order:
        raise UpstreamsFailed(pool.name, attempts, 503, None)
    statuses: list[int] = []
    retry_after: float | None = None
    # sock_read bounds each wait for bytes: the first byte, then each chunk.
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=options.connect_timeout_s,
        sock_connect=options.connect_timeout_s,
        sock_read=options.first_byte_timeout_s,
    )
    for n in range(options.max_attempts):
        upstream = order[n % len(order)]
        state = upstream.breaker.state.value
        if not upstream.breaker.allow():
            attempts.append(Attempt(upstream.id, state, "open", 0.0))
            statuses.append(503)
            continue
        started = time.monotonic()
        upstream.outstanding += 1
        upstream.num_requests += 1
        body = json.dumps({**payload, "model": upstream.config.upstream_model})
        wait: float | None = None
        span = attempt_span(tracer, upstream, path, n) if tracer is not None else None
        headers = upstream.headers
        if span is not None:
            headers = dict(headers)
            tracing.inject(headers, span)
        try:
            response = await asyncio.wait_for(
                client.post(upstream.url + path, data=body, headers=headers, timeout=timeout),
                options.first_byte_timeout_s,
            )
        except asyncio.TimeoutError as exc:  # aiohttp's timeouts are asyncio's too
            connect = isinstance(exc, aiohttp.ConnectionTimeoutError)
            outcome = "connect_timeout" if connect else "timeout"
            statuses.append(504)
            _failed(upstream, outcome)
        except (aiohttp.ClientError, ConnectionError) as exc:
            statuses.append(502)
            _failed(upstream, f"connect_error: {type(exc).__name__}")
            outcome = "connect_error"
        except BaseException:  # cancelled: the client went away
            upstream.outstanding -= 1
            upstream.breaker.release()
            end_attempt_span(span, "cancelled", None)
            raise
        else:
            if span is not None:
                span.set_attribute("http.response.status_code", response.status)
            if response.status == 429 or response.status >= 500:
                outcome = f"http_{response.status}"
                statuses.append(response.status)
                response.release()
                if response.status == 429:  # busy, not broken
                    upstream.outstanding -= 1
                    upstream.breaker.release()
                    wait = retry_after_seconds(response)
                    if wait is not None:
                        retry_after = wait if retry_after is None else min(retry_after, wait)
                else:
                    _failed(upstream, outcome)
            else:
                now = time.monotonic()
                content = None
                if read_body:
                    try:
                        content = await asyncio.wait_for(response.read(), options.total_timeout_s)
                    except BROKEN as exc:
                        response.close()
                        timed_out = isinstance(exc, asyncio.TimeoutError)
                        outcome = "timeout" if timed_out else "broken_body"
                        statuses.append(504 if timed_out else 502)
                        _failed(upstream, outcome)
                        content = None
                    except BaseException:
                        response.close()
                        upstream.outstanding -= 1
                        upstream.breaker.release()
                        end_attempt_span(span, "cancelled", None)
                        raise
                    else:
                        response.release()
                if not read_body or content is not None:
                    kind = "ok" if 200 <= response.status < 300 else "client_error"
                    attempts.append(Attempt(upstream.id, state, kind, (now - started) * 1e3))
                    end_attempt_span(span, kind, None)
                    return Answer(response, upstream, attempts, started, now, content)
        attempts.append(Attempt(upstream.id, state, outcome, (time.monotonic() - started) * 1e3))
        end_attempt_span(span, outcome, outcome)
        if n + 1 < options.max_attempts:
            if wait is not None and len(order) == 1 and wait <= options.max_retry_after_s:
                await asyncio.sleep(wait)  # the only replica asked for this pause
            else:
                await asyncio.sleep(backoff_s(n, options, rng))
    if statuses and all(s == 429 for s in statuses):
        status = 429
    elif statuses and all(s == 504 for s in statuses):
        status = 504
    elif statuses and all(s == 503 for s in statuses):
        status = 503
    else:
        status = 502
    raise UpstreamsFailed(pool.name, attempts, status, retry_after)


def attempt_span(tracer: Tracer, upstream: Upstream, path: str, n: int) -> Span:
    """The CLIENT span of one attempt, under the request's current span."""
    from opentelemetry.trace import SpanKind

    parts = urlsplit(upstream.url)
    return tracer.start_span(
        f"POST {path}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": "POST",
            "url.full": upstream.url + path,
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "modelbench.upstream": upstream.id,
            "modelbench.attempt": n + 1,
            tracing.GEN_AI_REQUEST_MODEL: upstream.config.upstream_model,
        },
    )


def end_attempt_span(span: Span | None, outcome: str, error: str | None) -> None:
    if span is None:
        return
    span.set_attribute("modelbench.outcome", outcome)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def _failed(upstream: Upstream, outcome: str) -> None:
    upstream.outstanding -= 1
    upstream.num_failures += 1
    upstream.last_error = outcome
    upstream.breaker.record_failure()


def finished(answer: Answer, ok: bool, num_tokens: int | None = None) -> None:
    """The answer's body has been read to the end (``ok``) or broke off:
    the breaker, the latency average and the count in flight learn it."""
    upstream = answer.upstream
    upstream.outstanding -= 1
    if not ok:
        upstream.num_failures += 1
        upstream.last_error = "the response broke off"
        upstream.breaker.record_failure()
        return
    upstream.breaker.record_success()
    ttft_ms = (answer.first_byte - answer.started) * 1e3
    total_ms = (time.monotonic() - answer.started) * 1e3
    tpot = (total_ms - ttft_ms) / num_tokens if num_tokens else None
    upstream.latency.observe(ttft_ms, tpot, num_tokens or 0)


def cancelled(answer: Answer) -> None:
    """The client went away before the answer was read: no verdict."""
    answer.upstream.outstanding -= 1
    answer.upstream.breaker.release()
