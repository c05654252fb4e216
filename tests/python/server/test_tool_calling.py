"""Tool calling end to end: the official openai client against a real server
on the default model (SmolLM2-135M-Instruct, whose chat template knows no
tools, so the default Hermes format renders them): a forced call (named or
``required``) whose arguments validate against the function's schema,
streamed as OpenAI's tool-call deltas and not; the usual loop (ask, get a
call, send the result back, get the answer); and every way a request's tool
fields can be wrong, each a 400 naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from modelbench.config import DEFAULT_MODEL_NAME, Settings

from .conftest import RunningServer, free_port, run_server

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 40}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]
GREEDY: dict[str, Any] = {"model": DEFAULT_MODEL_NAME, "temperature": 0.0, "max_tokens": 80}


@pytest.fixture(scope="module")
def default_server() -> Iterator[RunningServer]:
    settings = Settings(port=free_port(), max_model_len=1024, kv_cache_memory=128 * 1024 * 1024)
    with run_server(settings, Path("default")) as running:
        yield running


@pytest.fixture(scope="module")
def client(default_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{default_server.base_url}/v1", api_key="x", max_retries=0)


def check_calls(calls: list[Any], names: set[str]) -> None:
    """Every call is of one of ``names`` with arguments valid for its schema."""
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def streamed_calls(chunks: Iterator[Any]) -> tuple[list[dict[str, str]], str | None, str]:
    """The calls a stream's tool-call deltas build (checking that each call's
    first delta carries its id, type and name), its finish reason and content."""
    calls: dict[int, dict[str, str]] = {}
    reason, content = None, ""
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            if delta.index not in calls:
                assert delta.id and delta.type == "function" and delta.function.name
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
            else:
                assert delta.id is None and delta.function.name is None
            calls[delta.index]["arguments"] += delta.function.arguments or ""
        reason = choice.finish_reason or reason
    return [calls[i] for i in sorted(calls)], reason, content


def test_models_say_how_tools_are_rendered(default_server: RunningServer) -> None:
    cards = httpx.get(f"{default_server.base_url}/v1/models").json()["data"]
    chat = [c for c in cards if c["root"] == DEFAULT_MODEL_NAME]
    assert len(chat) == 2  # the name and its version
    for card in chat:
        assert card["tool_format"] == "hermes" and card["tool_call_parser"] == "hermes"
    assert all(c["tool_format"] is None for c in cards if c not in chat)  # the embedding model


@pytest.mark.parametrize(
    "choice",
    [{"type": "function", "function": {"name": "get_weather"}}, "required"],
    ids=["named", "required"],
)
def test_forced_calls_follow_the_schema_streamed_or_not(client: openai.OpenAI, choice: Any) -> None:
    out = client.chat.completions.create(
        messages=QUESTION, tools=TOOLS, tool_choice=choice, **GREEDY
    )
    message = out.choices[0].message
    names = {"get_weather"} if isinstance(choice, dict) else set(SCHEMAS)
    check_calls(message.tool_calls or [], names)
    assert message.content is None and out.choices[0].finish_reason == "tool_calls"

    stream = client.chat.completions.create(
        messages=QUESTION, tools=TOOLS, tool_choice=choice, stream=True, **GREEDY
    )
    calls, reason, content = streamed_calls(stream)
    assert reason == "tool_calls" and content == ""
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in message.tool_calls or []
    ]


def test_one_call_unless_parallel_calls_are_allowed(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        messages=QUESTION, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, **GREEDY
    )
    calls = out.choices[0].message.tool_calls or []
    assert len(calls) == 1
    check_calls(calls, set(SCHEMAS))


def test_sampled_forced_calls_are_valid(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        messages=QUESTION,
        tools=TOOLS,
        tool_choice="required",
        n=4,
        seed=7,
        **{**GREEDY, "temperature": 1.0},
    )
    for choice in out.choices:
        if choice.finish_reason == "tool_calls":  # one cut by max_tokens is unfinished
            check_calls(choice.message.tool_calls or [], set(SCHEMAS))
    assert any(c.finish_reason == "tool_calls" for c in out.choices)


@pytest.mark.parametrize("final_choice", ["none", "auto"])
def test_the_openai_tool_loop(client: openai.OpenAI, final_choice: str) -> None:
    messages: list[Any] = list(QUESTION)
    asked = client.chat.completions.create(
        messages=messages,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **GREEDY,
    )
    message = asked.choices[0].message
    (call,) = message.tool_calls or []
    check_calls([call], {"get_weather"})
    messages.append(message)  # the client sends the message object back as it came
    arguments = json.loads(call.function.arguments)
    result = {"city": arguments["city"], "temperature": 22, "unit": "celsius", "sky": "sunny"}
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})

    answer = client.chat.completions.create(
        messages=messages, tools=TOOLS, tool_choice=final_choice, **GREEDY
    )
    final = answer.choices[0]
    if final_choice == "none":
        assert final.message.tool_calls is None
    if final.message.tool_calls:  # auto: the model may call again; the calls must parse
        assert final.finish_reason == "tool_calls"
        for again in final.message.tool_calls:
            assert again.function.name in SCHEMAS
            json.loads(again.function.arguments)
    else:
        assert final.message.content and final.finish_reason in ("stop", "length")

    stream = client.chat.completions.create(
        messages=messages, tools=TOOLS, tool_choice=final_choice, stream=True, **GREEDY
    )
    calls, reason, content = streamed_calls(stream)
    assert reason == final.finish_reason
    assert content == (final.message.content or "")
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in final.message.tool_calls or []
    ]


def test_tool_messages_reach_the_prompt(default_server: RunningServer) -> None:
    """The history's call and result are in the prompt, in the Hermes format."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    messages = [
        *QUESTION,
        {"role": "assistant", "tool_calls": [call]},  # no content: empty
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    r = httpx.post(
        f"{default_server.base_url}/tokenize",
        json={"model": DEFAULT_MODEL_NAME, "messages": messages, "return_token_strs": True},
    )
    assert r.status_code == 200, r.text
    text = "".join(r.json()["token_strs"])
    assert '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>' in text
    assert "<|im_start|>tool\n<tool_response>\n12:00\n</tool_response><|im_end|>" in text


