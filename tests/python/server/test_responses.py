"""POST /v1/responses, stateless: the official openai client's
``responses.create`` against the real server, streamed and not; the text is
chat's for the same messages; instructions, output fed back as input,
max_output_tokens, cached tokens, the raw event stream, a client that walks
away, and the 400s for what a stateless text-only server does not do."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from modelbench.server.protocol_responses import ResponsesRequest

from .conftest import MAX_MODEL_LEN, MODEL_NAME, RunningServer

GREEDY: dict[str, Any] = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def chat_text(client: openai.OpenAI, messages: list[dict[str, str]], max_tokens: int) -> str:
    out = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=max_tokens, **GREEDY
    )
    return out.choices[0].message.content or ""


def post(server: RunningServer, **body: Any) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/responses", json={"model": MODEL_NAME, **body}, timeout=60
    )


def test_create_gives_chats_text_in_openais_shape(client: openai.OpenAI) -> None:
    out = client.responses.create(
        model=MODEL_NAME, input="hello there", max_output_tokens=12, **GREEDY
    )
    assert out.id.startswith("resp_") and out.object == "response"
    assert out.model == f"{MODEL_NAME}:1" and out.status == "incomplete"  # cut at 12
    [message] = out.output
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.content[0].type == "output_text"
    assert out.output_text == chat_text(client, [{"role": "user", "content": "hello there"}], 12)
    assert out.usage.output_tokens == 12 and out.usage.output_tokens_details.reasoning_tokens == 0
    assert out.usage.total_tokens == out.usage.input_tokens + 12
    assert out.temperature == 0.0 and out.max_output_tokens == 12
    assert out.store is False and out.tools == [] and out.error is None
    assert out.text.format.type == "text"


def test_max_output_tokens_cut_is_incomplete(client: openai.OpenAI) -> None:
    out = client.responses.create(model=MODEL_NAME, input="hi", max_output_tokens=4, **GREEDY)
    assert out.status == "incomplete"
    assert out.incomplete_details is not None
    assert out.incomplete_details.reason == "max_output_tokens"
    assert out.output[0].status == "incomplete" and out.usage.output_tokens == 4


def test_instructions_and_developer_messages_are_system_messages(client: openai.OpenAI) -> None:
    system = "You answer in one word."
    expected = chat_text(
        client, [{"role": "system", "content": system}, {"role": "user", "content": "hi"}], 8
    )
    given = client.responses.create(
        model=MODEL_NAME, instructions=system, input="hi", max_output_tokens=8, **GREEDY
    )
    assert given.output_text == expected and given.instructions == system
    as_developer = client.responses.create(
        model=MODEL_NAME,
        input=[
            {"role": "developer", "content": system},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
        max_output_tokens=8,
        **GREEDY,
    )
    assert as_developer.output_text == expected


def test_output_sent_back_as_input_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL_NAME, input="hi", max_output_tokens=6, **GREEDY)
    second = client.responses.create(
        model=MODEL_NAME,
        input=[
            {"role": "user", "content": "hi"},
            *first.output,
            {"role": "user", "content": "more"},
        ],
        max_output_tokens=6,
        **GREEDY,
    )
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "more"},
    ]
    assert second.output_text == chat_text(client, conversation, 6)


def test_stream_with_the_openai_client(client: openai.OpenAI) -> None:
    whole = client.responses.create(
        model=MODEL_NAME, input="stream me", max_output_tokens=10, **GREEDY
    )
    events = list(
        client.responses.create(
            model=MODEL_NAME, input="stream me", max_output_tokens=10, stream=True, **GREEDY
        )
    )
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == whole.output_text
    final = events[-1].response
    assert final.id == events[0].response.id and final.output_text == whole.output_text
    assert final.usage.output_tokens == 10
    assert [e.sequence_number for e in events] == list(range(len(events)))


# Stop strings the tiny model's greedy answer to STOPPED_INPUT meets early:
# the response ends "completed" rather than cut.
STOPPED_INPUT, STOPS = "the raw stream", ["the", "a", "e", " "]


def test_the_openai_stream_helper_gets_the_completed_response(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL_NAME,
        input=STOPPED_INPUT,
        max_output_tokens=64,
        temperature=0.0,
        extra_body={"stop": STOPS},
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == text


def raw_events(server: RunningServer, **body: Any) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event of a streamed response."""
    with httpx.stream(
        "POST",
        server.base_url + "/v1/responses",
        json={"model": MODEL_NAME, "stream": True, **body},
        timeout=60,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        events.append((name[len("event: ") :], json.loads(data[len("data: ") :])))
    return events


@pytest.mark.parametrize(("max_output_tokens", "last"), [(6, "incomplete"), (None, "completed")])
def test_raw_stream_event_order_and_sequence_numbers(
    server: RunningServer, max_output_tokens: int | None, last: str
) -> None:
    body: dict[str, Any] = {"input": STOPPED_INPUT, "temperature": 0.0}
    if max_output_tokens is not None:
        body |= {"max_output_tokens": max_output_tokens, "ignore_eos": True}
    else:
        body |= {"stop": STOPS, "max_output_tokens": 64}
    events = raw_events(server, **body)
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    num_deltas = names.count("response.output_text.delta")
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * num_deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        f"response.{last}",
    ]
    created, final = events[0][1]["response"], events[-1][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert (final["id"], final["created_at"]) == (created["id"], created["created_at"])
    assert final["status"] == last
    text = "".join(data["delta"] for name, data in events if name.endswith(".delta"))
    assert final["output"][0]["content"][0]["text"] == text
    assert events[-4][1]["text"] == text
    item_ids = {data["item_id"] for _, data in events if "item_id" in data}
    assert item_ids == {final["output"][0]["id"]}
    if last == "incomplete":
        assert final["incomplete_details"] == {"reason": "max_output_tokens"}
        assert final["usage"]["output_tokens"] == max_output_tokens
    else:
        assert final["incomplete_details"] is None


def test_cached_tokens_are_reported_on_a_repeated_prompt(server: RunningServer) -> None:
    # Several full KV blocks (16 tokens), unique to this test.
    prompt = "responses cache test: " + " ".join(f"item{i}" for i in range(30))
    body = {"input": prompt, "max_output_tokens": 2, "temperature": 0.0}
    first = post(server, **body).json()["usage"]
    second = post(server, **body).json()["usage"]
    cached = second["input_tokens_details"]["cached_tokens"]
    # Full blocks of the prompt, less the last token (never a hit: it must be computed).
    assert cached == (second["input_tokens"] - 1) // 16 * 16 > 0
    assert cached > first["input_tokens_details"]["cached_tokens"]


def test_priority_and_sampling_extras_reach_the_engine(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    generate = server.engine.generate

    def spy(prompt: Any, params: Any, *args: Any) -> Any:
        seen.append(params)
        return generate(prompt, params, *args)

    monkeypatch.setattr(server.engine, "generate", spy)
    r = post(server, input="hi", max_output_tokens=3, priority=5, top_k=7, seed=11, top_p=0.5)
    assert r.status_code == 200, r.text
    [params] = seen
    assert (params.priority, params.top_k, params.seed, params.top_p) == (5, 7, 11, 0.5)
    assert params.max_tokens == 3 and r.json()["top_p"] == 0.5


def test_sampling_params_fill_in_the_models_defaults() -> None:
    defaults = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 50}
    request = ResponsesRequest(model="m", input="hi", temperature=0.7, priority=-1)
    params = request.sampling_params(100, defaults)
    assert (params.temperature, params.top_p, params.max_tokens) == (0.7, 0.9, 50)
    assert params.priority == -1
    assert request.sampling_params(30, defaults).max_tokens == 30  # the room left
    limited = ResponsesRequest(model="m", input="hi", max_output_tokens=7)
    assert limited.sampling_params(30, defaults).max_tokens == 7


def test_harmless_fields_are_accepted_and_nothing_is_stored(server: RunningServer) -> None:
    r = post(
        server,
        input="hi",
        max_output_tokens=2,
        store=True,
        metadata={"run": "a"},
        user="u1",
        tools=[],
        tool_choice="auto",
        parallel_tool_calls=False,
        background=False,
        text={"format": {"type": "text"}},
        previous_response_id=None,
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["store"] is False and out["metadata"] == {"run": "a"} and out["user"] == "u1"
    assert out["parallel_tool_calls"] is False
    assert httpx.get(f"{server.base_url}/v1/responses/{out['id']}").status_code in (404, 405)


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "send the whole conversation"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": "4"}]},
            "input",
            "'function_call_output' are not supported",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input",
            "'input_image' are not supported",
        ),
        ({"input": []}, "input", "no messages"),
        ({"tools": [{"type": "function", "name": "f"}]}, "tools", "no tool calling"),
        ({"tool_choice": "required"}, "tool_choice", "no tool calling"),
        ({"background": True}, "background", "background responses are not supported"),
        ({"text": {"format": {"type": "json_schema"}}}, "text", "structured output"),
        ({"reasoning": {"effort": "low"}}, "reasoning", "not supported"),
        ({"max_output_tokens": 0}, "max_output_tokens", "max_output_tokens"),
        ({"temperature": -1}, "temperature", "temperature"),
        ({"include": ["reasoning.encrypted_content"]}, "include", "no such field"),
        ({"frobnicate": 1}, "frobnicate", "no such field"),
    ],
)
def test_what_is_not_supported_is_a_400_saying_so(
    server: RunningServer, body: dict[str, Any], param: str, says: str
) -> None:
    r = post(server, **{"input": "hi", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"], error["message"]


def test_previous_response_id_through_the_openai_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stateless"):
        client.responses.create(model=MODEL_NAME, input="hi", previous_response_id="resp_123")


def test_a_remote_name_is_refused(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = server.registry.remote
    monkeypatch.setattr(
        server.registry, "remote", lambda model: object() if model == "far" else remote(model)
    )
    r = httpx.post(server.base_url + "/v1/responses", json={"model": "far", "input": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert "local models only" in r.json()["error"]["message"]


def test_disconnect_mid_stream_aborts_the_request(server: RunningServer) -> None:
    before = server.engine.stats().num_generation_tokens
    max_tokens = MAX_MODEL_LEN - 32
    body = {
        "model": MODEL_NAME,
        "input": "walk away",
        "max_output_tokens": max_tokens,
        "temperature": 1.0,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", server.base_url + "/v1/responses", json=body, timeout=30) as r:
        lines = r.iter_lines()
        next(line for line in lines if line == "event: response.output_text.delta")
        assert server.engine.stats().scheduler.kv_cache_usage > 0
    deadline = time.monotonic() + 10
    while server.engine.stats().scheduler.kv_cache_usage > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.engine.stats().scheduler.kv_cache_usage == 0
    assert server.engine.stats().num_generation_tokens - before < max_tokens
