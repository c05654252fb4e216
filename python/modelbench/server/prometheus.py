"""Prometheus metrics of one app, named as vLLM names them (``vllm:`` ->
``modelbench:``) so that existing dashboards carry over.

Three sources, each observed in one place:

- the engines' state (requests running and waiting, KV cache usage,
  preemptions, prefix cache), read from each version's stats snapshot when
  /metrics is scraped (``EngineCollector``);
- per request timings and token counts, observed as the request's deltas pass
  through ``start_generation`` (``RequestObserver``);
- per route HTTP counts and durations, observed by ``TrafficMiddleware``;
  per method gRPC counts and durations, observed by the gRPC service
  (server/grpc/service.py).

Engine metrics carry ``model_name`` and ``version`` labels, and the
per-request families also ``protocol`` (``http`` or ``grpc``: what the
request came in as); HTTP metrics the route's template
(``/v1/jobs/{job_id}``), never the raw path, so that the number of series
stays bounded; gRPC metrics the full method name and the status code.
Every app owns its ``CollectorRegistry``: nothing is registered globally,
so tests can build several apps.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelbench.engine.outputs import RequestOutput
from modelbench.server.registry import ModelHandle, ModelRegistry

# vLLM's buckets (vllm/v1/metrics/loggers.py), so that quantiles compare.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
# Queue time starts near zero on an idle server: finer buckets at the bottom.
QUEUE_TIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, *REQUEST_LATENCY_BUCKETS)
HTTP_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

MODEL_LABELS = ("model_name", "version")
# The per-request families' labels: the model's, and the protocol the request came in as.
REQUEST_LABELS = (*MODEL_LABELS, "protocol")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # 404s: one series, whatever paths scanners try

# The metrics of the app serving the current HTTP request, set by
# TrafficMiddleware, so that start_generation finds them without every route
# passing them along. Unset (outside an app): requests are not observed.
current_metrics: contextvars.ContextVar[ServerMetrics | None] = contextvars.ContextVar(
    "modelbench_metrics", default=None
)
# What the current request came in as ("http", or "grpc" for a call of the gRPC
# service), set by TrafficMiddleware beside current_metrics.
current_protocol: contextvars.ContextVar[str] = contextvars.ContextVar(
    "modelbench_protocol", default="http"
)


class EngineCollector(Collector):
    """Gauges and engine-side counters read from every loaded version's stats
    snapshot at scrape time (a copy under the engine's stats lock; never
    waits for a step)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def _families(self) -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        labels = list(MODEL_LABELS)
        return {
            "running": GaugeMetricFamily(
                "modelbench:num_requests_running",
                "Number of requests in model execution batches.",
                labels=labels,
            ),
            "waiting": GaugeMetricFamily(
                "modelbench:num_requests_waiting",
                "Number of requests waiting to be processed.",
                labels=labels,
            ),
            "kv": GaugeMetricFamily(
                "modelbench:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage.",
                labels=labels,
            ),
            "preemptions": CounterMetricFamily(
                "modelbench:num_preemptions",
                "Cumulative number of preemptions from the engine.",
                labels=labels,
            ),
            "prefix_queries": CounterMetricFamily(
                "modelbench:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                labels=labels,
            ),
            "prefix_hits": CounterMetricFamily(
                "modelbench:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.",
                labels=labels,
            ),
            # Speculative decoding, vLLM's spec_decode counters: acceptance rate is
            # accepted_tokens / draft_tokens, accepted tokens per step 1 + accepted / drafts.
            "spec_drafts": CounterMetricFamily(
                "modelbench:spec_decode_num_drafts",
                "Speculative proposals verified (steps of a sequence with draft tokens).",
                labels=labels,
            ),
            "spec_draft_tokens": CounterMetricFamily(
                "modelbench:spec_decode_num_draft_tokens",
                "Draft tokens proposed.",
                labels=labels,
            ),
            "spec_accepted": CounterMetricFamily(
                "modelbench:spec_decode_num_accepted_tokens",
                "Draft tokens accepted.",
                labels=labels,
            ),
            "spec_per_pos": CounterMetricFamily(
                "modelbench:spec_decode_num_accepted_tokens_per_pos",
                "Draft tokens accepted, by position in the proposal.",
                labels=[*labels, "position"],
            ),
        }

    def describe(self) -> Iterator[Metric]:
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for handle in self.registry.handles():
            engine = handle.engine
            if engine is None:  # loading, failed, or freed while unloading
                continue
            s = engine.stats().scheduler
            labels = [handle.name, handle.version]
            families["running"].add_metric(labels, s.num_running)
            families["waiting"].add_metric(labels, s.num_waiting)
            families["kv"].add_metric(labels, s.kv_cache_usage)
            families["preemptions"].add_metric(labels, s.num_preemptions)
            families["prefix_queries"].add_metric(labels, s.num_prefix_query_tokens)
            families["prefix_hits"].add_metric(labels, s.num_prefix_hit_tokens)
            families["spec_drafts"].add_metric(labels, s.num_spec_drafts)
            families["spec_draft_tokens"].add_metric(labels, s.num_spec_draft_tokens)
            families["spec_accepted"].add_metric(labels, s.num_spec_accepted_tokens)
            for position, count in enumerate(s.num_spec_accepted_tokens_per_pos):
                families["spec_per_pos"].add_metric([*labels, str(position)], count)
        return iter(families.values())


class EventLoopCollector(Collector):
    """The asyncio tasks alive in the server's event loop at scrape time: flat
    under a steady load, or something leaks."""

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped from outside the loop
            return
        gauge = GaugeMetricFamily(
            "modelbench:event_loop_tasks", "asyncio tasks alive in the server's event loop."
        )
        gauge.add_metric([], float(tasks))
        yield gauge


