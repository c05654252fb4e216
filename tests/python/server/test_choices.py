"""Several choices per request (``n``), streamed and not, and a non-streamed
request whose client walks away."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from .conftest import MAX_MODEL_LEN, MODEL_NAME, RunningServer
from .test_openai_api import wait_for_idle_kv


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def test_n_choices_are_seeded_one_by_one(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=MODEL_NAME,
        prompt="the cat",
        max_tokens=8,
        temperature=1.0,
        seed=7,
        extra_body={"ignore_eos": True},
    )
    out = client.completions.create(n=3, **kwargs)
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in out.choices)
    assert out.usage.completion_tokens == 24 and out.usage.prompt_tokens > 0
    # choice i samples with seed + i: the same text as a single request with that seed
    for i, choice in enumerate(out.choices):
        alone = client.completions.create(n=1, **{**kwargs, "seed": 7 + i})
        assert alone.choices[0].text == choice.text
    assert len({c.text for c in out.choices}) > 1


def test_n_choices_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "hi"}],
        n=2,
        max_tokens=6,
        temperature=1.0,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    texts, finished, usage = {0: "", 1: ""}, {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert finished == {0: "length", 1: "length"}
    assert usage is not None and usage.completion_tokens == 12
    full = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "hi"}],
        n=2,
        max_tokens=6,
        temperature=1.0,
        seed=3,
        extra_body={"ignore_eos": True},
    )
    assert [c.message.content for c in full.choices] == [texts[0], texts[1]]


def test_disconnect_before_a_non_streamed_response_aborts(server: RunningServer) -> None:
    before = server.engine.stats().num_generation_tokens
    max_tokens = MAX_MODEL_LEN - 16
    body = {
        "model": MODEL_NAME,
        "prompt": "hello",
        "max_tokens": max_tokens,
        # The most choices a request may ask for: far more work than the
        # 0.1 s before the client leaves, however fast or busy the host.
        "n": 128,
        "temperature": 1.0,
        "ignore_eos": True,
    }
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.base_url + "/v1/completions", json=body, timeout=0.1)
    assert wait_for_idle_kv(server) == 0.0
    time.sleep(0.2)  # nothing keeps generating once the blocks are free
    generated = server.engine.stats().num_generation_tokens - before
    assert generated < 128 * max_tokens
    assert server.handle.outstanding == 0


def test_bad_n_is_400(server: RunningServer) -> None:
    for n, word in [(0, ">= 1"), (129, "<= 128")]:
        r = httpx.post(
            server.base_url + "/v1/completions",
            json={"model": MODEL_NAME, "prompt": "a", "n": n},
            timeout=30,
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"
        assert word in r.json()["error"]["message"], json.dumps(r.json())
