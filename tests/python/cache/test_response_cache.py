"""ResponseCache over the in-process backend: exact and semantic hits (the
real all-MiniLM-L6-v2), the near-miss guard, what is never cached, tenancy,
revoked keys, versions, TTL, LRU eviction and clearing."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from modelbench.cache.entry import Answer
from modelbench.cache.fingerprint import build_query
from modelbench.cache.memory_backend import MemoryBackend
from modelbench.cache.metrics import CacheMetrics
from modelbench.cache.near_miss import judge
from modelbench.cache.response_cache import ResponseCache
from modelbench.cache.settings import CachePolicy
from modelbench.cache.vector_index import VectorIndex

ANSWER = Answer(["Paris."], ["stop"], 7, 2)
SEMANTIC = CachePolicy(mode="semantic")


def q(
    text: str,
    owner: str | None = "key_a",
    policy: CachePolicy = SEMANTIC,
    model: str = "m:1",
    share: bool = False,
    **params: Any,
):
    return build_query(
        model=model,
        model_fingerprint="",
        endpoint="/v1/completions",
        parameters={"temperature": 0, "max_tokens": 16, **params},
        prompt=text,
        owner=owner,
        share=share,
        policy=policy,
    )


async def remember(cache: ResponseCache, query, answer: Answer = ANSWER) -> None:
    found = await cache.lookup(query)
    assert found.result == "miss"
    assert await cache.store(query, found, answer, "req_source") is not None


def run(coro):
    return asyncio.run(coro)


def test_an_exact_repeat_hits_and_names_its_source() -> None:
    async def go() -> None:
        cache = ResponseCache(MemoryBackend(10))
        await remember(cache, q("What is the capital of France?", policy=CachePolicy("exact")))
        hit = await cache.lookup(q("What is the capital of France?", policy=CachePolicy("exact")))
        assert hit.result == "hit-exact"
        assert hit.entry is not None and hit.entry.answer == ANSWER
        assert hit.entry.source_record_id == "req_source"
        other = await cache.lookup(q("What's the capital of France?", policy=CachePolicy("exact")))
        assert other.result == "miss"  # exact mode: no paraphrases

    run(go())


def test_a_paraphrase_hits_semantically_and_a_near_miss_does_not(minilm) -> None:
    async def go() -> None:
        cache = ResponseCache(MemoryBackend(10), minilm)
        await remember(cache, q("How do I reverse a list in Python?"))
        hit = await cache.lookup(q("How can I reverse a list in Python?"))
        assert hit.result == "hit-semantic" and hit.similarity is not None
        assert SEMANTIC.threshold <= hit.similarity < 1.0
        for near in (
            "How do I reverse a list in JavaScript?",
            "How do I reverse a string in Python?",
            "How do I not reverse a list in Python?",
        ):
            assert (await cache.lookup(q(near))).result == "miss", near

    run(go())


def test_the_guard_refuses_what_the_embedding_cannot_tell_apart(minilm) -> None:
    async def go() -> None:
        for guard, expected in ((False, "hit-semantic"), (True, "miss")):
            cache = ResponseCache(MemoryBackend(10), minilm, guard=guard)
            await remember(cache, q("Summarize chapter 1 of Moby Dick."))
            found = await cache.lookup(q("Summarize chapter 2 of Moby Dick."))
            assert found.result == expected  # cosine 0.979: only the guard tells them apart

    run(go())


@pytest.mark.parametrize(
    "cached,later,reason",
    [
        ("What is 12 times 12?", "What is 12 times 13?", "a number differs"),
        ("Is coffee good?", "Isn't coffee good?", "a negation differs"),
        ("Is it safe to eat raw eggs?", "Is it unsafe to eat raw eggs?", "opposite (prefix"),
        ("Convert a string to an integer", "Convert an integer to a string", "swap sides"),
        ("How do I zoom in on a PDF?", "How do I zoom out on a PDF?", "opposite particles"),
        (
            "Is it legal to record a call?",
            "Is it illegal to record a call?",
            "prefix: legal / illegal",
        ),
        (
            "How do I import data into Excel?",
            "How do I export data from Excel?",
            "opposite (prefix",
        ),
        ("Why was he so careful?", "Why was he so careless?", "(suffix"),
        (
            "What is the largest ocean?",
            "What is the smallest ocean?",
            "(antonym: largest / smallest)",
        ),
        ("How do I convert a PDF to Word?", "How do I convert a Word file to PDF?", "swap sides"),
        ("What is the capital of France?", "What is the capital of Spain?", "name was replaced"),
        ("How do I reset my iPhone?", "How do I reset my iPad?", "name was replaced"),
    ],
)
def test_near_miss_rules(cached: str, later: str, reason: str) -> None:
    verdict = judge(cached, later)
    assert verdict.refused is not None and reason in verdict.refused
    assert judge(cached, cached).refused is None


def test_substitutions_are_compared_and_additions_pass() -> None:
    assert judge("How do I bake a cake?", "How do I bake bread?").substitution == ("cake", "bread")
    assert judge("What is DNA?", "What is DNA, briefly?") == judge("a", "a")
    # a word kept in other case, and names moved rather than replaced, are no near miss
    assert (
        judge("How do I install Docker on Ubuntu?", "Ubuntu: how can I install docker?").refused
        is None
    )
    # a number the same, moved: a paraphrase
    assert judge("Convert 5 km to miles.", "How many miles is 5 km?").refused is None


def test_sampled_requests_are_not_cached_unless_the_model_says_so() -> None:
    async def go() -> None:
        cache = ResponseCache(MemoryBackend(10))
        found = await cache.lookup(q("hi", policy=CachePolicy("exact")), deterministic=False)
        assert found.result == "bypass" and not found.may_store
        sampled = CachePolicy("exact", nondeterministic=True)
        found = await cache.lookup(q("hi", policy=sampled), deterministic=False)
        assert found.result == "miss" and found.may_store

    run(go())


def test_no_cache_skips_the_lookup_and_no_store_keeps_the_answer_out() -> None:
    async def go() -> None:
        exact = CachePolicy("exact")
        cache = ResponseCache(MemoryBackend(10))
        await remember(cache, q("hi", policy=exact))
        skipped = await cache.lookup(q("hi", policy=exact), no_cache=True)
        assert skipped.result == "bypass" and skipped.may_store
        kept_out = await cache.lookup(q("other", policy=exact), no_store=True)
        assert kept_out.result == "miss"
        assert await cache.store(q("other", policy=exact), kept_out, ANSWER, "r") is None
        assert (await cache.lookup(q("other", policy=exact))).result == "miss"

    run(go())


def test_no_hit_across_tenants_unless_shared_and_never_from_a_revoked_key(minilm) -> None:
    async def go() -> None:
        revoked: set[str] = set()
        cache = ResponseCache(MemoryBackend(10), minilm, owner_active=lambda o: o not in revoked)
        await remember(cache, q("What is the capital of France?", owner="key_a"))
        for text in ("What is the capital of France?", "What's the capital of France?"):
            assert (await cache.lookup(q(text, owner="key_b"))).result == "miss"
            assert (await cache.lookup(q(text, owner=None))).result == "miss"
            assert (await cache.lookup(q(text, owner="key_a"))).hit
        await remember(cache, q("Who wrote Hamlet?", owner="key_c", share=True))
        assert (await cache.lookup(q("Who wrote Hamlet?", owner="key_b"))).result == "hit-exact"
        revoked.add("key_c")
        assert (await cache.lookup(q("Who wrote Hamlet?", owner="key_b"))).result == "miss"

    run(go())


def test_an_entry_never_serves_another_model_version() -> None:
    async def go() -> None:
        exact = CachePolicy("exact")
        cache = ResponseCache(MemoryBackend(10))
        await remember(cache, q("hi", policy=exact, model="m:1"))
        assert (await cache.lookup(q("hi", policy=exact, model="m:2"))).result == "miss"

    run(go())


def test_entries_expire_after_their_ttl() -> None:
    async def go() -> None:
        short = CachePolicy("exact", ttl_s=0.2)
        cache = ResponseCache(MemoryBackend(10))
        await remember(cache, q("hi", policy=short))
        assert (await cache.lookup(q("hi", policy=short))).hit
        await asyncio.sleep(0.25)
        assert (await cache.lookup(q("hi", policy=short))).result == "miss"
        assert await cache.backend.count() == 0

    run(go())


def test_the_least_recently_used_entry_is_evicted_first() -> None:
    async def go() -> None:
        exact = CachePolicy("exact")
        cache = ResponseCache(MemoryBackend(3))
        for text in ("a", "b", "c"):
            await remember(cache, q(text, policy=exact))
        assert (await cache.lookup(q("a", policy=exact))).hit  # a is now the most recent
        await remember(cache, q("d", policy=exact))
        assert await cache.backend.count() == 3
        assert (await cache.lookup(q("b", policy=exact))).result == "miss"
        for text in ("a", "c", "d"):
            assert (await cache.lookup(q(text, policy=exact))).hit, text

    run(go())


def test_clear_by_model_by_key_and_all() -> None:
    async def go() -> None:
        exact = CachePolicy("exact")
        cache = ResponseCache(MemoryBackend(10))
        await remember(cache, q("a", policy=exact, model="m:1", owner="key_a"))
        await remember(cache, q("b", policy=exact, model="m:1", owner="key_b"))
        await remember(cache, q("c", policy=exact, model="other:1", owner="key_a"))
        assert await cache.clear(owner="key_b") == 1
        assert await cache.clear(model_name="other") == 1
        assert (await cache.lookup(q("a", policy=exact, owner="key_a"))).hit
        assert await cache.clear() == 1
        assert await cache.backend.count() == 0

    run(go())


def test_metrics_count_results_and_entries() -> None:
    async def go() -> CollectorRegistry:
        registry = CollectorRegistry()
        exact = CachePolicy("exact")
        cache = ResponseCache(MemoryBackend(10), metrics=CacheMetrics(registry))
        await remember(cache, q("a", policy=exact))
        await cache.lookup(q("a", policy=exact))
        await cache.lookup(q("a", policy=exact), no_cache=True)
        return registry

    registry = run(go())
    value = registry.get_sample_value
    assert value("modelbench:cache_queries_total", {"result": "miss"}) == 1
    assert value("modelbench:cache_queries_total", {"result": "hit-exact"}) == 1
    assert value("modelbench:cache_queries_total", {"result": "bypass"}) == 1
    assert value("modelbench:cache_lookup_seconds_count") == 3
    assert value("modelbench:cache_entries") == 1


def test_the_vector_index_finds_neighbours_among_many() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(384)
    for i, v in enumerate(vectors):
        index.add(f"e{i}", v)
    found = [index.search(vectors[i], 1)[0] for i in range(0, 2000, 97)]
    assert all(
        entry == f"e{i}" and sim > 0.999 for (entry, sim), i in zip(found, range(0, 2000, 97))
    )
    index.remove("e0")
    assert index.search(vectors[0], 1)[0][0] != "e0" and len(index) == 1999
    with pytest.raises(ValueError, match="same model"):
        index.add("x", np.ones(10, dtype=np.float32))
