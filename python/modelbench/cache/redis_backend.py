"""The Redis backend (``--cache-url redis://...``): entries shared by every
server or gateway process using that Redis, each expiring by Redis's own TTL.

Redis holds the truth: ``e:<id>`` (the entry, with a TTL), ``x:<exact key>``
(its id, same TTL), ``lru`` (ids by last use; past ``max_entries`` the
least recently used are deleted) and ``log`` (a stream of each new entry's
partition and embedding). Debian's redis-server has no vector search, so
each process keeps its own vector index, fed from ``log``; a candidate the
index finds is read back from Redis, and one that has expired, been evicted
or cleared leaves the index then.

Redis is a help, never a dependency (the connection is the gateway's
``SharedState``): every call is bounded by ``timeout_s``; the first failure
is logged once and raises ``CacheUnavailable`` (the cache is then off:
requests are served uncached), and from then on calls fail at once until a
ping every ``check_interval_s`` is answered again.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from operator import methodcaller
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from modelbench.cache.entry import CacheEntry
from modelbench.cache.vector_index import VectorIndex
from modelbench.gateway.shared_state import SharedState

logger = logging.getLogger("modelbench.cache")
PREFIX = "modelbench:cache:"


class CacheUnavailable(Exception):
    """Redis did not answer in time: serve the request without the cache."""


class RedisBackend:
    def __init__(
        self,
        url: str,
        max_entries: int,
        timeout_s: float = 0.2,
        check_interval_s: float = 0.5,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        # The connection, its timeouts, and whether Redis answers: the
        # gateway's shared state does the same for rate limits and breakers.
        self.link = SharedState(
            url,
            timeout_s,
            check_interval_s,
            decode_responses=False,  # entries and embeddings are bytes
            unavailable=CacheUnavailable,
            setting="--cache-url",
            log=logger,
            when_away="the response cache is off until it answers",
            when_back="the response cache is back on",
        )
        self.url = self.link.url
        self.client: aioredis.Redis = self.link.client
        self.max_entries = max_entries
        self.timeout_s = timeout_s
        self._indexes: dict[str, VectorIndex] = {}
        self._local_expiry: list[tuple[float, str, str]] = []  # (expires_at, partition, id)
        self._last_log_id = b"0-0"

    # ---- connection --------------------------------------------------------

    @property
    def available(self) -> bool:
        return self.link.available

    async def start(self) -> None:
        await self.link.start()

    async def close(self) -> None:
        await self.link.close()

    async def check(self) -> bool:
        return await self.link.check()

    # redis-py's results are loosely typed (bytes, str or lists of them, by
    # command): calls answer Any, and the code says what each one is.
    async def _call(self, op: Callable[[Any], Awaitable[Any]]) -> Any:
        return await self.link.call(op)

    # ---- entries -------------------------------------------------------------

    async def count(self) -> int:
        return int(await self._call(lambda c: c.zcard(PREFIX + "lru")))

    async def get_exact(self, exact_key: str) -> CacheEntry | None:
        entry_id = await self._call(lambda c: c.get(PREFIX + "x:" + exact_key))
        if entry_id is None:
            return None
        return await self._get(entry_id.decode())

    async def _get(self, entry_id: str) -> CacheEntry | None:
        raw = await self._call(lambda c: c.get(PREFIX + "e:" + entry_id))
        if raw is None:
            await self._call(lambda c: c.zrem(PREFIX + "lru", entry_id))
            return None
        entry = CacheEntry.from_json(raw)
        now_ms = time.time() * 1000
        await self._call(lambda c: c.zadd(PREFIX + "lru", {entry_id: now_ms}))
        return entry

    async def search(
        self, partition: str, vector: np.ndarray, threshold: float
    ) -> list[tuple[CacheEntry, float]]:
        """The live entries at least ``threshold`` similar, best first."""
        await self._sync()
        index = self._indexes.get(partition)
        if index is None:
            return []
        found = []
        for entry_id, similarity in index.search(vector):
            if similarity < threshold:
                break
            entry = await self._get(entry_id)
            if entry is None:  # expired, evicted or cleared: out of the index too
                index.remove(entry_id)
                continue
            found.append((entry, similarity))
        return found

    async def put(self, entry: CacheEntry, vector: np.ndarray | None) -> None:
        ttl_ms = max(1, int((entry.expires_at - time.time()) * 1000))
        now_ms = time.time() * 1000

        async def write(c: Any) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.set(PREFIX + "e:" + entry.id, entry.to_json(), px=ttl_ms)
            pipe.set(PREFIX + "x:" + entry.exact_key, entry.id, px=ttl_ms)
            pipe.zadd(PREFIX + "lru", {entry.id: now_ms})
            if vector is not None:
                pipe.xadd(
                    PREFIX + "log",
                    {
                        "id": entry.id,
                        "partition": entry.partition,
                        "expires_at": repr(entry.expires_at),
                        "vector": np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
                    },
                    maxlen=2 * self.max_entries,
                    approximate=True,
                )
            pipe.zcard(PREFIX + "lru")
            results = await pipe.execute()
            excess = int(results[-1]) - self.max_entries
            if excess > 0:  # the least recently used go
                evicted = await c.zpopmin(PREFIX + "lru", excess)
                if evicted:
                    await c.delete(*(PREFIX + "e:" + i.decode() for i, _ in evicted))

        await self._call(write)

    async def clear(self, model_name: str | None = None, owner: str | None = None) -> int:
        ids = [i.decode() for i in await self._call(lambda c: c.zrange(PREFIX + "lru", 0, -1))]
        doomed: list[str] = []
        for start in range(0, len(ids), 500):
            keys = [PREFIX + "e:" + i for i in ids[start : start + 500]]
            raws = await self._call(methodcaller("mget", keys))
            chunk = ids[start : start + 500]
            for entry_id, raw in zip(chunk, raws, strict=True):
                if raw is None:
                    doomed.append(entry_id)
                    continue
                entry = CacheEntry.from_json(raw)
                if (model_name is None or entry.model_name == model_name) and (
                    owner is None or entry.owner == owner
                ):
                    doomed.append(entry_id)
        removed = 0
        for start in range(0, len(doomed), 500):
            chunk = doomed[start : start + 500]
            keys = [PREFIX + "e:" + i for i in chunk]
            removed += int(await self._call(methodcaller("delete", *keys)))
            await self._call(methodcaller("zrem", PREFIX + "lru", *chunk))
        return removed

    # ---- the local vector index ------------------------------------------------

    async def _sync(self) -> None:
        """Add the entries other processes (and this one) logged since the last look."""
        while True:
            read = await self._call(
                lambda c: c.xread({PREFIX + "log": self._last_log_id}, count=5000)
            )
            if not read:
                break
            _, records = read[0]
            for record_id, fields in records:
                self._last_log_id = record_id
                partition = fields[b"partition"].decode()
                entry_id = fields[b"id"].decode()
                expires_at = float(fields[b"expires_at"])
                vector = np.frombuffer(fields[b"vector"], dtype=np.float32)
                index = self._indexes.get(partition)
                if index is None:
                    index = self._indexes[partition] = VectorIndex(vector.shape[0])
                index.add(entry_id, vector)
                heapq.heappush(self._local_expiry, (expires_at, partition, entry_id))
            if len(records) < 5000:
                break
        now = time.time()
        while self._local_expiry and self._local_expiry[0][0] <= now:
            _, partition, entry_id = heapq.heappop(self._local_expiry)
            index = self._indexes.get(partition)
            if index is not None:
                index.remove(entry_id)
