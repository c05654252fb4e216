"""OpenAI's Responses API bodies (``POST /v1/responses``), stateless: the
request, the response object, and the typed events of its stream. Only the
shapes live here; routes/responses.py fills them in.

Nothing is kept: ``store`` is accepted (absent, false or true) but the
response is never stored, so ``previous_response_id`` is a 400 telling the
client to send the whole conversation in ``input``. Only text goes in and
out: other input items (function call outputs, images, files), tools,
background mode, structured output and reasoning settings are 400s saying
so, and a field the request does not declare is a 400 naming it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from modelbench.engine.sampling_params import SamplingParams
from modelbench.engine.sampling_ranges import (
    Int32,
    MaxTokens,
    MinP,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
)
from modelbench.server.protocol import ChatMessage, Usage, now
from modelbench.server.protocol_fields import (
    STRICT_REQUEST,
    check_room,
    only,
)


def response_id(prefix: str) -> str:
    """OpenAI's form of a Responses API id: ``resp_...``, ``msg_...``."""
    return f"{prefix}_{uuid.uuid4().hex}"


def not_supported(what: str) -> PydanticCustomError:
    """A validation error saying ``what`` this server does not do."""
    return PydanticCustomError("unsupported", what)


# ---- requests -------------------------------------------------------------

TEXT_PARTS = ("input_text", "output_text")


class InputText(BaseModel):
    """A text part of an input message. An ``output_text`` part of an earlier
    response, sent back as it came, is read as text (its annotations and
    logprobs are ignored)."""

    model_config = STRICT_REQUEST

    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") not in TEXT_PARTS:
            raise not_supported(
                f"content parts of type {data.get('type')!r} are not supported: "
                "only text (input_text, output_text)"
            )
        return data


class InputMessage(BaseModel):
    """A message item of ``input``. An assistant message of an earlier
    response's ``output``, sent back as it came, is accepted (its ``id`` and
    ``status`` are ignored)."""

    model_config = STRICT_REQUEST

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _messages_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type", "message") != "message":
            raise not_supported(
                f"input items of type {data.get('type')!r} are not supported: only messages "
                "(the Responses API here does no tool calling, which chat completions do, and "
                "reads no images or files)"
            )
        return data

    def for_template(self) -> ChatMessage:
        """The message as chat reads it: text parts joined into one string,
        and ``developer`` as ``system`` (chat templates know no developer role)."""
        content = self.content
        text = content if isinstance(content, str) else "".join(p.text for p in content)
        return ChatMessage(role="system" if self.role == "developer" else self.role, content=text)


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # json_schema's body: refused by type

    type: Annotated[str, only({"type": "string", "enum": ["text"]})]

    @field_validator("type")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        if value != "text":
            raise not_supported(
                'only {"type": "text"} is supported: no JSON mode or structured output'
            )
        return value


class TextConfig(BaseModel):
    model_config = STRICT_REQUEST

    format: TextFormat | None = None


