"""Structured outputs over HTTP on the default model, with the official
openai client: response_format json_schema over the 30+ schemas (greedy and
sampled, streamed and not), json_object, vLLM's guided_* and
structured_outputs fields on chat and completions, the task API's
parameters, and a 400 naming the field for every bad constraint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from modelbench.config import Settings

from ..engine.guided_schemas import PROMPT, SCHEMAS
from .conftest import RunningServer, free_port, run_server

MODEL = "smol"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("structured")
    settings = Settings(
        port=free_port(),
        served_model_name=MODEL,
        max_model_len=1024,
        kv_cache_memory=256 * 1024 * 1024,
        database_url=f"sqlite:///{root / 'store.db'}",
    )
    with run_server(settings, Path(".")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def schema_format(name: str) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True},
    }


def ask(client: openai.OpenAI, name: str, temperature: float, stream: bool) -> tuple[str, str]:
    kwargs = dict(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT.format(name=name)}],
        max_tokens=320,
        temperature=temperature,
        seed=11,
        response_format=schema_format(name),
    )
    if not stream:
        out = client.chat.completions.create(**kwargs)
        return out.choices[0].message.content or "", out.choices[0].finish_reason
    text, reason = "", ""
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            reason = chunk.choices[0].finish_reason or reason
    return text, reason


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_every_schema_parses_and_validates(
    client: openai.OpenAI, temperature: float, stream: bool
) -> None:
    with ThreadPoolExecutor(16) as pool:  # they share the engine's batches
        answers = list(pool.map(lambda n: ask(client, n, temperature, stream), SCHEMAS))
    for name, (text, reason) in zip(SCHEMAS, answers):
        assert reason == "stop", (name, text)
        jsonschema.validate(json.loads(text), SCHEMAS[name])


def test_json_object_and_vllm_fields(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Which is the capital of France?"}]

    def chat(**extra: object) -> str:
        out = client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=120, temperature=0.0, **extra
        )
        assert out.choices[0].finish_reason == "stop"
        return out.choices[0].message.content or ""

    assert isinstance(json.loads(chat(response_format={"type": "json_object"})), dict)
    assert chat(response_format={"type": "text"})  # no constraint
    assert chat(extra_body={"guided_choice": ["Paris", "Lyon"]}) in ("Paris", "Lyon")
    assert chat(extra_body={"guided_regex": "[A-Z][a-z]{2,9}"}).isalpha()
    assert chat(extra_body={"guided_grammar": 'start: "city=" ("Paris" | "Nice")'}) in (
        "city=Paris",
        "city=Nice",
    )
    value = json.loads(chat(extra_body={"guided_json": SCHEMAS["enum"]}))
    jsonschema.validate(value, SCHEMAS["enum"])
    assert chat(extra_body={"structured_outputs": {"choice": ["yes", "no"]}}) in ("yes", "no")
    # Completions take them too.
    out = client.completions.create(
        model=MODEL,
        prompt="The answer is",
        max_tokens=60,
        temperature=0.0,
        extra_body={"guided_json": SCHEMAS["flat"]},
    )
    jsonschema.validate(json.loads(out.choices[0].text), SCHEMAS["flat"])


def test_the_task_api_takes_constraints(server: RunningServer) -> None:
    r = httpx.post(
        f"{server.base_url}/v1/infer",
        json={
            "task": "generate",
            "text": "Is the sky blue? Answer:",
            "parameters": {"guided_choice": ["yes", "no"], "max_tokens": 8},
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"] in ("yes", "no")
    bad = httpx.post(
        f"{server.base_url}/v1/infer",
        json={"task": "generate", "text": "x", "parameters": {"guided_regex": "(unclosed"}},
        timeout=60,
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["param"] == "parameters.guided_regex"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": 5}},
                }
            },
            "response_format.json_schema.schema",
            "invalid_guided_constraint",
        ),
        ({"guided_regex": "[a-"}, "guided_regex", "invalid_guided_constraint"),
        ({"guided_grammar": "start: nowhere"}, "guided_grammar", "invalid_guided_constraint"),
        ({"guided_json": '{"type": '}, "guided_json", "invalid_guided_constraint"),
        ({"guided_choice": ["a"], "guided_regex": "b"}, "guided_choice", "conflicting_fields"),
        (
            {"response_format": {"type": "json_object"}, "guided_choice": ["a"]},
            "guided_choice",
            "conflicting_fields",
        ),
        ({"guided_choice": ["a", "b"], "ignore_eos": True}, "ignore_eos", "conflicting_fields"),
        ({"guided_choice": ["a", "b"], "min_tokens": 2}, "min_tokens", "conflicting_fields"),
        ({"response_format": {"type": "json_schema"}}, "response_format", None),
        ({"response_format": {"type": "xml"}}, "response_format", None),
        ({"guided_choice": []}, "guided_choice", None),
    ],
)
def test_a_bad_constraint_is_a_400_naming_the_field(
    server: RunningServer, body: dict, param: str, code: str | None
) -> None:
    r = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            **body,
        },
        timeout=60,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    # The server keeps serving.
    ok = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=60,
    )
    assert ok.status_code == 200
