"""POST /tokenize and /detokenize in vLLM's shapes, against the model's own
tokenizer (and, for messages, its chat template as transformers renders it)."""

from __future__ import annotations

import httpx
import pytest
from transformers import AutoTokenizer

from .conftest import MODEL_NAME, RunningServer


def post(server: RunningServer, path: str, **body: object) -> httpx.Response:
    return httpx.post(server.base_url + path, json={"model": MODEL_NAME, **body}, timeout=30)


def test_a_prompt_round_trips(server: RunningServer) -> None:
    reference = AutoTokenizer.from_pretrained(server.model_path)
    r = post(server, "/tokenize", prompt="Hello world", return_token_strs=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tokens"] == reference("Hello world")["input_ids"]
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] > 0
    assert "".join(body["token_strs"]).endswith("world")
    back = post(server, "/detokenize", tokens=body["tokens"])
    assert back.status_code == 200 and back.json()["prompt"].endswith("Hello world")


def test_messages_go_through_the_chat_template(server: RunningServer) -> None:
    reference = AutoTokenizer.from_pretrained(server.model_path)
    messages = [{"role": "user", "content": "Hi there"}]
    expected = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(expected, list):  # transformers 5 answers a BatchEncoding
        expected = expected["input_ids"]
    r = post(server, "/tokenize", messages=messages)
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == list(expected)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {}, "prompt"),
        ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
        ("/detokenize", {"tokens": [10**9]}, "tokens"),
        ("/detokenize", {"tokens": [-1]}, "tokens"),
    ],
)
def test_bad_requests_name_the_field(
    server: RunningServer, path: str, body: dict, param: str
) -> None:
    r = post(server, path, **body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
