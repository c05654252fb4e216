"""An upstream replica and the replicas of one name.

``Upstream`` is one OpenAI-compatible server: its base URL and key, its
circuit breaker, its health (from active checks), its requests in flight and
a moving average of its latency, which the routing policies read.
``UpstreamPool`` is every replica serving one name, with the name's policy
and fallback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelbench.gateway.breaker import BreakerState, CircuitBreaker
from modelbench.gateway.config import GatewayOptions, UpstreamConfig
from modelbench.gateway.policies import LatencyAverage, Router

logger = logging.getLogger("modelbench.gateway")


class Upstream:
    """One replica. ``available`` is what routing may pick: healthy by the
    last checks and not refused by its breaker (an open breaker whose
    cooldown has passed is half-open, and lets a probe through)."""

    def __init__(self, config: UpstreamConfig, index: int, options: GatewayOptions) -> None:
        self.config = config
        self.id = f"{config.name}#{index}"
        self.url = config.url
        self.weight = config.weight
        self.outstanding = 0
        self.healthy = True  # until the checks say otherwise; the first runs at start
        self.failed_checks = 0
        self.last_error: str | None = None
        self.latency = LatencyAverage()
        self.num_requests = 0
        self.num_failures = 0
        self.breaker = CircuitBreaker(options.breaker_settings(), on_change=self._breaker_moved)
        # Told of every breaker change after it is logged: gateway/shared_breakers.py
        # publishes them to the other gateway processes.
        self.on_breaker_change: Callable[[Upstream, BreakerState, BreakerState], None] | None = None
        key = config.api_key()
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    @property
    def available(self) -> bool:
        return self.healthy and self.breaker.state != BreakerState.OPEN

    @property
    def latency_ms(self) -> float | None:
        return self.latency.score_ms

    def _breaker_moved(self, old: BreakerState, new: BreakerState) -> None:
        log = logger.warning if new == BreakerState.OPEN else logger.info
        log("upstream %s (%s): breaker %s -> %s", self.id, self.url, old.value, new.value)
        if self.on_breaker_change is not None:
            self.on_breaker_change(self, old, new)

    def card(self) -> dict[str, Any]:
        """What GET /v1/upstreams shows of it (never its key)."""
        return {
            "id": self.id,
            "name": self.config.name,
            "url": self.url,
            "model": self.config.upstream_model,
            "healthy": self.healthy,
            "available": self.available,
            "breaker": self.breaker.snapshot(),
            "outstanding": self.outstanding,
            "latency_ms": self.latency_ms,
            "requests": self.num_requests,
            "failures": self.num_failures,
            "last_error": self.last_error,
        }

    async def check(
        self, client: aiohttp.ClientSession, timeout_s: float, unhealthy_after: int
    ) -> bool:
        """One active health check: GET {url}/models answers 200."""
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            async with client.get(
                f"{self.url}/models", headers=self.headers, timeout=timeout
            ) as response:
                await response.read()
                ok = response.status == 200
                error = None if ok else f"health check answered {response.status}"
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
            ok, error = False, f"health check failed: {type(exc).__name__}: {exc}"
        if ok:
            if not self.healthy:
                logger.info("upstream %s (%s) is healthy again", self.id, self.url)
            self.healthy, self.failed_checks = True, 0
        else:
            self.failed_checks += 1
            self.last_error = error
            if self.healthy and self.failed_checks >= unhealthy_after:
                logger.warning("upstream %s (%s) is unhealthy: %s", self.id, self.url, error)
                self.healthy = False
        return ok


@dataclass
class UpstreamPool:
    """The replicas of one name, the order its policy tries them in, and
    where a request goes when none of them can answer."""

    name: str
    replicas: list[Upstream]
    router: Router
    fallback: str | None = None

    @property
    def is_ready(self) -> bool:
        return any(r.healthy for r in self.replicas)

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "policy": self.router.policy,
            "fallback": self.fallback,
            "ready": self.is_ready,
            "replicas": [r.card() for r in self.replicas],
        }
