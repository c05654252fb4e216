"""The OpenAI-compatible API end to end: the official openai client against
a real server, the 4xx paths with httpx, and a client that walks away."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from modelbench import LLM, SamplingParams
from modelbench.server.registry import ModelState

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, MODEL_NAME, RunningServer

PROMPT = "hello world"


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def test_completion_greedy_matches_llm(server: RunningServer, client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=12,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    llm = LLM(str(server.model_path), max_model_len=MAX_MODEL_LEN, kv_cache_memory=KV_CACHE_MEMORY)
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    expected = llm.generate([PROMPT], params, use_tqdm=False)[0]

    assert (
        out.id.startswith("cmpl-")
        and out.object == "text_completion"
        and out.model == f"{MODEL_NAME}:1"
    )
    assert out.choices[0].text == expected.outputs[0].text
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(expected.prompt_token_ids)
    assert out.usage.completion_tokens == 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + 12


def test_completion_token_prompt_logprobs_and_stop(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=MODEL_NAME,
        prompt=[5, 6, 7, 8],
        max_tokens=5,
        temperature=0.0,
        logprobs=2,
        extra_body={"ignore_eos": True},
    )
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == out.choices[0].text
    assert all(lp_ <= 0 for lp_ in lp.token_logprobs)
    stop = out.choices[0].text[2:4]
    if stop.strip():
        cut = client.completions.create(
            model=MODEL_NAME,
            prompt=[5, 6, 7, 8],
            max_tokens=5,
            temperature=0.0,
            stop=[stop],
            extra_body={"ignore_eos": True},
        )
        assert cut.choices[0].finish_reason == "stop"
        assert cut.choices[0].text == out.choices[0].text[: out.choices[0].text.find(stop)]


def test_completion_stream_concatenates_to_the_whole(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=20,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    whole = client.completions.create(**kwargs)
    chunks = list(
        client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) > 1
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    assert "".join(c.choices[0].text for c in text_chunks) == whole.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat_completion_and_stream(server: RunningServer, client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    kwargs = dict(
        model=MODEL_NAME,
        messages=messages,
        max_tokens=10,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    out = client.chat.completions.create(**kwargs)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == "length"
    tokenizer = server.engine.tokenizer
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert out.usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert out.usage.completion_tokens == 10

    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == out.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["length"]
    assert chunks[-1].usage.completion_tokens == 10


def test_chat_logprobs(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        temperature=0.0,
        logprobs=True,
        top_logprobs=2,
        extra_body={"ignore_eos": True},
    )
    content = out.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 2 for t in content)
    assert "".join(t.token for t in content) == out.choices[0].message.content


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL_NAME, f"{MODEL_NAME}:1"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": MODEL_NAME}, "prompt"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "a", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "a", "top_p": 2}, "top_p"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "a", "temperature": -1}, "temperature"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "a", "n": 129}, "n"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "a", "n": 0}, "n"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "a", "max_tokens": "x"}, "max_tokens"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": [1] * (MAX_MODEL_LEN + 1)}, "prompt"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": [10**6]}, "prompt"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": []}, "prompt"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": "a" * 5000, "stream": True}, "prompt"),
        ("/v1/chat/completions", {"model": MODEL_NAME, "messages": []}, "messages"),
        (
            "/v1/chat/completions",
            {"model": MODEL_NAME, "messages": [{"content": "hi"}]},
            "messages",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "top_k": -5},
            "top_k",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    server: RunningServer, path: str, body: dict, param: str
) -> None:
    r = httpx.post(server.base_url + path, json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


def test_malformed_json_is_400(server: RunningServer) -> None:
    r = httpx.post(
        server.base_url + "/v1/completions",
        content=b'{"model": "x", "prompt": ',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "body" and "JSON" in error["message"]


def test_unknown_model_is_404_listing_the_available(server: RunningServer) -> None:
    for path, extra in [
        ("/v1/completions", {"prompt": "a"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}]}),
    ]:
        r = httpx.post(server.base_url + path, json={"model": "gpt-9", **extra}, timeout=30)
        assert r.status_code == 404
        error = r.json()["error"]
        assert error["param"] == "model" and error["code"] == "model_not_found"
        assert "gpt-9" in error["message"] and MODEL_NAME in error["message"]


def test_unknown_route_has_openai_error_body(server: RunningServer) -> None:
    r = httpx.get(server.base_url + "/v1/nothing", timeout=30)
    assert r.status_code == 404 and "message" in r.json()["error"]


def wait_for_idle_kv(server: RunningServer, timeout_s: float = 10.0) -> float:
    deadline = time.monotonic() + timeout_s
    while (usage := server.engine.stats().scheduler.kv_cache_usage) > 0:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return usage


def test_disconnect_mid_stream_aborts_and_frees_kv(server: RunningServer) -> None:
    before = server.engine.stats().num_generation_tokens
    max_tokens = MAX_MODEL_LEN - 16
    body = {
        "model": MODEL_NAME,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[len("data: ") :])["object"] == "text_completion"
            assert server.engine.stats().scheduler.kv_cache_usage > 0
        # leaving the block closes the connection mid-stream
    assert wait_for_idle_kv(server) == 0.0
    generated = server.engine.stats().num_generation_tokens - before
    assert generated < max_tokens  # aborted, not run to the end


def test_health_ready_and_request_id(server: RunningServer) -> None:
    r = httpx.get(server.base_url + "/health", headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["x-request-id"] == "abc-123"
    r = httpx.get(server.base_url + "/ready")
    assert r.status_code == 200 and len(r.headers["x-request-id"]) == 32
    r = httpx.post(
        server.base_url + "/v1/completions",
        json={"model": "nope", "prompt": "a"},
        headers={"X-Request-ID": "err-1"},
    )
    assert r.status_code == 404 and r.headers["x-request-id"] == "err-1"


def test_ready_is_503_while_the_engine_is_not_loaded(server: RunningServer) -> None:
    handle = server.handle
    handle.state = ModelState.LOADING
    try:
        assert httpx.get(server.base_url + "/ready").status_code == 503
        r = httpx.post(
            server.base_url + "/v1/completions", json={"model": MODEL_NAME, "prompt": "a"}
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
    finally:
        handle.state = ModelState.READY


def test_chat_content_parts_and_chunk_deltas_leave_out_unset_fields(server: RunningServer) -> None:
    text = {
        "model": MODEL_NAME,
        "max_tokens": 3,
        "temperature": 0.0,
        "ignore_eos": True,
        "messages": [{"role": "user", "content": "hi there"}],
    }
    parts = {
        **text,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
            }
        ],
    }
    a = httpx.post(server.base_url + "/v1/chat/completions", json=text, timeout=30).json()
    b = httpx.post(server.base_url + "/v1/chat/completions", json=parts, timeout=30).json()
    assert a["choices"][0]["message"] == b["choices"][0]["message"]

    with httpx.stream(
        "POST", server.base_url + "/v1/chat/completions", json={**text, "stream": True}, timeout=30
    ) as r:
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert all(set(d) == {"content"} for d in deltas[1:-1]) and deltas[-1] == {}
