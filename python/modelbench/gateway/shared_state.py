"""The Redis connection that several gateway processes behind one load
balancer share their rate limits and breaker states through (``--redis-url``).

Redis is a help, never a dependency: every call has a short timeout, and a
call that fails raises ``SharedStateUnavailable`` so the caller uses its
process's own state instead. The first failure is logged once and turns
``available`` (the ``modelbench:shared_state_available`` gauge) to False;
from then on calls fail at once, without waiting on a dead server, until the
watch loop's ping is answered again, which is logged once too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger("modelbench.gateway")

T = TypeVar("T")


class SharedStateUnavailable(Exception):
    """Redis did not answer in time: use the process's own state."""


def redact_url(url: str) -> str:
    """The URL with its password, if it has one, as ``***``: fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class SharedState:
    """One Redis client, and whether Redis answers. ``start`` pings it once
    (an unreachable Redis is logged, never fatal) and keeps pinging every
    ``check_interval_s``; ``close`` stops that and the client.

    The gateway's rate limits and breakers use it as it is; the response
    cache's Redis backend (``cache/redis_backend.py``) too, with bytes
    replies, its own exception and its own log lines (``setting`` names the
    option the URL came from, for a bad URL's error)."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 0.2,
        check_interval_s: float = 0.5,
        *,
        decode_responses: bool = True,
        unavailable: type[Exception] = SharedStateUnavailable,
        setting: str = "redis url",
        log: logging.Logger = logger,
        when_away: str = "using local rate limits and breaker state",
        when_back: str = "sharing rate limits and breaker state",
    ) -> None:
        self.url = redact_url(url)
        self.timeout_s = timeout_s
        self.check_interval_s = check_interval_s
        self._unavailable = unavailable
        self._log = log
        self._when_away, self._when_back = when_away, when_back
        try:
            self.client: aioredis.Redis = aioredis.Redis.from_url(
                url,
                decode_responses=decode_responses,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),  # a failed call falls back; it is not retried
            )
        except ValueError as exc:
            raise ValueError(f"{setting} {self.url}: {exc}") from exc
        self.available = True  # until a call fails
        self._watch: asyncio.Task[None] | None = None

    async def call(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``op(client)``, or the unavailable exception when Redis is known
        to be away or does not answer within ``timeout_s``."""
        if not self.available:
            raise self._unavailable(self.url)
        return await self._attempt(op)

    async def check(self) -> bool:
        """Ping Redis whether or not it was away; True when it answered."""
        try:
            await self._attempt(lambda client: client.ping())
        except self._unavailable:
            return False
        return True

    async def start(self) -> None:
        await self.check()
        self._watch = asyncio.create_task(self._watch_forever())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.client.aclose()

    async def _attempt(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        try:
            result = await asyncio.wait_for(op(self.client), self.timeout_s)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._went_away(exc)
            raise self._unavailable(self.url) from exc
        if not self.available:
            self._log.info("redis at %s answers again: %s", self.url, self._when_back)
            self.available = True
        return result

    def _went_away(self, exc: BaseException) -> None:
        if self.available:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._log.warning("redis unavailable at %s: %s (%s)", self.url, self._when_away, reason)
            self.available = False

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            await self.check()
