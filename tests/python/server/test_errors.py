"""Every error is OpenAI's body with a 4xx naming the field: a wrong method,
and a sweep of wrong types and values over every field of completions, chat,
embeddings and the task API. No input yields a 500."""

from __future__ import annotations

import httpx
import pytest

from .conftest import MODEL_NAME, RunningServer

# What a confused client might put in any field.
BAD_VALUES = {
    "string": "x",
    "negative": -5,
    "huge": 10**30,
    "null": None,
    "list": ["a"],
    "nested": {"a": {"b": [1]}},
}

ENDPOINTS = {
    "/v1/completions": (
        {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2},
        [
            "model",
            "prompt",
            "n",
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "seed",
            "stop",
            "stop_token_ids",
            "min_tokens",
            "include_stop_str_in_output",
            "skip_special_tokens",
            "ignore_eos",
            "stream",
            "stream_options",
            "user",
            "logit_bias",
            "max_tokens",
            "logprobs",
            "echo",
            "best_of",
            "suffix",
            "response_format",
            "guided_json",
            "guided_regex",
            "guided_choice",
            "guided_grammar",
            "structured_outputs",
        ],
    ),
    "/v1/chat/completions": (
        {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        [
            "model",
            "messages",
            "n",
            "temperature",
            "top_p",
            "top_k",
            "seed",
            "stop",
            "stream",
            "stream_options",
            "user",
            "logit_bias",
            "max_tokens",
            "max_completion_tokens",
            "logprobs",
            "top_logprobs",
            "response_format",
            "guided_json",
            "guided_regex",
            "guided_choice",
            "guided_grammar",
            "structured_outputs",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "functions",
            "function_call",
        ],
    ),
    "/v1/embeddings": (
        {"model": MODEL_NAME, "input": "hi"},
        ["model", "input", "encoding_format", "dimensions", "user"],
    ),
    "/v1/infer": (
        {"model": MODEL_NAME, "text": "hi", "task": "generate", "parameters": {"max_tokens": 2}},
        ["model", "text", "task", "parameters"],
    ),
}

# The (path, field, kind) that make a valid request: null where it means
# "the default", a string or a list where the field takes one, numbers the
# engine takes (a temperature of 1e30 samples uniformly; a huge repetition
# penalty is still a penalty). Every other case must be refused by name.
NOT_NULLABLE = {"model", "prompt", "messages", "input", "encoding_format", "task", "text"}
VALID = {
    *(
        (path, field, "null")
        for path, (_, fields) in ENDPOINTS.items()
        for field in fields
        if field not in NOT_NULLABLE
    ),
    ("/v1/infer", "model", "null"),  # without a model, the first that serves the task answers
    *(
        (path, "user", "string")
        for path in ("/v1/completions", "/v1/chat/completions", "/v1/embeddings")
    ),
    *(
        (path, "stop", kind)
        for path in ("/v1/completions", "/v1/chat/completions")
        for kind in ("string", "list")
    ),
    *(
        (path, field, "huge")
        for path in ("/v1/completions", "/v1/chat/completions")
        for field in ("temperature", "repetition_penalty")
        if field in ENDPOINTS[path][1]
    ),
    ("/v1/completions", "prompt", "string"),
    ("/v1/completions", "prompt", "list"),
    ("/v1/embeddings", "input", "string"),
    ("/v1/embeddings", "input", "list"),
    ("/v1/infer", "text", "string"),
    # A regex "x", a choice of ["a"] and a schema with only unknown keywords
    # (any JSON value, as JSON Schema reads it) are constraints a model can follow.
    *(
        (path, field, kind)
        for path in ("/v1/completions", "/v1/chat/completions")
        for field, kind in (
            ("guided_regex", "string"),
            ("guided_choice", "list"),
            ("guided_json", "nested"),
        )
    ),
}


def sweep_cases() -> list[tuple[str, str, str]]:
    return [
        (path, field, kind)
        for path, (_, fields) in ENDPOINTS.items()
        for field in fields
        for kind in BAD_VALUES
    ]


@pytest.mark.parametrize(("path", "field", "kind"), sweep_cases())
def test_wrong_values_are_4xx_naming_the_field(
    server: RunningServer, path: str, field: str, kind: str
) -> None:
    base, _ = ENDPOINTS[path]
    r = httpx.post(server.base_url + path, json={**base, field: BAD_VALUES[kind]}, timeout=60)
    if (path, field, kind) in VALID:
        assert r.status_code == 200, r.text
        return
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert error["param"] == field or error["param"].startswith(field + "."), error  # parameters.a
    assert field in error["message"], error
    assert error["type"] in {"invalid_request_error", "not_found_error"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/completions"),
        ("PUT", "/v1/chat/completions"),
        ("DELETE", "/v1/embeddings"),
        ("GET", "/v1/infer"),
        ("POST", "/v1/models"),
        ("POST", "/health"),
    ],
)
def test_a_wrong_method_is_405_with_an_openai_error(
    server: RunningServer, method: str, path: str
) -> None:
    r = httpx.request(method, server.base_url + path, timeout=30)
    assert r.status_code == 405, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "Method Not Allowed" in error["message"]
    assert method not in r.headers["allow"] and r.headers["allow"]


def test_top_logprobs_without_logprobs_is_refused(server: RunningServer) -> None:
    base, _ = ENDPOINTS["/v1/chat/completions"]
    r = httpx.post(
        server.base_url + "/v1/chat/completions", json={**base, "top_logprobs": 2}, timeout=30
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"
    assert "logprobs: true" in r.json()["error"]["message"]
