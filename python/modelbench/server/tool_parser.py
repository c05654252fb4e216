"""Tool calls out of a model's output text, whole or as it streams.

Two parsers, one interface (``feed`` each text delta, then ``finish``; each
returns a ``ParsedDelta`` of content and OpenAI tool-call deltas):

- ``HermesParser`` reads free text (``tool_choice`` ``auto``): calls are
  JSON objects ``{"name": ..., "arguments": {...}}`` inside
  ``<tool_call></tool_call>`` tags, as NousResearch's Hermes format (and
  Qwen's) writes them; everything outside the tags is content. A call is
  sent once its closing tag arrives (or the output ends right after its
  JSON), so one that is not valid JSON stays text, however the text was
  split into deltas.
- ``ForcedCallParser`` reads the output of a forced call (``required`` or a
  named function), which structured output holds to ``{"name": ...,
  "arguments": ...}`` or an array of them: it streams each call as it is
  generated, its name first, then the arguments' JSON text as it grows.

Either way, the calls and content at the end do not depend on how the text
was split: a non-streamed answer is the same parser fed the whole text.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCallDelta:
    """What one delta adds to call ``index``: its id and name the first time
    (``id`` set), then pieces of its arguments' JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass
class ParsedDelta:
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.tool_calls)


class ToolCallParser:
    """What both parsers keep: the content and calls so far, built from the
    deltas they hand out, so the whole and the streamed answer agree."""

    def __init__(self) -> None:
        self.content = ""
        self.calls: list[ToolCall] = []
        self._out = ParsedDelta()

    def feed(self, text: str) -> ParsedDelta:
        raise NotImplementedError

    def finish(self) -> ParsedDelta:
        raise NotImplementedError

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """The content and calls of a whole output."""
        self.feed(text)
        self.finish()
        return self.content, self.calls

    def _take(self) -> ParsedDelta:
        out, self._out = self._out, ParsedDelta()
        return out

    def _add_content(self, text: str) -> None:
        self.content += text
        self._out.content += text

    def _start_call(self, name: str) -> None:
        call = ToolCall(id=new_call_id(), name=name, arguments="")
        self.calls.append(call)
        self._out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, call.id, name))

    def _add_arguments(self, text: str) -> None:
        if not text:
            return
        self.calls[-1].arguments += text
        last = self._out.tool_calls[-1] if self._out.tool_calls else None
        if last is not None and last.index == len(self.calls) - 1:
            last.arguments += text
        else:
            self._out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, arguments=text))


