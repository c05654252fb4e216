"""ResponseCache: the cache's policy, over a backend and an embedder.

``lookup`` reads the caller's own partition, then the shared one: an exact
match first, then (in semantic mode) the nearest cached prompt whose cosine
similarity reaches the threshold and that the near-miss guard lets pass
(another number, a negation, an opposite: cache/near_miss.py). Nothing is
looked up for ``no_cache``, or for a sampled request unless the model caches
those too; nothing is stored for ``no_store``. An entry whose owner's key
was revoked never serves again. When the backend is away (Redis), the
request is served uncached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from modelbench.cache.embedder import Embedder, embed
from modelbench.cache.entry import Answer, CacheEntry
from modelbench.cache.fingerprint import CacheQuery
from modelbench.cache.memory_backend import MemoryBackend
from modelbench.cache.metrics import CacheMetrics
from modelbench.cache.near_miss import WORD_THRESHOLD, judge
from modelbench.cache.redis_backend import CacheUnavailable, RedisBackend

logger = logging.getLogger("modelbench.cache")

HIT_EXACT, HIT_SEMANTIC, MISS, BYPASS = "hit-exact", "hit-semantic", "miss", "bypass"


@dataclass
class Lookup:
    result: str  # hit-exact | hit-semantic | miss | bypass (the response header's value)
    entry: CacheEntry | None = None
    similarity: float | None = None
    vector: np.ndarray | None = None  # the prompt's embedding, for storing after a miss
    may_store: bool = False
    reason: str | None = None  # why it was bypassed

    @property
    def hit(self) -> bool:
        return self.entry is not None


class ResponseCache:
    def __init__(
        self,
        backend: MemoryBackend | RedisBackend,
        embedder: Embedder | None = None,
        metrics: CacheMetrics | None = None,
        owner_active: Callable[[str | None], bool] | None = None,
        guard: bool = True,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.metrics = metrics
        self.owner_active = owner_active or (lambda owner: True)
        self.guard = guard  # the near-miss guard on semantic candidates
        if metrics is not None:  # read when /metrics is scraped
            metrics.available.set_function(lambda: 1.0 if self.backend.available else 0.0)

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()

    async def lookup(
        self,
        query: CacheQuery,
        *,
        no_cache: bool = False,
        no_store: bool = False,
        deterministic: bool = True,
    ) -> Lookup:
        started = time.perf_counter()
        lookup = await self._lookup(query, no_cache, no_store, deterministic)
        if self.metrics is not None:
            label = "unavailable" if lookup.reason == "unavailable" else lookup.result
            self.metrics.queries.labels(result=label).inc()
            self.metrics.lookup_seconds.observe(time.perf_counter() - started)
        return lookup

    async def _lookup(
        self, query: CacheQuery, no_cache: bool, no_store: bool, deterministic: bool
    ) -> Lookup:
        policy = query.policy
        if not policy.on:
            return Lookup(BYPASS, reason="off")
        if not deterministic and not policy.nondeterministic:
            return Lookup(BYPASS, reason="sampled")
        if not self.backend.available:
            return Lookup(BYPASS, reason="unavailable")
        may_store = not no_store
        if no_cache:
            return Lookup(BYPASS, may_store=may_store, reason="no-cache")
        try:
            for partition in query.read_partitions:
                entry = await self.backend.get_exact(query.exact_key(partition, query.prompt))
                if entry is not None and self._may_serve(entry, query):
                    return Lookup(HIT_EXACT, entry=entry, similarity=1.0)
            vector = None
            if policy.mode == "semantic" and query.text is not None and self.embedder is not None:
                vector = await self._embed(query.text)
                if vector is not None:
                    for partition in query.read_partitions:
                        found = await self.backend.search(partition, vector, policy.threshold)
                        for entry, similarity in found:
                            if self._may_serve(entry, query) and await self._not_near_miss(
                                entry.text, query.text
                            ):
                                return Lookup(HIT_SEMANTIC, entry=entry, similarity=similarity)
        except CacheUnavailable:
            return Lookup(BYPASS, reason="unavailable")
        return Lookup(MISS, vector=vector, may_store=may_store)

    def _may_serve(self, entry: CacheEntry, query: CacheQuery) -> bool:
        """Never another model version; never the entry of a revoked key."""
        return entry.model == query.model and self.owner_active(entry.owner)

    async def _not_near_miss(self, cached: str | None, later: str) -> bool:
        """The near-miss guard (cache/near_miss.py), unless it is off."""
        if not self.guard:
            return True
        if cached is None:
            return False
        verdict = judge(cached, later)
        if verdict.refused is not None:
            return False
        if verdict.substitution is None:
            return True
        assert self.embedder is not None
        try:
            pair = await embed(self.embedder, list(verdict.substitution))
        except Exception:
            return False
        return float(pair[0] @ pair[1]) >= WORD_THRESHOLD

    async def _embed(self, text: str) -> np.ndarray | None:
        assert self.embedder is not None
        try:
            return (await embed(self.embedder, [text]))[0]
        except Exception as exc:  # the embedding model is busy or gone: exact matches only
            logger.warning("the cache could not embed a prompt, exact matches only: %s", exc)
            return None

    async def store(
        self,
        query: CacheQuery,
        lookup: Lookup,
        answer: Answer,
        source_record_id: str | None,
    ) -> CacheEntry | None:
        """Keep the answer a miss (or a no-cache bypass) produced."""
        if not lookup.may_store or lookup.hit:
            return None
        vector = lookup.vector
        if vector is None and query.policy.mode == "semantic" and query.text is not None:
            if self.embedder is not None and lookup.reason == "no-cache":
                vector = await self._embed(query.text)
        partition = query.write_partition
        entry = CacheEntry(
            partition=partition,
            exact_key=query.exact_key(partition, query.prompt),
            model=query.model,
            owner=query.owner,
            answer=answer,
            expires_at=time.time() + query.policy.ttl_s,
            source_record_id=source_record_id,
            text=query.text,
        )
        try:
            await self.backend.put(entry, vector)
            if self.metrics is not None:
                self.metrics.entries.set(await self.backend.count())
        except CacheUnavailable:
            return None
        return entry

    async def clear(self, model_name: str | None = None, owner: str | None = None) -> int:
        """Delete the entries of a model, of a key's requests, or all; how many went."""
        removed = await self.backend.clear(model_name, owner)
        if self.metrics is not None:
            self.metrics.entries.set(await self.backend.count())
        return removed
