"""The cache in front of ``modelbench gateway``: a remote name's answer is
kept and served again without asking the upstream (a real faulty_upstream
process counts what reaches it), streamed or not; a request whose answer the
upstream may sample (no explicit temperature 0 or seed) is forwarded."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from ..gateway.test_gateway_faults import Gateway, Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream(text="the cached words")
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gateway(upstream: Upstream) -> Iterator[Gateway]:
    gw = Gateway(["--upstream", f"m={upstream.base}", "--cache", "exact"])
    yield gw
    gw.stop()


def reached(upstream: Upstream) -> int:
    return httpx.get(upstream.url + "/stats", timeout=5).json()["requests"]


def text_of(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        pieces = []
        for line in response.text.splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    pieces.append(choice["delta"].get("content") or "")
        return "".join(pieces)
    return response.json()["choices"][0]["message"]["content"]


def test_a_remote_answer_is_served_again_without_the_upstream(
    gateway: Gateway, upstream: Upstream
) -> None:
    before = reached(upstream)
    miss = gateway.chat("m", temperature=0, messages=[{"role": "user", "content": "one"}])
    assert miss.status_code == 200, miss.text
    assert miss.headers["x-modelbench-cache"] == "miss"
    hit = gateway.chat("m", temperature=0, messages=[{"role": "user", "content": "one"}])
    assert hit.headers["x-modelbench-cache"] == "hit-exact"
    assert text_of(hit) == text_of(miss) == "the cached words"
    assert hit.json()["model"] == "m"
    streamed = gateway.chat(
        "m", stream=True, temperature=0, messages=[{"role": "user", "content": "one"}]
    )
    assert streamed.headers["x-modelbench-cache"] == "hit-exact"
    assert text_of(streamed) == "the cached words"
    assert reached(upstream) == before + 1


def test_a_streamed_remote_miss_is_kept_when_the_upstream_counts_its_tokens(
    gateway: Gateway, upstream: Upstream
) -> None:
    before = reached(upstream)
    body = {"temperature": 0, "messages": [{"role": "user", "content": "two"}]}
    uncounted = gateway.chat("m", stream=True, **body)  # no usage: nothing to answer it with
    assert uncounted.headers["x-modelbench-cache"] == "miss"
    counted = {"stream_options": {"include_usage": True}}
    miss = gateway.chat("m", stream=True, **body, **counted)
    assert miss.headers["x-modelbench-cache"] == "miss"
    assert text_of(miss) == "the cached words"
    hit = gateway.chat("m", **body)
    assert hit.headers["x-modelbench-cache"] == "hit-exact"
    assert text_of(hit) == "the cached words"
    assert hit.json()["usage"]["completion_tokens"] == 3
    assert reached(upstream) == before + 2


def test_a_request_the_upstream_may_sample_is_forwarded(
    gateway: Gateway, upstream: Upstream
) -> None:
    before = reached(upstream)
    for _ in range(2):
        sampled = gateway.chat("m", messages=[{"role": "user", "content": "three"}])
        assert sampled.headers["x-modelbench-cache"] == "bypass"
    assert reached(upstream) == before + 2
