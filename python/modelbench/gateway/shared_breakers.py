"""Breaker states shared between gateway processes through Redis.

Each process's breakers stay the judges of the failures that process sees;
what is shared is their verdicts. When a breaker opens, or closes after a
successful half-open probe, the process writes the event to one Redis hash
per upstream URL (``modelbench:breaker:<url>``: ``state``, and ``changed_at``
in wall-clock seconds). Every ``interval_s`` each process reads the hashes of
all its upstreams in one round trip and adopts an event newer than the last
it knows of: an ``open`` whose cooldown has not passed makes its breaker
refuse until that cooldown ends, a ``closed`` closes it. Going half-open is
not an event: it follows from ``changed_at`` and the cooldown alone.

Events are ordered by ``changed_at``, newest wins, so a write that arrives
late changes nothing. While Redis is away nothing is shared and each
process's breakers go on alone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from modelbench.gateway.breaker import BreakerState
from modelbench.gateway.service import Gateway
from modelbench.gateway.shared_state import SharedState, SharedStateUnavailable
from modelbench.gateway.upstream import Upstream

logger = logging.getLogger("modelbench.gateway")

# Write an event unless a newer one is there. KEYS[1]: the upstream's hash;
# ARGV: state, changed_at, expiry in ms (after it an event says nothing).
PUBLISH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'changed_at'))
if current == nil or tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], 'state', ARGV[1], 'changed_at', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
"""


def breaker_key(url: str) -> str:
    return f"modelbench:breaker:{url}"


class SharedBreakers:
    """Publishes the breaker events of a gateway's replicas and adopts those
    of other processes. ``start`` hooks the replicas and keeps reading."""

    def __init__(
        self,
        shared: SharedState,
        gateway: Gateway,
        interval_s: float = 0.5,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.shared = shared
        self.gateway = gateway
        self.interval_s = interval_s
        self.wall_clock = wall_clock
        self._publish = shared.client.register_script(PUBLISH)
        # The newest event each replica's breaker has had, its own or adopted.
        self._last_event: dict[str, float] = {}
        self._adopting = False  # set while a shared event is applied: it is not published back
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading: asyncio.Task[None] | None = None

    @property
    def replicas(self) -> list[Upstream]:
        """Every replica now (the registry may add and remove them while running)."""
        return [r for p in self.gateway.pools.values() for r in p.replicas]

    def hook(self) -> None:
        """Publish the breaker events of every replica, those added since included."""
        for replica in self.replicas:
            replica.on_breaker_change = self._moved

    def start(self) -> None:
        self.hook()
        self._reading = asyncio.create_task(self._read_forever())

    async def close(self) -> None:
        for replica in self.replicas:
            replica.on_breaker_change = None
        tasks = [*self._tasks, *([self._reading] if self._reading else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _moved(self, replica: Upstream, old: BreakerState, new: BreakerState) -> None:
        """A replica's breaker changed: publish it if it is this process's event."""
        if self._adopting or new is BreakerState.HALF_OPEN:
            return
        now = self.wall_clock()
        self._last_event[replica.id] = now
        expiry_ms = int((replica.breaker.settings.cooldown_s + 60.0) * 1000)
        task = asyncio.get_running_loop().create_task(
            self._write(replica.url, new.value, now, expiry_ms)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, url: str, state: str, changed_at: float, expiry_ms: int) -> None:
        try:
            args: list[str | int] = [state, repr(changed_at), expiry_ms]
            await self.shared.call(
                lambda client: self._publish(keys=[breaker_key(url)], args=args, client=client)
            )
        except SharedStateUnavailable:
            pass  # the other processes go on with their own breakers

    async def read(self) -> None:
        """Adopt every replica's newer shared event, in one round trip."""
        self.hook()
        replicas = self.replicas  # as they are now: the read awaits

        async def read_all(client: aioredis.Redis) -> list[list[str | None]]:
            async with client.pipeline(transaction=False) as pipe:
                for replica in replicas:
                    pipe.hmget(breaker_key(replica.url), "state", "changed_at")
                return await pipe.execute()

        try:
            rows = await self.shared.call(read_all)
        except SharedStateUnavailable:
            return
        now = self.wall_clock()
        for replica, (state, changed) in zip(replicas, rows):
            if state is None or changed is None:
                continue  # no event yet, or it expired
            changed_at = float(changed)
            if changed_at <= self._last_event.get(replica.id, 0.0):
                continue  # seen already: its own, or adopted before
            self._last_event[replica.id] = changed_at
            self._adopt(replica, state, max(0.0, now - changed_at))

    def _adopt(self, replica: Upstream, state: str, age_s: float) -> None:
        breaker = replica.breaker
        self._adopting = True
        try:
            if state == BreakerState.OPEN.value and age_s < breaker.settings.cooldown_s:
                logger.info(
                    "upstream %s (%s): another gateway process opened its breaker %.1f s ago",
                    replica.id,
                    replica.url,
                    age_s,
                )
                breaker.adopt_open(age_s)
            elif state == BreakerState.CLOSED.value and breaker.state is not BreakerState.CLOSED:
                logger.info(
                    "upstream %s (%s): another gateway process closed its breaker",
                    replica.id,
                    replica.url,
                )
                breaker.adopt_closed()
        finally:
            self._adopting = False

    async def _read_forever(self) -> None:
        while True:
            try:
                await self.read()
            except Exception:  # a bad read never ends the loop
                logger.exception("reading the shared breaker states failed")
            await asyncio.sleep(self.interval_s)
