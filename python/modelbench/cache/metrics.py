"""The cache's Prometheus metrics, registered in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOOKUP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "modelbench:cache_queries",
            "Cache lookups by result: hit-exact, hit-semantic, miss, bypass (not looked "
            "up: Cache-Control: no-cache, a sampled request, logprobs), unavailable (Redis away)",
            ["result"],
            registry=registry,
        )
        self.lookup_seconds = Histogram(
            "modelbench:cache_lookup_seconds",
            "Time a lookup took, embedding the prompt included",
            buckets=LOOKUP_BUCKETS,
            registry=registry,
        )
        self.entries = Gauge(
            "modelbench:cache_entries", "Entries the cache holds", registry=registry
        )
        self.available = Gauge(
            "modelbench:cache_available",
            "1 while the cache's backend answers; 0 while Redis is away (the cache is off)",
            registry=registry,
        )