BAD_REQUESTS = [
    ({"tools": [{"type": "function"}]}, "tools", None),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools", None),
    ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "tools", None),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
        "tools",
        "invalid_guided_constraint",
    ),
    ({"tools": [WEATHER, WEATHER]}, "tools", "conflicting_fields"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", None),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_news"}}},
        "tool_choice",
        "conflicting_fields",
    ),
    ({"tool_choice": "required"}, "tool_choice", "conflicting_fields"),
    ({"tools": [], "tool_choice": "required"}, "tool_choice", "conflicting_fields"),
    (
        {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
        "tool_choice",
        "conflicting_fields",
    ),
    ({"functions": [WEATHER["function"]]}, "functions", None),
    ({"function_call": "auto"}, "function_call", None),
]


@pytest.mark.parametrize(("extra", "param", "code"), BAD_REQUESTS)
def test_wrong_tool_fields_are_400s_naming_the_field(
    default_server: RunningServer, extra: dict[str, Any], param: str, code: str | None
) -> None:
    body = {"messages": QUESTION, **GREEDY, **extra}
    r = httpx.post(f"{default_server.base_url}/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == code, error
    assert param in error["message"], error


def test_tools_without_a_choice_or_with_none_are_served(client: openai.OpenAI) -> None:
    for choice in ("none", "auto", openai.NOT_GIVEN):
        out = client.chat.completions.create(
            messages=QUESTION, tools=TOOLS, tool_choice=choice, **{**GREEDY, "max_tokens": 24}
        )
        assert out.choices[0].finish_reason in ("stop", "length", "tool_calls")
