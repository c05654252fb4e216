"""What the server refuses, and how it says so (issue 20): an answer longer
than the context leaves (with the numbers, as vLLM), a role the chat template
does not know, numbers and booleans sent as strings, a body not sent as JSON,
unknown routes and methods; each a 4xx in OpenAI's error body that names the
field and what to do. Against the real server over the tiny Llama."""

from __future__ import annotations

import httpx
import pytest

from modelbench.server.chat_roles import template_roles

from .conftest import MAX_MODEL_LEN, MODEL_NAME, RunningServer

GREEDY = {"model": MODEL_NAME, "temperature": 0.0, "ignore_eos": True}
USER = [{"role": "user", "content": "hello there"}]


def post(server: RunningServer, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=60, **kwargs)  # type: ignore[arg-type]


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def prompt_tokens(server: RunningServer, body: dict) -> int:
    r = post(server, "/tokenize", {"model": MODEL_NAME, **body})
    assert r.status_code == 200, r.text
    return r.json()["count"]


# ---- max_tokens past the context -----------------------------------------


@pytest.mark.parametrize(
    ("path", "field", "body", "as_tokenized"),
    [
        ("/v1/completions", "max_tokens", {"prompt": "hello there"}, {"prompt": "hello there"}),
        ("/v1/chat/completions", "max_tokens", {"messages": USER}, {"messages": USER}),
        (
            "/v1/chat/completions",
            "max_completion_tokens",
            {"messages": USER},
            {"messages": USER},
        ),
        ("/v1/responses", "max_output_tokens", {"input": "hello there"}, {"messages": USER}),
    ],
)
def test_an_answer_past_the_context_is_400_with_the_numbers(
    server: RunningServer, path: str, field: str, body: dict, as_tokenized: dict
) -> None:
    num_prompt = prompt_tokens(server, as_tokenized)
    room = MAX_MODEL_LEN - num_prompt
    error = error_of(post(server, path, {**GREEDY, **body, field: 100_000_000}), 400)
    assert error["param"] == field and error["code"] == "context_length_exceeded"
    assert error["message"] == (
        f"{field} is 100000000, but the prompt takes {num_prompt} of the model's "
        f"{MAX_MODEL_LEN} tokens, which leaves {room}; lower {field} or shorten the prompt"
    )
    # The bound is exact: one token more is refused, the room itself is served whole.
    assert error_of(post(server, path, {**GREEDY, **body, field: room + 1}), 400)["param"] == field
    served = post(server, path, {**GREEDY, **body, field: room})
    assert served.status_code == 200, served.text
    usage = served.json()["usage"]
    generated = usage.get("completion_tokens", usage.get("output_tokens"))
    assert generated == room


def test_min_tokens_past_the_context_or_past_max_tokens_is_400(server: RunningServer) -> None:
    body = {**GREEDY, "prompt": "hello there"}
    error = error_of(post(server, "/v1/completions", {**body, "min_tokens": MAX_MODEL_LEN}), 400)
    assert error["param"] == "min_tokens" and error["code"] == "context_length_exceeded"
    error = error_of(
        post(server, "/v1/completions", {**body, "min_tokens": 5, "max_tokens": 4}), 400
    )
    assert error["param"] == "min_tokens" and error["code"] == "conflicting_fields"
    assert "min_tokens is 5, more than max_tokens (4)" in error["message"]
    # Without max_tokens the answer may take min_tokens even past the default 16.
    r = post(server, "/v1/completions", {**body, "min_tokens": 20})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 20, r.text


def test_a_prompt_past_the_context_or_the_vocabulary_is_400_naming_why(
    server: RunningServer,
) -> None:
    error = error_of(
        post(server, "/v1/completions", {**GREEDY, "prompt": [5] * (MAX_MODEL_LEN + 1)}), 400
    )
    assert error["param"] == "prompt" and error["code"] == "context_length_exceeded"
    assert (
        f"{MAX_MODEL_LEN + 1} tokens, more than the model's context of {MAX_MODEL_LEN}"
        in (error["message"])
    )
    vocab = server.engine.config.vocab_size
    error = error_of(post(server, "/v1/completions", {**GREEDY, "prompt": [1, vocab]}), 400)
    assert error["param"] == "prompt" and error["code"] == "token_out_of_vocabulary"
    assert (
        f"prompt token 1 is {vocab}, outside the model's vocabulary [0, {vocab})"
        in (error["message"])
    )
    error = error_of(
        post(server, "/v1/embeddings", {"model": MODEL_NAME, "input": [[1], [vocab]]}), 400
    )
    assert error["param"] == "input" and "input[1] token 0" in error["message"]


# ---- roles ----------------------------------------------------------------


