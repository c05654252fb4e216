"""How tools and tool results reach the prompt.

A chat template that reads the ``tools`` variable (Qwen2.5's, Llama 3.1's,
Hermes 2 Pro's, ...) renders them itself: it gets ``tools`` and the
messages as transformers passes them (an assistant message's
``tool_calls`` with ``arguments`` as an object, a ``tool`` message's
``tool_call_id``). A template that does not (SmolLM2's, the default
model's) gets modelbench's default, the Hermes format, written into plain
messages it can take:

- the tools, as JSON inside ``<tools></tools>``, and how to call them, in a
  section appended to the system message (a system message is added when
  there is none);
- an assistant message's calls as ``<tool_call>{"name": ..., "arguments":
  {...}}</tool_call>`` text after its content;
- a ``tool`` message's content inside ``<tool_response></tool_response>``
  (consecutive results share one turn), in a ``tool`` turn when the
  template writes any role as it comes (ChatML's) or names ``tool``, else
  in a ``user`` turn (a template that writes only the roles it knows).

Either way the model's calls are read back by the Hermes parser
(server/tool_parser.py). With ``tool_choice`` ``"none"`` the tools are not
rendered at all; earlier calls and results in the history still are.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import jinja2
import jinja2.ext
from jinja2 import meta

from modelbench.server.chat_roles import compared_roles, writes_roles
from modelbench.server.tool_parser import TOOL_CALL_END, TOOL_CALL_START

if TYPE_CHECKING:
    from modelbench.server.protocol import ChatMessage
    from modelbench.server.protocol_tools import Tool

ToolFormat = Literal["chat_template", "hermes"]
# The parser that reads every model's calls (the names vLLM's --tool-call-parser takes).
TOOL_CALL_PARSER = "hermes"

HERMES_SYSTEM = """# Tools

You may call one or more functions to help with the user's request. The functions you can call are listed as JSON inside <tools></tools>:
<tools>
{tools}
</tools>

To call a function, answer with its name and arguments as a JSON object inside <tool_call></tool_call> tags, one pair of tags per call:
<tool_call>
{{"name": <function-name>, "arguments": <arguments-json-object>}}
</tool_call>

Each call's result comes back inside <tool_response></tool_response> tags: answer the user's request from it, in plain words."""  # noqa: E501


@lru_cache(maxsize=64)
def template_reads_tools(source: str) -> bool:
    """Whether the chat template ``source`` reads the ``tools`` variable (from
    its syntax tree). A template that does not parse does not."""
    try:
        tree = jinja2.Environment(extensions=[jinja2.ext.loopcontrols]).parse(source)
    except jinja2.TemplateSyntaxError:
        return False
    return "tools" in meta.find_undeclared_variables(tree)


def tool_format(source: str | None) -> ToolFormat | None:
    """Where a model's tools are rendered: its own ``chat_template``, or the
    default ``hermes`` format; None for a model without a chat template."""
    if not source:
        return None
    return "chat_template" if template_reads_tools(source) else "hermes"


def template_inputs(
    messages: list[ChatMessage], tools: list[Tool] | None, source: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and extra template variables to render ``messages`` with
    the template ``source``, with ``tools`` shown to the model (None: no
    tools in the prompt)."""
    if template_reads_tools(source):
        variables = {"tools": [t.model_dump(exclude_none=True) for t in tools]} if tools else {}
        return [m.for_template() for m in messages], variables
    return hermes_messages(messages, tools, source), {}


def hermes_messages(
    messages: list[ChatMessage], tools: list[Tool] | None, source: str
) -> list[dict[str, Any]]:
    """``messages`` in the default Hermes format, as plain text messages for
    the template ``source``."""
    out: list[dict[str, Any]] = []
    previous_was_result = False
    result_role = "tool" if "tool" in compared_roles(source) or writes_roles(source) else "user"
    for message in messages:
        rendered = message.for_template()
        rendered.pop("tool_calls", None)
        rendered.pop("tool_call_id", None)
        if message.role == "tool":
            response = f"<tool_response>\n{rendered.get('content', '')}\n</tool_response>"
            if previous_was_result:
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": result_role, "content": response})
            previous_was_result = True
            continue
        previous_was_result = False
        if message.tool_calls:
            calls = "\n".join(
                hermes_call(c.function.name, c.for_template()["function"]["arguments"])
                for c in message.tool_calls
            )
            text = rendered.get("content") or ""
            rendered["content"] = f"{text}\n{calls}" if text else calls
        out.append(rendered)
    if tools:
        section = HERMES_SYSTEM.format(
            tools="\n".join(json.dumps(t.model_dump(exclude_none=True)) for t in tools)
        )
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{section}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


def hermes_call(name: str, arguments: Any) -> str:
    """One call as the Hermes format writes it (compact JSON, as forced calls
    are generated)."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_START}\n{body}\n{TOOL_CALL_END}"