# The sampling fields a request may set over the model's defaults (besides
# max_output_tokens): OpenAI's, and vLLM's extras as the openai client's
# extra_body sends them.
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "stop",
    "ignore_eos",
    "priority",
)


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``. ``input`` is a string (one user message) or
    message items; ``instructions`` becomes a leading system message."""

    model_config = STRICT_REQUEST

    model: str
    input: str | Annotated[list[InputMessage], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    repetition_penalty: RepetitionPenalty | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    ignore_eos: bool | None = None
    priority: Int32 | None = None  # vLLM's: lower runs first (0 by default)
    stream: bool | None = False
    store: bool | None = None  # accepted whatever its value: nothing is ever stored
    metadata: dict[str, str] | None = None  # echoed back
    user: str | None = None  # accepted and echoed, as OpenAI does
    # Only null: nothing is kept to continue.
    previous_response_id: Annotated[str | None, only({"type": "null"})] = None
    tools: Annotated[  # only empty: no tool calling
        list[Any] | None, only({"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]})
    ] = None
    tool_choice: Annotated[  # only "none" or "auto" (there are no tools)
        str | dict[str, Any] | None,
        only({"anyOf": [{"type": "string", "enum": ["none", "auto"]}, {"type": "null"}]}),
    ] = None
    parallel_tool_calls: bool | None = None  # means nothing without tools
    background: Annotated[  # only false
        bool | None, only({"anyOf": [{"type": "boolean", "enum": [False]}, {"type": "null"}]})
    ] = None
    text: TextConfig | None = None  # only {"format": {"type": "text"}}
    reasoning: Annotated[dict[str, Any] | None, only({"type": "null"})] = None  # only null

    @field_validator("input", mode="before")
    @classmethod
    def _some_input(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise PydanticCustomError(
                "empty_input", "no messages: send a string or at least one message"
            )
        return value

    @field_validator("previous_response_id")
    @classmethod
    def _stateless(cls, value: str | None) -> str | None:
        if value is not None:
            raise not_supported(
                "responses are not kept on this server (it is stateless): send the whole "
                "conversation in input instead"
            )
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise not_supported(
                "tools are not supported: the Responses API here does no tool calling "
                "(/v1/chat/completions does)"
            )
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value not in (None, "none", "auto"):
            raise not_supported(
                'only "none" or "auto" is supported: the Responses API here does no tool '
                "calling (/v1/chat/completions does)"
            )
        return value

    @field_validator("background")
    @classmethod
    def _no_background(cls, value: bool | None) -> bool | None:
        if value:
            raise not_supported(
                "background responses are not supported: nothing is kept to poll for later"
            )
        return value

    @field_validator("reasoning")
    @classmethod
    def _no_reasoning(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            raise not_supported("reasoning settings are not supported: no reasoning models")
        return value

    def messages(self) -> list[ChatMessage]:
        """The conversation as chat messages, ``instructions`` first as the system message."""
        items = (
            [InputMessage(role="user", content=self.input)]
            if isinstance(self.input, str)
            else self.input
        )
        leading = (
            []
            if self.instructions is None
            else [ChatMessage(role="system", content=self.instructions)]
        )
        return leading + [item.for_template() for item in items]

    def sampling_params(self, room: int, defaults: Mapping[str, Any]) -> SamplingParams:
        """The request's values over ``defaults`` (the model's generation
        config). max_output_tokens must fit in the ``room`` left in the
        context; without it the answer may take the model's max_new_tokens,
        else the room, whichever is less. Raises ValueError naming the field
        when a value is out of range or does not fit."""
        given = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        if self.max_output_tokens is not None:
            check_room(self.max_output_tokens, room, "max_output_tokens")
            max_tokens = self.max_output_tokens
        else:
            max_tokens = min(defaults.get("max_tokens", room), room)
        return SamplingParams(
            **{
                **defaults,
                **{name: value for name, value in given.items() if value is not None},
                "max_tokens": max_tokens,
            }
        )


# ---- the response ---------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class InputTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens served from the prefix cache, not computed again


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> ResponseUsage:
        """The Responses API's names for chat's usage."""
        details = usage.prompt_tokens_details
        return cls(
            input_tokens=usage.prompt_tokens,
            input_tokens_details=InputTokensDetails(
                cached_tokens=details.cached_tokens if details is not None else 0
            ),
            output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


class TextFormatText(BaseModel):
    type: Literal["text"] = "text"


class ResponseText(BaseModel):
    format: TextFormatText = Field(default_factory=TextFormatText)


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseObject(BaseModel):
    """The response, in the shape the ``openai`` client parses. The settings
    it echoes are the ones generation used (the model's defaults filled in);
    ``store`` is always false: nothing is kept."""

    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=now)
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    output: list[OutputMessage] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float
    top_p: float
    parallel_tool_calls: bool
    tool_choice: str | dict[str, Any]
    tools: list[Any] = Field(default_factory=list)
    text: ResponseText = Field(default_factory=ResponseText)
    truncation: Literal["disabled"] = "disabled"
    background: bool = False
    previous_response_id: None = None
    store: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
    user: str | None = None


# ---- stream events --------------------------------------------------------


class StreamEvent(BaseModel):
    """An event of a streamed response; the stream numbers them in order."""

    type: str
    sequence_number: int = 0


class ResponseEvent(StreamEvent):
    """response.created, .in_progress, .completed, .incomplete, .failed."""

    response: ResponseObject


class OutputItemEvent(StreamEvent):
    """response.output_item.added and .done."""

    output_index: int = 0
    item: OutputMessage


class ContentPartEvent(StreamEvent):
    """response.content_part.added and .done."""

    item_id: str
    output_index: int = 0
    content_index: int = 0
    part: OutputText


class TextDeltaEvent(StreamEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    item_id: str
    output_index: int = 0
    content_index: int = 0
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class TextDoneEvent(StreamEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    item_id: str
    output_index: int = 0
    content_index: int = 0
    text: str
    logprobs: list[Any] = Field(default_factory=list)
