"""``usage.prompt_tokens_details.cached_tokens``: the prompt tokens the
prefix cache served, on completions and chat, streamed and not."""

from __future__ import annotations

import json

import httpx

from .conftest import MODEL_NAME, RunningServer

# Long enough for several full KV blocks; unique to this file, so the first
# request computes all of it.
PROMPT = "cached tokens test: " + " ".join(f"word{i}" for i in range(30))


def usage(server: RunningServer, path: str, body: dict) -> dict:
    r = httpx.post(server.base_url + path, json={"model": MODEL_NAME, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["usage"]


def test_the_second_request_reports_its_cached_prefix(server: RunningServer) -> None:
    body = {"prompt": PROMPT, "max_tokens": 2, "temperature": 0}
    first = usage(server, "/v1/completions", body)
    second = usage(server, "/v1/completions", body)
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["prompt_tokens_details"]["cached_tokens"]
    block = 16
    # Full blocks of the prompt, less the last token (never a hit: it must be computed).
    assert cached == (second["prompt_tokens"] - 1) // block * block > 0


def test_chat_and_streams_report_it_too(server: RunningServer) -> None:
    chat = {"messages": [{"role": "user", "content": PROMPT + " chat"}], "max_tokens": 2}
    usage(server, "/v1/chat/completions", chat)
    again = usage(server, "/v1/chat/completions", chat)
    assert again["prompt_tokens_details"]["cached_tokens"] > 0
    r = httpx.post(
        server.base_url + "/v1/chat/completions",
        json={
            "model": MODEL_NAME,
            **chat,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=60,
    )
    events = [
        json.loads(line[6:])
        for line in r.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    assert events[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
