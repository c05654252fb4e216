"""The tool-call parsers (server/tool_parser.py), the tools' place in the
prompt (server/tool_prompt.py) and the forced call's schema
(server/protocol_tools.py), without a model: the Hermes format whole and
split at every chunk boundary, malformed calls kept as text, the forced
JSON streamed call by call, and the default format's messages."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest

from modelbench.server.protocol import ChatCompletionRequest, ChatMessage
from modelbench.server.protocol_tools import Tool, forced_call_schema
from modelbench.server.tool_parser import (
    ForcedCallParser,
    HermesParser,
    ParsedDelta,
    ToolCallParser,
    parse_call,
)
from modelbench.server.tool_prompt import template_inputs, tool_format

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n'}}{% endfor %}"
)
TOOLS_TEMPLATE = "{% if tools %}{{ tools | tojson }}{% endif %}" + CHATML
USER_ASSISTANT_ONLY = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}"
)


def calls_of(parser: ToolCallParser) -> list[tuple[str, str]]:
    return [(c.name, c.arguments) for c in parser.calls]


def split_feed(parser: ToolCallParser, text: str, rng: random.Random) -> list[ParsedDelta]:
    """Feed ``text`` in random pieces (empty ones too), then finish."""
    deltas, i = [], 0
    while i < len(text):
        n = rng.randint(0, 6)
        deltas.append(parser.feed(text[i : i + n]))
        i += n
    deltas.append(parser.finish())
    return deltas


def rebuilt(deltas: list[ParsedDelta]) -> tuple[str, list[tuple[str, str]]]:
    """What a client gets from the deltas: the content and each call, checking
    that a call's first delta has its id and name and later ones do not."""
    content, calls = "", {}
    for delta in deltas:
        content += delta.content
        for d in delta.tool_calls:
            if d.index not in calls:
                assert d.id and d.id.startswith("call_") and d.name and d.index == len(calls)
                calls[d.index] = [d.name, ""]
            else:
                assert d.id is None and d.name is None
            calls[d.index][1] += d.arguments
    return content, [(name, arguments) for name, arguments in calls.values()]


HERMES_CASES = [
    (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        [("get_weather", '{"city": "Paris"}')],
    ),
    (
        'Let me check.\n<tool_call>{"name": "a", "arguments": {"x": [1, {"y": "}"}]}}</tool_call>\n'
        '<tool_call>{"arguments": {}, "name": "b"}</tool_call>\n',
        "Let me check.",
        [("a", '{"x": [1, {"y": "}"}]}'), ("b", "{}")],
    ),
    (
        '<tool_call>{"name": "a", "arguments": "{\\"q\\": 1}"}</tool_call> and then',
        " and then",
        [("a", '{"q": 1}')],
    ),
    ('<tool_call>{"name": "a", "parameters": {"q": "é"}}</tool_call>', "", [("a", '{"q": "é"}')]),
    ('<tool_call>{"name": "a", "arguments": {"q": 1}}', "", [("a", '{"q": 1}')]),  # EOS, no tag
    ("A plain answer, < 5 and <b>bold</b>.  ", "A plain answer, < 5 and <b>bold</b>.  ", []),
    (
        '<tool_call>{"name": "a", "arguments": {"q": }</tool_call> after',
        '<tool_call>{"name": "a", "arguments": {"q": }</tool_call> after',
        [],
    ),
    ("<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>", []),
    ('<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"arguments": {}}</tool_call>', []),
    ('<tool_call>["a"]</tool_call>', '<tool_call>["a"]</tool_call>', []),
    (
        '<tool_call>{"name": "a", "arguments": 5}</tool_call>',
        '<tool_call>{"name": "a", "arguments": 5}</tool_call>',
        [],
    ),
    (
        '<tool_call>{"name": "a", "arguments": {"q": 1',
        '<tool_call>{"name": "a", "arguments": {"q": 1',
        [],
    ),
    ("ends with a partial tag <tool_ca", "ends with a partial tag <tool_ca", []),
]


@pytest.mark.parametrize(("text", "content", "calls"), HERMES_CASES)
def test_hermes_calls_and_content(text: str, content: str, calls: list[tuple[str, str]]) -> None:
    parser = HermesParser()
    assert parser.parse(text)[0] == content
    assert calls_of(parser) == calls
    for seed in range(40):  # any chunk boundaries: the same deltas' sum
        split = HermesParser()
        got = rebuilt(split_feed(split, text, random.Random(seed)))
        assert got == (content, calls), seed
        assert (split.content, calls_of(split)) == (content, calls)


def test_hermes_one_call_when_parallel_calls_are_off() -> None:
    text = '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>'  # noqa: E501
    parser = HermesParser(parallel=False)
    assert parser.parse(text) == ("", parser.calls) and calls_of(parser) == [("a", "{}")]


def test_parse_call() -> None:
    assert parse_call('{"name": "f"}') == ("f", "{}")
    assert parse_call('{"name": "", "arguments": {}}') is None
    assert parse_call('{"name": "f", "arguments": "not json"}') is None


FORCED = [
    '{"name": "get_weather", "arguments": {"city": "Pa\\"ris}", "n": [1, {"a": null}]}}',
    '[{"name": "a", "arguments": {"x": 1.5e3}}, {"arguments": {"y": true}, "name": "b"}, '
    '{"name": "a", "arguments": {}}]',
]