class HermesParser(ToolCallParser):
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` in free
    text. Whitespace just before a call, and after the last one, is not
    content. With ``parallel`` False only the first call is kept."""

    def __init__(self, parallel: bool = True) -> None:
        super().__init__()
        self.parallel = parallel
        self._buffer = ""  # text not handed out yet: a call's body, or a tag's start
        self._in_call = False
        self._pending_space = ""  # whitespace: content only if content follows
        self._after_call = False  # nothing but whitespace since the last call

    def feed(self, text: str) -> ParsedDelta:
        self._buffer += text
        while True:
            if self._in_call:
                end = self._buffer.find(TOOL_CALL_END)
                if end < 0:
                    break
                body, self._buffer = self._buffer[:end], self._buffer[end + len(TOOL_CALL_END) :]
                self._in_call = False
                self._close_call(body, TOOL_CALL_START + body + TOOL_CALL_END)
                continue
            start = self._buffer.find(TOOL_CALL_START)
            if start >= 0:
                self._text(self._buffer[:start])
                self._buffer = self._buffer[start + len(TOOL_CALL_START) :]
                self._in_call = True
                continue
            keep = _partial_tag(self._buffer)
            self._text(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            break
        return self._take()

    def finish(self) -> ParsedDelta:
        if self._in_call:  # no closing tag: a call if its JSON is whole, else text
            self._close_call(self._buffer, TOOL_CALL_START + self._buffer)
        else:
            self._text(self._buffer)
        self._buffer, self._in_call = "", False
        if not self._after_call:
            self._add_content(self._pending_space)
        self._pending_space = ""
        return self._take()

    def _text(self, text: str) -> None:
        text = self._pending_space + text
        kept = text.rstrip()
        self._pending_space = text[len(kept) :]
        if kept:
            self._add_content(kept)
            self._after_call = False

    def _close_call(self, body: str, raw: str) -> None:
        call = parse_call(body)
        if call is None:  # not a call: the tags and all are content
            self._text(raw)
            return
        self._pending_space, self._after_call = "", True
        if self.parallel or not self.calls:
            self._start_call(call[0])
            self._add_arguments(call[1])


def _partial_tag(text: str) -> int:
    """How many characters at the end of ``text`` may start a ``<tool_call>`` tag."""
    for n in range(min(len(text), len(TOOL_CALL_START) - 1), 0, -1):
        if TOOL_CALL_START.startswith(text[-n:]):
            return n
    return 0


def parse_call(body: str) -> tuple[str, str] | None:
    """The name and arguments (JSON text of an object) of a call's JSON, or
    None when it is not one. ``parameters`` is read as ``arguments`` (Llama's
    spelling), and arguments sent as JSON text of an object are unwrapped."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments: Any = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return value["name"], json.dumps(arguments, ensure_ascii=False)


class ForcedCallParser(ToolCallParser):
    """A forced call's JSON (``{"name": ..., "arguments": ...}``, or an array
    of them), streamed call by call: the name once its string is whole, then
    the arguments' text exactly as generated, as it grows. Structured output
    keeps it valid; output cut short (``length``) leaves the last call's
    arguments unfinished, as OpenAI's would be."""

    def __init__(self) -> None:
        super().__init__()
        self._text = ""
        self._pos = 0  # how far _text is scanned
        self._stack: list[str] = []  # open containers, "{" or "["
        self._in_string = self._escape = False
        self._string_start = 0
        self._call_depth = 0  # the stack's depth inside a call object: 1, or 2 in an array
        self._expect_key = False
        self._key: str | None = None
        self._value_start: int | None = None  # the call's current value's first character
        self._name: str | None = None
        self._arguments: tuple[int, int | None] | None = None  # start, end (None: open)
        self._started = False  # the current call's name is handed out
        self._sent: int | None = None  # how far the arguments' text is handed out

    def feed(self, text: str) -> ParsedDelta:
        self._text += text
        for i in range(self._pos, len(self._text)):
            self._scan(i, self._text[i])
            self._pos = i + 1
        self._send()
        return self._take()

    def finish(self) -> ParsedDelta:
        return self._take()

    def _at_call_level(self) -> bool:
        return len(self._stack) == self._call_depth and self._stack[-1] == "{"

    def _scan(self, i: int, c: str) -> None:
        if self._in_string:
            if self._escape:
                self._escape = False
            elif c == "\\":
                self._escape = True
            elif c == '"':
                self._in_string = False
                if self._at_call_level():
                    if self._expect_key:
                        self._key = _loads(self._text[self._string_start : i + 1])
                    else:
                        self._end_value(i + 1)
            return
        if c.isspace():
            return
        if not self._stack and not self._call_depth:
            self._call_depth = 2 if c == "[" else 1
        if self._at_call_level() and not self._expect_key and self._value_start is None:
            if c not in ",}":
                self._start_value(i)
        if c == '"':
            self._in_string, self._string_start = True, i
        elif c in "{[":
            self._stack.append(c)
            if len(self._stack) == self._call_depth and c == "{":
                self._name, self._arguments, self._key = None, None, None
                self._expect_key, self._started, self._sent = True, False, None
        elif c in "}]":
            closes_call = len(self._stack) == self._call_depth and self._at_call_level()
            if closes_call and self._value_start is not None:
                self._end_value(i)  # a number, true, false or null before "}"
            if self._stack:
                self._stack.pop()
            if closes_call:
                self._send()
                self._name, self._arguments = None, None
            elif self._at_call_level() and self._value_start is not None:
                self._end_value(i + 1)  # an object or array value closed
        elif self._at_call_level() and c == ":":
            self._expect_key, self._value_start = False, None
        elif self._at_call_level() and c == ",":
            if self._value_start is not None:
                self._end_value(i)
            self._expect_key = True

    def _start_value(self, i: int) -> None:
        self._value_start = i
        if self._key == "arguments":
            self._arguments = (i, None)

    def _end_value(self, end: int) -> None:
        assert self._value_start is not None
        if self._key == "name":
            name = _loads(self._text[self._value_start : end])
            self._name = name if isinstance(name, str) else None  # not a name: no call
        elif self._key == "arguments" and self._arguments is not None:
            self._arguments = (self._arguments[0], end)
        self._value_start = None

    def _send(self) -> None:
        """Hand out what is known of the current call: its name, once; then
        its arguments' text up to where it is scanned."""
        if self._name is None:
            return
        if not self._started:
            self._start_call(self._name)
            self._started = True
        if self._arguments is None:
            return
        start, end = self._arguments
        begin = start if self._sent is None else self._sent
        upto = end if end is not None else self._pos
        if upto > begin:
            self._add_arguments(self._text[begin:upto])
            self._sent = upto


def _loads(text: str) -> Any:
    """A JSON value, or None when ``text`` is not one (output that is not
    JSON is no call, never an error)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None
