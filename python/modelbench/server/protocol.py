"""OpenAI's request and response bodies for completions and chat completions,
and the error body. Only the shapes live here; routes fill them in.

Requests forbid fields they do not declare: an OpenAI field modelbench does
not implement (``logit_bias``, ``tools``, ...) or a misspelt one is a 400
naming it, never silently dropped. A few fields are declared so that their
harmless values pass (``user``, ``best_of`` equal to ``n``,
``response_format`` text, an empty ``logit_bias``) while the others are a 400
saying what is not supported."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from modelbench.engine.sampling_params import SamplingParams


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# ---- errors ---------------------------------------------------------------


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# ---- requests -------------------------------------------------------------


# The engine keeps counts in 32-bit integers and seeds in 64 bits: a larger
# value is a 400 naming the field, not an overflow deep in the bindings.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]

# Why the OpenAI fields modelbench does not implement are refused (the error
# handler words a 400 with these; any other undeclared field is refused too).
UNSUPPORTED_FIELDS = {
    "logit_bias": (
        "logit_bias is not supported: token logits cannot be biased (send {} or leave it out)"
    ),
    "tools": "tools is not supported: this server does no tool calling",
    "tool_choice": 'tool_choice is not supported: this server does no tool calling (only "none")',
    "parallel_tool_calls": "parallel_tool_calls is not supported: this server does no tool calling",
    "functions": "functions is not supported: this server does no function calling",
    "function_call": (
        'function_call is not supported: this server does no function calling (only "none")'
    ),
    "suffix": "suffix is not supported: completions do not insert text before a suffix",
    "response_format": (
        'response_format is not supported beyond {"type": "text"}: no JSON mode or schema'
    ),
    "best_of": "best_of is not supported unless it equals n: extra samples are not ranked",
    "echo": "echo is not supported together with logprobs (the prompt's logprobs are not returned)",
    "audio": "audio is not supported: only text output",
    "modalities": "modalities is not supported: only text output",
    "prediction": "prediction is not supported: no predicted outputs",
}


def unsupported(field: str) -> PydanticCustomError:
    """A validation error whose message says why ``field`` is refused."""
    return PydanticCustomError("unsupported", UNSUPPORTED_FIELDS[field])


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")  # json_schema's body: refused with its type

    type: str


class SamplingRequest(BaseModel):
    """Fields shared by completions and chat completions. ``None`` means
    "the default", so clients that send explicit nulls are served too.
    Besides OpenAI's fields, vLLM's sampling extras (``top_k``, ``min_p``,
    ``repetition_penalty``, ``min_tokens``, ``stop_token_ids``,
    ``ignore_eos``, ...) are accepted, as the ``openai`` client's
    ``extra_body`` sends them."""

    model_config = ConfigDict(extra="forbid")

    model: str
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: Int32 | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[TokenId] | None = None
    min_tokens: Int32 | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    ignore_eos: bool | None = None
    priority: Int32 | None = None  # vLLM's: lower runs first (0 by default)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored, as OpenAI does (it is for abuse monitoring)
    logit_bias: dict[str, float] | None = None  # only empty: nothing to bias

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise unsupported("logit_bias")
        return value

    def _sampling_kwargs(self) -> dict[str, Any]:
        names = [
            "n",
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "seed",
            "stop",
            "stop_token_ids",
            "min_tokens",
            "include_stop_str_in_output",
            "skip_special_tokens",
            "ignore_eos",
            "priority",
        ]
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def _params(self, defaults: Mapping[str, Any], **values: Any) -> SamplingParams:
        """SamplingParams of what the request gives over the model's defaults
        (its generation config); ``values`` are the route's own settings."""
        return SamplingParams(**{**defaults, **self._sampling_kwargs(), **values})

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingRequest):
    """``prompt`` is a string, token ids, or a list of either: each prompt
    gets ``n`` choices, prompt k's choice i at index ``k * n + i``.
    ``echo`` puts the prompt's text before each choice's."""

    prompt: str | list[TokenId] | list[str] | list[list[TokenId]]
    max_tokens: Int32 | None = None  # the model's max_new_tokens, else 16 (as OpenAI)
    logprobs: Int32 | None = None
    echo: bool | None = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value != (info.data.get("n") or 1):
            raise unsupported("best_of")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise unsupported("suffix")
        return value

    @field_validator("echo")
    @classmethod
    def _echo_without_logprobs(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value and info.data.get("logprobs") is not None:
            raise unsupported("echo")
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompts, one or several."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            return list(prompt)
        return [prompt]  # type: ignore[list-item]

    def sampling_params(self, defaults: Mapping[str, Any]) -> SamplingParams:
        """The request's values over ``defaults`` (the model's generation
        config). Raises ValueError naming the field when a value is out of range."""
        values: dict[str, Any] = {"max_tokens": defaults.get("max_tokens", 16)}
        if self.max_tokens is not None:
            values["max_tokens"] = self.max_tokens
        if self.logprobs is not None:
            values["logprobs"] = self.logprobs
        return self._params(defaults, **values)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None

    def for_template(self) -> dict[str, Any]:
        """The message as a chat template reads it: text parts joined into one string."""
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            message["content"] = "".join(part.text for part in self.content)
        return message


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Int32 | None = None
    max_completion_tokens: Int32 | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=2**31 - 1)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None  # only empty or null: no tool calling
    tool_choice: str | dict[str, Any] | None = None  # only "none" or null
    parallel_tool_calls: bool | None = None  # means nothing without tools
    functions: list[Any] | None = None  # the deprecated spelling of tools
    function_call: str | dict[str, Any] | None = None
    # vLLM's chat-template controls.
    add_generation_prompt: bool = True
    continue_final_message: bool = False  # the last (assistant) message is continued
    chat_template: str | None = None  # a Jinja template for this request only
    chat_template_kwargs: dict[str, Any] | None = None  # extra template variables
    echo: bool = False  # the answer starts with the last message's text when it is the assistant's

    @field_validator("continue_final_message")
    @classmethod
    def _continue_without_generation_prompt(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("add_generation_prompt", True):
            raise PydanticCustomError(
                "continue_with_generation_prompt",
                "continue_final_message needs add_generation_prompt: false (the last message "
                "is continued, not answered)",
            )
        return value

    def echoed(self) -> str:
        """What ``echo`` puts before the generated text."""
        last = self.messages[-1]
        if not self.echo or last.role != "assistant":
            return ""
        return str(last.for_template().get("content") or "")

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise PydanticCustomError("logprobs_required", "top_logprobs needs logprobs: true")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: ResponseFormat | None) -> ResponseFormat | None:
        if value is not None and value.type != "text":
            raise unsupported("response_format")
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value:
            raise unsupported(str(info.field_name))
        return value

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(
        cls, value: str | dict[str, Any] | None, info: ValidationInfo
    ) -> str | dict[str, Any] | None:
        if value is not None and value != "none":
            raise unsupported(str(info.field_name))
        return value

    def sampling_params(self, room: int, defaults: Mapping[str, Any]) -> SamplingParams:
        """The request's values over ``defaults`` (the model's generation
        config). Without either max_tokens field the answer may take the
        model's max_new_tokens, else the ``room`` left in the context (as
        OpenAI does), whichever is less."""
        limit = (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )
        values: dict[str, Any] = {
            "max_tokens": min(defaults.get("max_tokens", room), room) if limit is None else limit
        }
        if self.logprobs:
            values["logprobs"] = self.top_logprobs or 0
        return self._params(defaults, **values)


# ---- responses ------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens served from the prefix cache, not computed again


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatTopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob] = Field(default_factory=list)


class ChatChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    """What a chunk adds; fields it does not add are left out, as OpenAI does."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """OpenAI's model object, with what modelbench knows besides: ``root`` is
    the bare name, and for a version its number, tasks, state and routing."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "modelbench"
    root: str | None = None
    version: str | None = None
    tasks: list[str] | None = None
    state: str | None = None
    routing: str | None = None
    default: bool | None = None
    weight: float | None = None
    outstanding: int | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
