"""Which OpenAI request fields the server honours, which it accepts as
harmless, and which it refuses by name: nothing a client sends is silently
dropped. Also a list of prompts in one completion request."""

from __future__ import annotations

import dataclasses
import json

import httpx
import openai
import pytest

from modelbench import LLM, SamplingParams

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, MODEL_NAME, RunningServer

GREEDY = {"model": MODEL_NAME, "max_tokens": 6, "temperature": 0.0, "ignore_eos": True}
CHAT = {**GREEDY, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def post(server: RunningServer, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=30)


def completion_text(server: RunningServer, **body: object) -> str:
    r = post(server, "/v1/completions", {**GREEDY, **body})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_harmless_fields_are_accepted(server: RunningServer) -> None:
    plain = completion_text(server, prompt="hello")
    assert (
        completion_text(server, prompt="hello", user="alice", best_of=1, logit_bias={}, suffix=None)
        == plain
    )
    r = post(server, "/v1/completions", {**GREEDY, "prompt": "hello", "n": 2, "best_of": 2})
    assert r.status_code == 200 and len(r.json()["choices"]) == 2
    chat = post(server, "/v1/chat/completions", CHAT).json()["choices"][0]["message"]
    for extra in (
        {"user": "alice"},
        {"response_format": {"type": "text"}},
        {"tools": []},
        {"tool_choice": "none"},
        {"parallel_tool_calls": False},
        {"logit_bias": None},
    ):
        r = post(server, "/v1/chat/completions", {**CHAT, **extra})
        assert r.status_code == 200, (extra, r.text)
        assert r.json()["choices"][0]["message"] == chat


def test_vllm_sampling_extras_are_honoured(server: RunningServer) -> None:
    llm = LLM(str(server.model_path), max_model_len=MAX_MODEL_LEN, kv_cache_memory=KV_CACHE_MEMORY)
    greedy = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    ids = llm.generate(["hello"], greedy, use_tqdm=False)[0].outputs[0].token_ids
    stop_id = next(t for j, t in enumerate(ids) if j > 0 and t not in ids[:j])
    extras = {
        "stop_token_ids": [stop_id],
        "include_stop_str_in_output": False,
        "skip_special_tokens": False,
        "min_tokens": 1,
    }
    expected = llm.generate(["hello"], dataclasses.replace(greedy, **extras), use_tqdm=False)[0]
    r = post(server, "/v1/completions", {**GREEDY, "prompt": "hello", "max_tokens": 8, **extras})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" == expected.outputs[0].finish_reason
    assert choice["text"] == expected.outputs[0].text
    assert r.json()["usage"]["completion_tokens"] == len(expected.outputs[0].token_ids) < 8


def test_echo_puts_the_prompt_before_the_text(server: RunningServer) -> None:
    plain = completion_text(server, prompt="hello world")
    assert completion_text(server, prompt="hello world", echo=True) == "hello world" + plain
    ids = server.engine.tokenizer.encode("hello world")
    echoed = completion_text(server, prompt=ids, echo=True)
    assert echoed == server.engine.tokenizer.decode(ids, skip_special_tokens=False) + plain

    with httpx.stream(
        "POST",
        server.base_url + "/v1/completions",
        timeout=30,
        json={**GREEDY, "prompt": "hello world", "echo": True, "stream": True},
    ) as r:
        events = [
            json.loads(line[6:])
            for line in r.iter_lines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
    assert events[0]["choices"][0]["text"] == "hello world"
    assert "".join(e["choices"][0]["text"] for e in events) == "hello world" + plain


def test_a_list_of_prompts_gets_choices_in_prompt_order(
    server: RunningServer, client: openai.OpenAI
) -> None:
    prompts = ["hello", "the cat", "one two three"]
    alone = [completion_text(server, prompt=p) for p in prompts]
    out = client.completions.create(
        model=MODEL_NAME,
        prompt=prompts,
        max_tokens=6,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert [c.text for c in out.choices] == alone
    tokenizer = server.engine.tokenizer
    assert out.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in prompts)
    assert out.usage.completion_tokens == 18

    # n choices per prompt: prompt k's choice i is index k * n + i
    two = client.completions.create(
        model=MODEL_NAME,
        prompt=prompts[:2],
        n=2,
        max_tokens=6,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    assert [c.index for c in two.choices] == [0, 1, 2, 3]
    assert [c.text for c in two.choices] == [alone[0], alone[0], alone[1], alone[1]]

    streamed = client.completions.create(
        model=MODEL_NAME,
        prompt=prompts,
        max_tokens=6,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    texts = ["", "", ""]
    chunks = list(streamed)
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == alone and chunks[-1].usage.prompt_tokens == out.usage.prompt_tokens

    ids = [tokenizer.encode(p) for p in prompts]
    by_ids = post(server, "/v1/completions", {**GREEDY, "prompt": ids}).json()
    assert [c["text"] for c in by_ids["choices"]] == alone
    assert server.handle.outstanding == 0


@pytest.mark.parametrize(
    ("path", "extra", "param", "fragment"),
    [
        (
            "/v1/completions",
            {"logit_bias": {"50256": -100}},
            "logit_bias",
            "logit_bias is not supported",
        ),
        (
            "/v1/completions",
            {"best_of": 3},
            "best_of",
            "best_of is not supported unless it equals n",
        ),
        ("/v1/completions", {"n": 2, "best_of": 1}, "best_of", "equals n"),
        ("/v1/completions", {"suffix": "end."}, "suffix", "suffix is not supported"),
        (
            "/v1/completions",
            {"echo": True, "logprobs": 1},
            "echo",
            "echo is not supported together with",
        ),
        ("/v1/completions", {"max_token": 3}, "max_token", "max_token is not supported"),
        (
            "/v1/completions",
            {"stream_options": {"include_usage": True, "x": 1}},
            "stream_options",
            "stream_options.x is not supported",
        ),
        ("/v1/completions", {"prompt": ["a"] * 129}, "prompt", "at most 128"),
        (
            "/v1/completions",
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools",
            "tools is not supported here: tool calling is chat's",
        ),
        (
            "/v1/chat/completions",
            {"tool_choice": "required"},
            "tool_choice",
            "needs tools to call",
        ),
        (
            "/v1/chat/completions",
            {"functions": [{"name": "f"}]},
            "functions",
            "functions is not supported: it is deprecated; send tools instead",
        ),
        (
            "/v1/chat/completions",
            {"function_call": "auto"},
            "function_call",
            "function_call is not",
        ),
        (
            "/v1/chat/completions",
            {"logit_bias": {"1": 5}},
            "logit_bias",
            "logit_bias is not supported",
        ),
        ("/v1/chat/completions", {"audio": {"voice": "alloy"}}, "audio", "audio is not supported"),
        (
            "/v1/chat/completions",
            {"modalities": ["text", "audio"]},
            "modalities",
            "modalities is not",
        ),
        (
            "/v1/chat/completions",
            {"service_tier": "flex"},
            "service_tier",
            "service_tier is not supported",
        ),
    ],
)
def test_unsupported_fields_are_400_naming_them(
    server: RunningServer, path: str, extra: dict, param: str, fragment: str
) -> None:
    base = (
        {"model": MODEL_NAME}
        if "embeddings" in path
        else (CHAT if "chat" in path else {**GREEDY, "prompt": "hello"})
    )
    r = post(server, path, {**base, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert fragment in error["message"], error["message"]


def test_what_the_openai_client_sends_by_default_works(client: openai.OpenAI) -> None:
    # embeddings.create sends encoding_format="base64" unasked; the rest send only what is given.
    assert len(client.embeddings.create(model=MODEL_NAME, input="a").data) == 1
    assert client.completions.create(model=MODEL_NAME, prompt="a", max_tokens=2).choices
    assert client.chat.completions.create(
        model=MODEL_NAME, max_tokens=2, messages=[{"role": "user", "content": "a"}]
    ).choices
    with pytest.raises(openai.BadRequestError, match="functions is not supported"):
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "a"}],
            functions=[{"name": "f"}],
        )