class ServerMetrics:
    """The app's CollectorRegistry and the metrics observed into it."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = CollectorRegistry()
        labels = REQUEST_LABELS
        r = self.registry
        self.time_to_first_token = Histogram(
            "modelbench:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "modelbench:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            labels,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e_request_latency = Histogram(
            "modelbench:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            labels,
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_queue_time = Histogram(
            "modelbench:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            labels,
            buckets=QUEUE_TIME_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "modelbench:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "modelbench:generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=r,
        )
        self.request_success = Counter(
            "modelbench:request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=r,
        )
        self.http_requests = Counter(
            "modelbench:http_requests",
            "HTTP requests by method, route template and status.",
            ("method", "route", "status"),
            registry=r,
        )
        self.http_request_duration = Histogram(
            "modelbench:http_request_duration_seconds",
            "HTTP request duration in seconds, to the end of the response body.",
            ("method", "route"),
            buckets=HTTP_DURATION_BUCKETS,
            registry=r,
        )
        self.grpc_requests = Counter(
            "modelbench:grpc_requests",
            "gRPC calls by full method name and status code.",
            ("grpc_method", "grpc_code"),
            registry=r,
        )
        self.grpc_request_duration = Histogram(
            "modelbench:grpc_request_duration_seconds",
            "gRPC call duration in seconds, to the end of the response (a stream's last message).",
            ("grpc_method",),
            buckets=HTTP_DURATION_BUCKETS,
            registry=r,
        )
        r.register(EngineCollector(registry))
        r.register(EventLoopCollector())

    def exposition(self) -> bytes:
        """The Prometheus text format of everything above."""
        return generate_latest(self.registry)

    def observe_http(self, method: str, route: str, status: int, duration_s: float) -> None:
        method = method if method in HTTP_METHODS else "OTHER"
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_request_duration.labels(method, route).observe(duration_s)

    def observe_grpc(self, method: str, code: str, duration_s: float) -> None:
        self.grpc_requests.labels(method, code).inc()
        self.grpc_request_duration.labels(method).observe(duration_s)


class RequestObserver:
    """One generation request's timings and token counts, observed as its
    deltas pass (see ``ObservedDeltas``).

    Each of the ``n`` choices is one sequence in the engine, and is observed
    as vLLM observes a request: time to its first token and between its
    tokens, its queue time, its end-to-end latency, its finish reason (a
    choice the client walked away from counts as "abort"). Token counters
    match the response's usage: the prompt once, every generated token.
    Times run from the moment the server started the request, so TTFT
    includes tokenization and queueing, as a client sees it.
    """

    def __init__(
        self, metrics: ServerMetrics | None, handle: ModelHandle, n: int, protocol: str = "http"
    ) -> None:
        self.metrics = metrics
        self.labels = (handle.name, handle.version, protocol)
        self.n = n
        self.arrival = time.monotonic()
        self._last_token_at: dict[int, float] = {}  # choice index -> when its last token came
        self._queued: set[int] = set()  # choices whose queue time is observed
        self._finished: set[int] = set()
        self._prompt_counted = False
        self._ended = False

    @classmethod
    def begin(cls, handle: ModelHandle, n: int) -> RequestObserver:
        """An observer for a request to ``handle``, reporting to the metrics
        of the app serving the current HTTP request (none outside one),
        labelled with the protocol it came in as."""
        return cls(current_metrics.get(), handle, n, current_protocol.get())

    def watch(self, deltas: AsyncIterator[RequestOutput]) -> ObservedDeltas:
        return ObservedDeltas(deltas, self)

    def on_delta(self, out: RequestOutput) -> None:
        m = self.metrics
        if m is None:
            return
        now = time.monotonic()
        delta = out.outputs[0]
        i = delta.index
        if not self._prompt_counted:
            self._prompt_counted = True
            m.prompt_tokens.labels(*self.labels).inc(len(out.prompt_token_ids))
        if i not in self._queued and out.metrics.queue_time_s is not None:
            self._queued.add(i)
            m.request_queue_time.labels(*self.labels).observe(out.metrics.queue_time_s)
        if delta.token_ids:
            m.generation_tokens.labels(*self.labels).inc(len(delta.token_ids))
            last = self._last_token_at.get(i)
            if last is None:
                m.time_to_first_token.labels(*self.labels).observe(now - self.arrival)
            else:
                m.inter_token_latency.labels(*self.labels).observe(now - last)
            self._last_token_at[i] = now
        if out.finished and i not in self._finished:
            self._finished.add(i)
            m.e2e_request_latency.labels(*self.labels).observe(now - self.arrival)
            m.request_success.labels(*self.labels, delta.finish_reason or "abort").inc()

    def end(self) -> None:
        """The request is over: choices that never finished were aborted."""
        if self._ended or self.metrics is None:
            return
        self._ended = True
        num_aborted = self.n - len(self._finished)
        if num_aborted > 0:
            self.metrics.request_success.labels(*self.labels, "abort").inc(num_aborted)


class ObservedDeltas:
    """``deltas``, each shown to the observer on its way through. A class
    rather than an async generator so that ``aclose()`` reaches the inner
    iterator (and ends the request) even when iteration never started."""

    def __init__(self, deltas: AsyncIterator[RequestOutput], observer: RequestObserver) -> None:
        self._deltas = deltas
        self._observer = observer

    def __aiter__(self) -> ObservedDeltas:
        return self

    async def __anext__(self) -> RequestOutput:
        try:
            out = await self._deltas.__anext__()
        except StopAsyncIteration:
            self._observer.end()
            raise
        self._observer.on_delta(out)
        return out

    async def aclose(self) -> None:
        try:
            await self._deltas.aclose()  # type: ignore[attr-defined]
        finally:
            self._observer.end()
