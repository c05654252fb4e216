"""The Redis backend against a real redis-server (tests/python/redis_server.py):
two processes' caches (each its own connection and vector index) share
entries, Redis expires them and evicts past max_entries, and when Redis goes
away the cache turns off with a warning and the metric, then comes back."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
from prometheus_client import CollectorRegistry

from modelbench.cache.entry import Answer
from modelbench.cache.fingerprint import build_query
from modelbench.cache.metrics import CacheMetrics
from modelbench.cache.redis_backend import PREFIX, RedisBackend
from modelbench.cache.response_cache import ResponseCache
from modelbench.cache.settings import CachePolicy

from ..redis_server import RedisServer

ANSWER = Answer(["Paris."], ["stop"], 7, 2)


def q(text: str, policy: CachePolicy, owner: str | None = "key_a"):
    return build_query(
        model="m:1",
        model_fingerprint="",
        endpoint="/v1/completions",
        parameters={"temperature": 0},
        prompt=text,
        owner=owner,
        share=False,
        policy=policy,
    )


async def remember(cache: ResponseCache, query) -> None:
    found = await cache.lookup(query)
    assert found.result == "miss", found
    assert await cache.store(query, found, ANSWER, "req_1") is not None


def test_two_processes_share_exact_and_semantic_entries(redis_server: RedisServer, minilm) -> None:
    async def go() -> None:
        policy = CachePolicy("semantic")
        one = ResponseCache(RedisBackend(redis_server.url, 100), minilm)
        two = ResponseCache(RedisBackend(redis_server.url, 100), minilm)
        for cache in (one, two):
            await cache.start()
        try:
            await remember(one, q("How do I reverse a list in Python?", policy))
            exact = await two.lookup(q("How do I reverse a list in Python?", policy))
            assert exact.result == "hit-exact" and exact.entry is not None
            assert exact.entry.answer == ANSWER and exact.entry.source_record_id == "req_1"
            semantic = await two.lookup(q("How can I reverse a list in Python?", policy))
            assert semantic.result == "hit-semantic"
            other_key = await two.lookup(q("How do I reverse a list in Python?", policy, "key_b"))
            assert other_key.result == "miss"
            assert await two.clear(owner="key_a") == 1
            assert (await one.lookup(q("How can I reverse a list in Python?", policy))).result == (
                "miss"
            )
        finally:
            for cache in (one, two):
                await cache.close()

    asyncio.run(go())


def test_redis_expires_entries_and_evicts_the_least_recently_used(
    redis_server: RedisServer,
) -> None:
    async def go() -> None:
        short = CachePolicy("exact", ttl_s=0.3)
        cache = ResponseCache(RedisBackend(redis_server.url, 3))
        await cache.start()
        try:
            await remember(cache, q("ttl", short))
            client = redis.Redis(port=redis_server.port)
            ttls = [client.pttl(k) for k in client.keys(PREFIX + "e:*")]
            assert ttls and all(0 < t <= 300 for t in ttls)  # Redis holds the expiry
            await asyncio.sleep(0.4)
            assert (await cache.lookup(q("ttl", short))).result == "miss"
            exact = CachePolicy("exact")
            for text in ("a", "b", "c"):
                await remember(cache, q(text, exact))
            assert (await cache.lookup(q("a", exact))).hit
            await remember(cache, q("d", exact))
            assert (await cache.lookup(q("b", exact))).result == "miss"  # evicted
            for text in ("a", "c", "d"):
                assert (await cache.lookup(q(text, exact))).hit, text
        finally:
            await cache.close()

    asyncio.run(go())


def test_redis_going_away_turns_the_cache_off_until_it_answers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> CollectorRegistry:
        registry = CollectorRegistry()
        exact = CachePolicy("exact")
        backend = RedisBackend(redis_server.url, 100, check_interval_s=0.1)
        cache = ResponseCache(backend, metrics=CacheMetrics(registry))
        await cache.start()
        try:
            await remember(cache, q("a", exact))
            redis_server.kill()
            found = await cache.lookup(q("a", exact))
            assert found.result == "bypass" and found.reason == "unavailable"
            assert registry.get_sample_value("modelbench:cache_available") == 0
            assert not found.may_store
            again = await cache.lookup(q("b", exact))  # fails at once, no wait on a dead server
            assert again.result == "bypass"
            redis_server.start()  # empty: it kept nothing on disk
            for _ in range(50):
                if backend.available:
                    break
                await asyncio.sleep(0.05)
            assert backend.available
            assert (await cache.lookup(q("a", exact))).result == "miss"
            assert registry.get_sample_value("modelbench:cache_available") == 1
        finally:
            await cache.close()
        return registry

    with caplog.at_level(logging.INFO, logger="modelbench.cache"):
        registry = asyncio.run(go())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("response cache is off" in m for m in messages) == 1  # logged once
    assert any("back on" in m for m in messages)
    assert (
        registry.get_sample_value("modelbench:cache_queries_total", {"result": "unavailable"}) == 2
    )


def test_a_bad_cache_url_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="--cache-url http://:\\*\\*\\*@x/0"):
        RedisBackend("http://:pw@x/0", 10)