@pytest.mark.parametrize("text", FORCED)
def test_forced_calls_stream_the_same_at_any_boundary(text: str) -> None:
    value = json.loads(text)
    expected = [
        (c["name"], json.dumps(c["arguments"]))
        for c in (value if isinstance(value, list) else [value])
    ]
    whole = ForcedCallParser()
    assert whole.parse(text) == ("", whole.calls)
    assert [(n, json.dumps(json.loads(a))) for n, a in calls_of(whole)] == expected
    for seed in range(60):
        split = ForcedCallParser()
        assert rebuilt(split_feed(split, text, random.Random(seed))) == ("", calls_of(whole))


def test_forced_call_arguments_stream_as_they_are_generated() -> None:
    parser = ForcedCallParser()
    first = parser.feed('{"name": "f", "argu')
    assert first.tool_calls[0].name == "f" and first.tool_calls[0].arguments == ""
    assert parser.feed('ments": {"q": "ab').tool_calls[0].arguments == '{"q": "ab'
    assert parser.feed('c"}}').tool_calls[0].arguments == 'c"}'
    assert not parser.finish()
    cut = ForcedCallParser()  # cut short by max_tokens: the arguments so far
    assert cut.parse('{"name": "f", "arguments": {"q": "x') == ("", cut.calls)
    assert calls_of(cut) == [("f", '{"q": "x')]


def tools(*names: str, parameters: dict[str, Any] | None = None) -> list[Tool]:
    return [
        Tool.model_validate({"type": "function", "function": {"name": n, "parameters": parameters}})
        for n in names
    ]


def test_forced_call_schema() -> None:
    with_refs = {
        "type": "object",
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "properties": {"place": {"$ref": "#/$defs/Place"}},
        "required": ["place"],
    }
    given = tools("a", "b", parameters=with_refs)
    good = {"name": "b", "arguments": {"place": {"city": "Paris"}}}
    bad = {"name": "b", "arguments": {"place": {"city": 5}}}
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [t.model_dump() for t in given],
            "tool_choice": {"type": "function", "function": {"name": "b"}},
        }
    )
    schema = request.forced_call_schema()
    assert schema is not None
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "name": "a"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    parallel = forced_call_schema(given, "required", True)
    assert parallel is not None
    jsonschema.validate([good, {**good, "name": "a"}], parallel)
    for wrong in ([], [bad], good):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, parallel)
    single = forced_call_schema(given, "required", False)
    assert single is not None
    jsonschema.validate(good, single)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, single)
    assert forced_call_schema(given, "auto", True) is None
    assert forced_call_schema(given, "none", True) is None


HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "1",
                "type": "function",
                "function": {"name": "w", "arguments": '{"c": "Paris"}'},
            },
            {
                "id": "2",
                "type": "function",
                "function": {"name": "w", "arguments": '{"c": "Rome"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "2", "content": "rain"},
]


def test_hermes_messages_for_a_template_without_tools() -> None:
    messages = [ChatMessage.model_validate(m) for m in HISTORY]
    rendered, variables = template_inputs(messages, tools("w"), CHATML)
    assert variables == {} and tool_format(CHATML) == "hermes"
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "tool"]
    assert rendered[0]["content"].startswith("Be brief.\n\n# Tools")
    assert '{"type": "function", "function": {"name": "w"}}' in rendered[0]["content"]
    assert rendered[2]["content"] == (
        '<tool_call>\n{"name": "w", "arguments": {"c": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "w", "arguments": {"c": "Rome"}}\n</tool_call>'
    )
    assert rendered[3]["content"] == (
        "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n</tool_response>"
    )
    without_tools, _ = template_inputs(messages, None, CHATML)
    assert without_tools[0] == {"role": "system", "content": "Be brief."}
    only_known_roles, _ = template_inputs(messages, None, USER_ASSISTANT_ONLY)
    assert only_known_roles[-1]["role"] == "user"  # this template would drop a tool turn
    no_system, _ = template_inputs(messages[1:2], tools("w"), CHATML)
    assert no_system[0]["role"] == "system" and no_system[0]["content"].startswith("# Tools")


def test_a_template_that_reads_tools_gets_them_and_the_messages_as_they_are() -> None:
    messages = [ChatMessage.model_validate(m) for m in HISTORY]
    rendered, variables = template_inputs(messages, tools("w"), TOOLS_TEMPLATE)
    assert tool_format(TOOLS_TEMPLATE) == "chat_template" and tool_format(None) is None
    assert variables == {"tools": [{"type": "function", "function": {"name": "w"}}]}
    assert rendered[2]["content"] == ""
    assert rendered[2]["tool_calls"][0]["function"] == {"name": "w", "arguments": {"c": "Paris"}}
    assert rendered[3] == {"role": "tool", "tool_call_id": "1", "content": "sunny"}


def test_no_output_makes_a_parser_fail() -> None:
    """Whatever the text (cut anywhere, not JSON at all), the parsers answer."""
    rng = random.Random(0)
    pieces = [
        '{"name": ',
        '"f"',
        "5x",
        ", ",
        '"arguments": ',
        "{",
        "}",
        "[",
        "]",
        '"\\x',
        "<tool_call>",
    ]
    pieces += ["</tool_call>", "null", '"a"', ":", "\\", '"']
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for parser in (ForcedCallParser(), HermesParser()):
            split_feed(parser, text, rng)
