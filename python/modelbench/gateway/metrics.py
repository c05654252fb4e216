"""The upstreams on /metrics: each replica's breaker state (0 closed,
1 half-open, 2 open), health, requests in flight, latency score, and its
requests and failures, labelled by model name and upstream URL. Read from
the replicas at scrape time. With ``--redis-url``, whether Redis answers."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelbench.gateway.breaker import BreakerState
from modelbench.gateway.service import Gateway
from modelbench.gateway.shared_state import SharedState

LABELS = ["model_name", "upstream"]
BREAKER_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class UpstreamCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        breaker = GaugeMetricFamily(
            "modelbench:upstream_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
            labels=LABELS,
        )
        healthy = GaugeMetricFamily(
            "modelbench:upstream_healthy",
            "1 while the upstream's health checks pass.",
            labels=LABELS,
        )
        outstanding = GaugeMetricFamily(
            "modelbench:upstream_requests_running",
            "Requests in flight to the upstream.",
            labels=LABELS,
        )
        latency = GaugeMetricFamily(
            "modelbench:upstream_latency_score_ms",
            "Moving average of time to first token plus per-token time (least-latency's score).",
            labels=LABELS,
        )
        requests = CounterMetricFamily(
            "modelbench:upstream_requests", "Attempts sent to the upstream.", labels=LABELS
        )
        failures = CounterMetricFamily(
            "modelbench:upstream_failures", "Attempts that failed.", labels=LABELS
        )
        for pool in self.gateway.pools.values():
            for replica in pool.replicas:
                labels = [pool.name, replica.url]
                breaker.add_metric(labels, BREAKER_VALUE[replica.breaker.state])
                healthy.add_metric(labels, 1.0 if replica.healthy else 0.0)
                outstanding.add_metric(labels, float(replica.outstanding))
                if replica.latency_ms is not None:
                    latency.add_metric(labels, replica.latency_ms)
                requests.add_metric(labels, float(replica.num_requests))
                failures.add_metric(labels, float(replica.num_failures))
        yield from (breaker, healthy, outstanding, latency, requests, failures)


class SharedStateCollector(Collector):
    def __init__(self, shared: SharedState) -> None:
        self.shared = shared

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "modelbench:shared_state_available",
            "1 while Redis answers and rate limits and breaker states are shared; "
            "0 while this process uses its own.",
            value=1.0 if self.shared.available else 0.0,
        )
