"""The gateway's state in one process: the pools of upstreams by name, the
shared HTTP connection pool, and the active health checks that run beside
the requests. The server holds one (``app.state.registry.gateway``) when
its configuration declares upstreams."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import aiohttp

from modelbench.gateway.config import GatewayOptions, UpstreamConfig
from modelbench.gateway.forward import Answer, send
from modelbench.gateway.policies import Router
from modelbench.gateway.upstream import Upstream, UpstreamPool

logger = logging.getLogger("modelbench.gateway")


class Gateway:
    """Upstream pools by name. ``start`` runs the first health checks and
    keeps checking every ``health_interval_s``; ``close`` stops that and the
    connection pool."""

    def __init__(
        self,
        upstreams: list[UpstreamConfig],
        options: GatewayOptions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options or GatewayOptions()
        self.rng = rng or random.Random()
        self.pools: dict[str, UpstreamPool] = {}
        by_name: dict[str, list[UpstreamConfig]] = {}
        for config in upstreams:
            by_name.setdefault(config.name, []).append(config)
        for name, configs in by_name.items():
            replicas = [Upstream(c, i, self.options) for i, c in enumerate(configs)]
            policy = self.options.policy.get(name, "round-robin")
            router = Router(policy, rng=self.rng)
            self.pools[name] = UpstreamPool(
                name, replicas, router, fallback=self.options.fallback.get(name)
            )
        self._client: aiohttp.ClientSession | None = None
        self._checks: asyncio.Task[None] | None = None

    @property
    def client(self) -> aiohttp.ClientSession:
        """The connection pool every upstream shares, made on first use (it
        binds to the running event loop)."""
        if self._client is None:
            connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, ttl_dns_cache=300)
            self._client = aiohttp.ClientSession(connector=connector)
        return self._client

    def pool(self, name: str) -> UpstreamPool | None:
        return self.pools.get(name)

    async def start(self) -> None:
        """Check every upstream once (an unreachable one is logged by name and
        left unhealthy: /ready says which name has none), then keep checking."""
        await self.check_all()
        for pool in self.pools.values():
            if not pool.is_ready:
                reasons = "; ".join(f"{r.url}: {r.last_error}" for r in pool.replicas)
                logger.error("no healthy upstream for %s at start (%s)", pool.name, reasons)
        self._checks = asyncio.create_task(self._check_forever())

    async def check_all(self) -> None:
        checks = [
            r.check(self.client, self.options.health_timeout_s, self.options.unhealthy_after)
            for pool in self.pools.values()
            for r in pool.replicas
        ]
        await asyncio.gather(*checks)

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.health_interval_s)
            try:
                await self.check_all()
            except Exception:  # a check never ends the loop
                logger.exception("upstream health checks failed")

    async def close(self) -> None:
        if self._checks is not None:
            self._checks.cancel()
            await asyncio.gather(self._checks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    async def send_request(
        self,
        pool: UpstreamPool,
        path: str,
        payload: dict[str, Any],
        key: str | None,
        read_body: bool = False,
    ) -> Answer:
        """``forward.send`` over this gateway's connection pool and options."""
        return await send(
            self.client, pool, path, payload, self.options, key, self.rng, read_body=read_body
        )

    def cards(self) -> list[dict[str, Any]]:
        return [pool.card() for pool in self.pools.values()]