def test_a_role_the_template_does_not_know_is_400_naming_the_known_ones(
    server: RunningServer,
) -> None:
    chat = {**GREEDY, "max_tokens": 2, "messages": [{"role": "robot", "content": "beep"}]}
    error = error_of(post(server, "/v1/chat/completions", chat), 400)
    assert error["param"] == "messages" and error["code"] == "unsupported_role"
    assert "role 'robot'" in error["message"]
    assert "assistant, system, tool, user" in error["message"]
    error = error_of(
        post(server, "/tokenize", {"model": MODEL_NAME, "messages": chat["messages"]}), 400
    )
    assert error["code"] == "unsupported_role"
    # A template that names a role of its own takes it (a request's template here).
    template = (
        "{% for m in messages %}{% if m['role'] == 'robot' %}[bot]{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    r = post(server, "/v1/chat/completions", {**chat, "chat_template": template})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("template", "extra"),
    [
        # ChatML writes any role as it comes and compares none: the standard four.
        (
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
            "message['content'] + '<|im_end|>\\n'}}{% endfor %}",
            set(),
        ),
        # Llama 3.1: ipython, compared with ==, spaces and quotes as they come.
        (
            '{%- for message in messages %}{%- if message.role == "ipython" %}x'
            "{%- elif not (message.role == 'tool' or 'tool_calls' in message) %}y"
            "{%- endif %}{%- endfor %}",
            {"ipython"},
        ),
        # A list of roles, a filter on the role, a role variable, a raise for the rest.
        (
            "{% for m in messages %}{% set role = m['role'] | lower %}"
            "{% if m['role'] in ['developer', 'user'] %}a{% elif role != 'function' %}"
            "{{ raise_exception('no') }}{% endif %}{% endfor %}",
            {"developer", "function"},
        ),
        # Not a template Jinja can parse: the standard roles (rendering says what is wrong).
        ("{% for m in messages %}", set()),
    ],
)
def test_template_roles_are_the_standard_ones_and_those_it_compares(
    template: str, extra: set[str]
) -> None:
    assert template_roles(template) == {"system", "user", "assistant", "tool"} | extra


# ---- types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "wanted"),
    [
        ("max_tokens", "4", "an integer"),
        ("n", "2", "an integer"),
        ("temperature", "0.5", "a number"),
        ("stream", "true", "true or false"),
        ("ignore_eos", "false", "true or false"),
    ],
)
def test_numbers_and_booleans_sent_as_strings_are_400(
    server: RunningServer, field: str, value: str, wanted: str
) -> None:
    body = {**GREEDY, "prompt": "hello", "max_tokens": 2, field: value}
    error = error_of(post(server, "/v1/completions", body), 400)
    assert error["param"] == field
    assert error["message"] == (
        f"{field} must be {wanted}, got the string {value!r}: send numbers and booleans as "
        "JSON numbers and true/false, without quotes"
    )


def test_whole_numbers_are_integers_and_others_are_not(server: RunningServer) -> None:
    body = {**GREEDY, "prompt": "hello", "max_tokens": 3.0, "n": 2.0}
    r = post(server, "/v1/completions", body)
    assert r.status_code == 200 and len(r.json()["choices"]) == 2, r.text
    assert r.json()["usage"]["completion_tokens"] == 6
    for field, value in (("max_tokens", 2.5), ("n", True)):
        error = error_of(post(server, "/v1/completions", {**body, field: value}), 400)
        assert error["param"] == field
    error = error_of(post(server, "/v1/completions", {**body, "n": 0}), 400)
    assert error["message"] == "n must be >= 1, got 0"


# ---- media types, routes, methods ---------------------------------------


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({}, "the request has no Content-Type header"),
        ({"Content-Type": "text/plain"}, "its Content-Type is 'text/plain'"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "application/x-www-form"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/v1/infer"])
def test_a_body_not_sent_as_json_is_415_naming_the_header(
    server: RunningServer, path: str, headers: dict, said: str
) -> None:
    content = b'{"model": "tiny-llama", "prompt": "hi", "text": "hi"}'
    r = httpx.post(server.base_url + path, content=content, headers=headers, timeout=30)
    error = error_of(r, 415)
    assert error["param"] == "Content-Type" and error["code"] == "unsupported_media_type"
    assert said in error["message"]
    assert "'Content-Type: application/json'" in error["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/vnd.modelbench+json"]
)
def test_json_media_types_with_parameters_or_suffixes_are_read(
    server: RunningServer, content_type: str
) -> None:
    content = b'{"model": "tiny-llama", "prompt": "hi", "max_tokens": 1}'
    r = httpx.post(
        server.base_url + "/v1/completions",
        content=content,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_an_unknown_route_is_404_in_the_openai_body(server: RunningServer) -> None:
    r = httpx.get(server.base_url + "/v1/no-such-thing", timeout=30)
    error = error_of(r, 404)
    assert error["type"] == "not_found_error" and error["code"] == "route_not_found"
    assert "GET /v1/no-such-thing" in error["message"] and "/openapi.json" in error["message"]


def test_a_wrong_method_is_405_naming_every_method_of_the_path(server: RunningServer) -> None:
    r = httpx.request("PUT", server.base_url + "/v1/admin/models/tiny-llama:1", timeout=30)
    error = error_of(r, 405)
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert error["code"] == "method_not_allowed"
    assert "takes DELETE, GET, PATCH, not PUT" in error["message"]


def test_fields_that_do_not_go_together_are_400_with_their_code(server: RunningServer) -> None:
    chat = {**GREEDY, "messages": USER, "continue_final_message": True}
    error = error_of(post(server, "/v1/chat/completions", chat), 400)
    assert error["code"] == "conflicting_fields"
    assert "add_generation_prompt: false" in error["message"]
    prompts = {**GREEDY, "prompt": ["a", "b", "c"], "n": 50}
    error = error_of(post(server, "/v1/completions", prompts), 400)
    assert error["code"] == "conflicting_fields"
    assert "3 prompts with n=50 make 150 choices; at most 128" in error["message"]
