"""OpenAI's request bodies for completions and chat completions, the error
body, usage and the model list. Only the shapes live here; routes fill them
in (the completion and chat responses and chunks are in protocol_outputs.py).

Requests forbid fields they do not declare: an OpenAI field modelbench does
not implement (``logit_bias``, ...) or a misspelt one is a 400 naming it,
never silently dropped. A few fields are declared so that their harmless
values pass (``user``, ``best_of`` equal to ``n``, an empty ``logit_bias``)
while the others are a 400 saying what is not supported. Structured output
(``response_format``, vLLM's ``guided_*``) is declared by GuidedFields."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from modelbench.engine.guided import GuidedDecodingParams
from modelbench.engine.guided_fields import GuidedFields
from modelbench.engine.sampling_params import SamplingParams
from modelbench.engine.sampling_ranges import (
    MAX_N,
    Int32,
    MaxTokens,
    MinP,
    NonNegativeInt32,
    NumChoices,
    NumLogprobs,
    Penalty,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    TokenId,
    TopK,
    TopP,
)
from modelbench.server.protocol_fields import (
    STRICT_REQUEST,
    UNSUPPORTED_FIELDS,
    RequestConflict,
    check_room,
    conflict,
    only,
    unsupported,
)
from modelbench.server.protocol_tools import (
    Tool,
    ToolCall,
    ToolChoice,
    check_tool_choice,
    duplicate_name,
    forced_call_schema,
)


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


class StreamOptions(BaseModel):
    model_config = STRICT_REQUEST

    include_usage: bool = False


# The deprecated function-calling fields may hold nothing: tools replaced them.
NO_FUNCTIONS = only({"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]})
NO_FUNCTION_CALL = only({"anyOf": [{"type": "string", "enum": ["none"]}, {"type": "null"}]})


class SamplingFields(GuidedFields):
    """Fields shared by completions and chat completions (and compare, which
    sends them to each model). ``None`` means "the default", so clients that
    send explicit nulls are served too. Besides OpenAI's fields, vLLM's
    sampling extras (``top_k``, ``min_p``, ``repetition_penalty``,
    ``min_tokens``, ``stop_token_ids``, ``ignore_eos``, ...) are accepted, as
    the ``openai`` client's ``extra_body`` sends them, and so are the
    structured-output fields (GuidedFields: ``response_format``,
    ``guided_json``, ``guided_regex``, ``guided_choice``, ``guided_grammar``,
    ``structured_outputs``)."""

    model_config = STRICT_REQUEST

    n: NumChoices | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: RepetitionPenalty | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    stop_token_ids: list[TokenId] | None = None
    min_tokens: NonNegativeInt32 | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    ignore_eos: bool | None = None
    priority: Int32 | None = None  # vLLM's: lower runs first (0 by default)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored, as OpenAI does (it is for abuse monitoring)
    logit_bias: Annotated[
        dict[str, float] | None,
        only({"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]}),
    ] = None  # only empty: nothing to bias

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

    def _params(
        self,
        defaults: Mapping[str, Any],
        room: int,
        max_tokens: int | None,
        max_tokens_param: str,
        **values: Any,
    ) -> SamplingParams:
        """SamplingParams of what the request gives over the model's defaults
        (its generation config); ``values`` are the route's own settings.

        ``room`` is what the prompt leaves of the context. A ``max_tokens``
        the client sent must fit in it (a 400 with the numbers, as vLLM);
        without one the answer may take the model's max_new_tokens, else the
        room, whichever is less (and at least ``min_tokens``)."""
        if max_tokens is not None:
            check_room(max_tokens, room, max_tokens_param)
            if self.min_tokens is not None and self.min_tokens > max_tokens:
                raise RequestConflict(
                    f"min_tokens is {self.min_tokens}, more than {max_tokens_param} "
                    f"({max_tokens}); lower min_tokens or raise {max_tokens_param}",
                    "min_tokens",
                )
        else:
            max_tokens = min(defaults.get("max_tokens", room), room)
            if self.min_tokens is not None:
                check_room(self.min_tokens, room, "min_tokens")
                max_tokens = max(max_tokens, self.min_tokens)
        return SamplingParams(
            **{**defaults, **self._sampling_kwargs(), **values, "max_tokens": max_tokens},
            guided=self.guided(),
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class SamplingRequest(SamplingFields):
    """A completion or chat completion of one model."""

    model: str


PromptText = Annotated[str, Field(min_length=1)]
# The route words the error (prompts × n choices, at most MAX_N); the schema states the bound.
PROMPTS_SCHEMA = Field(json_schema_extra={"maxItems": MAX_N})
TokenIds = Annotated[list[TokenId], Field(min_length=1)]


class CompletionRequest(SamplingRequest):
    """``prompt`` is a string, token ids, or a list of either: each prompt
    gets ``n`` choices, prompt k's choice i at index ``k * n + i``.
    ``echo`` puts the prompt's text before each choice's."""

    prompt: (
        PromptText
        | TokenIds
        | Annotated[list[PromptText], Field(min_length=1), PROMPTS_SCHEMA]
        | Annotated[list[TokenIds], Field(min_length=1), PROMPTS_SCHEMA]
    )
    max_tokens: MaxTokens | None = None  # the model's max_new_tokens, else 16 (as OpenAI)
    logprobs: NumLogprobs | None = None
    echo: bool | None = False
    best_of: NumChoices | None = None
    suffix: Annotated[
        str | None, only({"anyOf": [{"type": "string", "maxLength": 0}, {"type": "null"}]})
    ] = None

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value != (info.data.get("n") or 1):
            raise conflict(UNSUPPORTED_FIELDS["best_of"])
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
            raise conflict(UNSUPPORTED_FIELDS["echo"])
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompts, one or several."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            return list(prompt)
        return [prompt]  # type: ignore[list-item]

    def sampling_params(self, room: int, defaults: Mapping[str, Any]) -> SamplingParams:
        """The request's values over ``defaults`` (the model's generation
        config; without either, 16 tokens as OpenAI), for a prompt that leaves
        ``room`` tokens of the context. Raises ValueError naming the field
        when a value is out of range or does not fit."""
        values: dict[str, Any] = {}
        if self.logprobs is not None:
            values["logprobs"] = self.logprobs
        defaults = {"max_tokens": 16, **defaults}
        return self._params(defaults, room, self.max_tokens, "max_tokens", **values)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text"]
    text: str


# The roles every chat request may use; a model's chat template may know more
# (modelbench.server.chat_roles).
STANDARD_ROLES = ("system", "user", "assistant", "tool")


class ChatMessage(BaseModel):
    """A message. ``role`` is one of STANDARD_ROLES or another role the
    model's chat template names (checked against the model, a 400 with code
    unsupported_role otherwise); other fields (``name``, ...) reach the
    template as they are. An assistant message may carry ``tool_calls``; a
    ``tool`` message is a call's result, naming the call in
    ``tool_call_id``. A null or missing ``content`` is empty text (as an
    assistant message that only calls tools has)."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Annotated[
        str,
        only(
            {
                "type": "string",
                "enum": list(STANDARD_ROLES),
                "description": "system, user, assistant or tool; a model whose chat "
                "template names other roles accepts those too",
            }
        ),
    ]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def for_template(self) -> dict[str, Any]:
        """The message as a chat template reads it: text parts joined into one
        string (empty beside tool calls), tool calls' arguments as objects."""
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            message["content"] = "".join(part.text for part in self.content)
        message.setdefault("content", "")
        if self.tool_calls is not None:
            message["tool_calls"] = [call.for_template() for call in self.tool_calls]
        return message


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = False
    top_logprobs: NumLogprobs | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None  # "auto" when tools are given, else "none"
    parallel_tool_calls: bool | None = None  # several calls in one answer (default true)
    functions: Annotated[list[Any] | None, NO_FUNCTIONS] = None  # the deprecated tools
    function_call: Annotated[str | dict[str, Any] | None, NO_FUNCTION_CALL] = None
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
            raise conflict(
                "continue_final_message needs add_generation_prompt: false (the last message "
                "is continued, not answered)"
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
            raise conflict("top_logprobs needs logprobs: true")
        return value

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, value: list[Tool] | None) -> list[Tool] | None:
        name = duplicate_name(value or [])
        if name is not None:  # the two do not go together
            raise conflict(f"two tools are named {name!r}: function names must be unique")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_in_tools(cls, value: ToolChoice | None, info: ValidationInfo) -> ToolChoice | None:
        why = check_tool_choice(value, info.data.get("tools"))
        if why is not None:
            raise conflict(why)
        return value

    @field_validator("functions")
    @classmethod
    def _no_functions(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise unsupported("functions")
        return value

    @field_validator("function_call")
    @classmethod
    def _no_function_call(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value is not None and value != "none":
            raise unsupported("function_call")
        return value

    @property
    def tools_offered(self) -> list[Tool] | None:
        """The tools the model is shown: none when ``tool_choice`` is ``"none"``."""
        return self.tools if self.tools and self.tool_choice != "none" else None

    @property
    def parallel(self) -> bool:
        return self.parallel_tool_calls is not False

    def forced_call_schema(self) -> dict[str, Any] | None:
        """The schema a forced tool call is generated under, or None when
        ``tool_choice`` does not force one."""
        return forced_call_schema(self.tools or [], self.tool_choice, self.parallel)

    @property
    def max_tokens_param(self) -> str:
        """The field the client bounded the answer with (the newer name wins)."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def sampling_params(self, room: int, defaults: Mapping[str, Any]) -> SamplingParams:
        """The request's values over ``defaults`` (the model's generation
        config), for a prompt that leaves ``room`` tokens of the context.
        Without either max_tokens field the answer may take the model's
        max_new_tokens, else the room (as OpenAI does), whichever is less."""
        limit = (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )
        values: dict[str, Any] = {}
        if self.logprobs:
            values["logprobs"] = self.top_logprobs or 0
        params = self._params(defaults, room, limit, self.max_tokens_param, **values)
        forced = self.forced_call_schema()
        if forced is None:
            return params
        if params.guided is not None:
            raise RequestConflict(
                f"tool_choice forces a tool call, whose arguments follow the function's schema; "
                f"it cannot also follow {params.guided.param}: send one of them",
                "tool_choice",
            )
        guided = GuidedDecodingParams(json=forced, param="tool_choice")
        return dataclasses.replace(params, guided=guided)


# ---- responses ------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens served from the prefix cache, not computed again


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class ModelCard(BaseModel):
    """OpenAI's model object, with what modelbench knows besides: ``root`` is
    the bare name, and for a version its number, tasks, state and routing.
    A chat model says how it takes tools: ``tool_format`` is where they are
    rendered (``chat_template``, its own; ``hermes``, modelbench's default
    format) and ``tool_call_parser`` what reads its calls back."""

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
    # A tensor model's (POST /v1/predict): its inputs and outputs (name,
    # dtype, shape with -1 for any size), and a classifier's labels.
    inputs: list[dict[str, Any]] | None = None
    outputs: list[dict[str, Any]] | None = None
    labels: list[str] | None = None
    tool_format: str | None = None
    tool_call_parser: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
