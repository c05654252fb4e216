"""OpenAI's tool-calling shapes in a chat request: the ``tools`` a model may
call, the ``tool_choice`` that says whether it must, and the ``tool_calls``
an assistant message carries back. Also the JSON Schema a forced call
(``tool_choice`` ``"required"`` or a named function) is generated under, so
that its arguments are always valid for the function's parameters.

A forced call is generated as ``{"name": ..., "arguments": {...}}`` (the
shape the default Hermes format asks for inside ``<tool_call>`` tags), or an
array of them when ``parallel_tool_calls`` allows several; the function's
parameter schema is placed under ``arguments`` with its local ``$ref``
pointers rebased, so ``#/$defs/X`` still finds its definition."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from modelbench.engine.errors import INVALID_GUIDED_CONSTRAINT, InvalidParameter
from modelbench.engine.guided import check_schema
from modelbench.server.protocol_fields import STRICT_REQUEST

# OpenAI's rule for function names.
FunctionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
# The parameters of a function that declares none: an empty object.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class FunctionDefinition(BaseModel):
    """A function the model may call; ``parameters`` is its arguments' JSON
    Schema (checked against the metaschema). ``strict`` is accepted either
    way: a forced call always follows the schema, an ``auto`` one never is
    held to it."""

    model_config = STRICT_REQUEST

    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _is_json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                check_schema(value, "parameters")
            except InvalidParameter as e:  # the 400 names tools, with the error's code
                raise PydanticCustomError(INVALID_GUIDED_CONSTRAINT, str(e)) from e
        return value


class Tool(BaseModel):
    model_config = STRICT_REQUEST

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = STRICT_REQUEST

    name: FunctionName


class NamedToolChoice(BaseModel):
    """``{"type": "function", "function": {"name": ...}}``: call this function."""

    model_config = STRICT_REQUEST

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    """A call as an assistant message carries it: ``arguments`` is JSON text."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    arguments: str


class ToolCall(BaseModel):
    """One of an assistant message's ``tool_calls``, sent back in the history."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    def for_template(self) -> dict[str, Any]:
        """The call as chat templates read it (transformers' convention):
        ``arguments`` as an object when it is JSON text of one."""
        try:
            arguments: Any = json.loads(self.function.arguments)
        except json.JSONDecodeError:
            arguments = self.function.arguments
        if not isinstance(arguments, dict):
            arguments = self.function.arguments
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.function.name, "arguments": arguments},
        }


def check_tool_choice(choice: ToolChoice | None, tools: list[Tool] | None) -> str | None:
    """Why ``choice`` does not go with ``tools``, or None when it does: a
    forced call needs tools, and a named function must be one of them."""
    if choice is None or choice in ("none", "auto"):
        return None
    names = [t.function.name for t in tools or []]
    if not names:
        return f"tool_choice {_shown(choice)} needs tools to call; send tools, or leave it out"
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        return (
            f"tool_choice names the function {choice.function.name!r}, which is not one of "
            f"tools ({', '.join(names)})"
        )
    return None


def _shown(choice: ToolChoice) -> str:
    return repr(choice) if isinstance(choice, str) else f"{{function: {choice.function.name!r}}}"


def duplicate_name(tools: list[Tool]) -> str | None:
    """The first function name two tools share, or None."""
    seen: set[str] = set()
    for tool in tools:
        if tool.function.name in seen:
            return tool.function.name
        seen.add(tool.function.name)
    return None


def forced_call_schema(
    tools: list[Tool], choice: ToolChoice | None, parallel: bool
) -> dict[str, Any] | None:
    """The JSON Schema a forced call's output follows, or None when the call
    is not forced (``auto``, ``none``). A named function is one call of it;
    ``required`` is a call of any of the tools, or with ``parallel`` an
    array of at least one."""
    if choice is None or choice in ("none", "auto") or not tools:
        return None
    if isinstance(choice, NamedToolChoice):
        (tool,) = [t for t in tools if t.function.name == choice.function.name]
        return _call_schema(tool, "#")
    if parallel:
        prefix = "#/items/anyOf"
        calls = [_call_schema(t, f"{prefix}/{i}") for i, t in enumerate(tools)]
        return {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
    calls = [_call_schema(t, f"#/anyOf/{i}") for i, t in enumerate(tools)]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def _call_schema(tool: Tool, at: str) -> dict[str, Any]:
    """One call of ``tool``, a schema placed at the JSON pointer ``at``."""
    parameters = tool.function.parameters or NO_PARAMETERS
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": [tool.function.name]},
            "arguments": rebase_refs(parameters, f"{at}/properties/arguments"),
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def rebase_refs(schema: Any, at: str) -> Any:
    """``schema`` with every local ``$ref`` (``#/...``) pointing under ``at``,
    the place the schema is moved to inside a larger one."""
    if isinstance(schema, dict):
        rebased = {k: rebase_refs(v, at) for k, v in schema.items()}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            rebased["$ref"] = at + ref[1:]
        return rebased
    if isinstance(schema, list):
        return [rebase_refs(v, at) for v in schema]
    return schema
