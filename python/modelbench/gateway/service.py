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
        self.tracer: Any = None  # an OpenTelemetry Tracer when tracing is on (the app's)

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

    def find(self, name: str, url: str) -> Upstream | None:
        pool = self.pools.get(name)
        url = url.rstrip("/")
        return next((r for r in pool.replicas if r.url == url), None) if pool else None

    def add_upstream(self, config: UpstreamConfig) -> Upstream:
        """A replica joins (the registry in the store adds them while the
        gateway runs): a new name gets a pool with its configured policy and
        fallback. It takes requests once its first health check passes
        (``check_new``), not before."""
        pool = self.pools.get(config.name)
        if pool is None:
            router = Router(self.options.policy.get(config.name, "round-robin"), rng=self.rng)
            pool = UpstreamPool(
                config.name, [], router, fallback=self.options.fallback.get(config.name)
            )
            self.pools[config.name] = pool
        index = max((int(r.id.rpartition("#")[2]) + 1 for r in pool.replicas), default=0)
        replica = Upstream(config, index, self.options)
        replica.healthy = False  # until checked: a new replica is not trusted blind
        pool.replicas.append(replica)
        return replica

    async def check_new(self, replica: Upstream) -> None:
        """The first check of a replica added while running (healthy at once if it answers)."""
        await replica.check(self.client, self.options.health_timeout_s, 1)

    def remove_upstream(self, name: str, url: str) -> Upstream | None:
        """A replica leaves: no new request goes to it (those in flight finish);
        a name left with none is no longer served."""
        replica = self.find(name, url)
        if replica is None:
            return None
        pool = self.pools[name]
        pool.replicas.remove(replica)
        if not pool.replicas:
            del self.pools[name]
        return replica

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
            self.client,
            pool,
            path,
            payload,
            self.options,
            key,
            self.rng,
            read_body=read_body,
            tracer=self.tracer,
        )

    def cards(self) -> list[dict[str, Any]]:
        return [pool.card() for pool in self.pools.values()]
