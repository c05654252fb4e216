"""The field types request bodies share, with the ranges the engine enforces,
so that the OpenAPI spec states them and a value the schema allows is one the
server accepts.

The value ranges are SamplingParams' (modelbench.engine.sampling_ranges).
Request models are strict (``STRICT_REQUEST``): a number or a boolean sent as
a string (``"max_tokens": "4"``) is a 400, not quietly converted; an integer
is still a number where a float is asked for. Infinities and NaN are refused.

Some refusals no schema can state: they depend on the model served (its
context length, vocabulary, chat template, tasks) or on several fields at
once. Those 400s carry one of ``CONTEXTUAL_CODES`` as their ``code``, and the
spec's 400 response lists them, so a client (and the fuzz test) can tell a
request the schema allows but this model cannot serve from a schema lie.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError

# The codes the engine's own errors carry, one definition (modelbench.engine.errors).
from modelbench.engine.errors import (
    CONFLICTING_FIELDS,
    CONTEXT_LENGTH_EXCEEDED,
    INPUT_MISMATCH,
    INVALID_GUIDED_CONSTRAINT,
)

# Request bodies: undeclared fields refused by name, no type coercion.
STRICT_REQUEST = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def only(schema: dict[str, Any]) -> Any:
    """The field's schema in the spec is exactly ``schema`` (for fields whose
    Python type is wider than what the validators let through)."""
    return WithJsonSchema(schema)


# The 400 codes a request the schema allows may still get, with why.
TOKEN_OUT_OF_VOCABULARY = "token_out_of_vocabulary"
UNSUPPORTED_ROLE = "unsupported_role"
CHAT_TEMPLATE_ERROR = "chat_template_error"
TASK_NOT_SUPPORTED = "task_not_supported"
INVALID_CURSOR = "invalid_cursor"
MODEL_LOAD_FAILED = "model_load_failed"  # raised by server/load_checks.py
INVALID_TESTS = "invalid_tests"  # raised by server/routes/verify.py
CONTEXTUAL_CODES = {
    CONTEXT_LENGTH_EXCEEDED: "the prompt, or the prompt and max_tokens together, do not "
    "fit in the model's context (max_model_len)",
    TOKEN_OUT_OF_VOCABULARY: "a token id is outside the model's vocabulary",
    UNSUPPORTED_ROLE: "a message's role is not one the model's chat template knows",
    CHAT_TEMPLATE_ERROR: "the model has no chat template, or its template refused the messages",
    TASK_NOT_SUPPORTED: "the model does not serve the task asked",
    CONFLICTING_FIELDS: "two fields the schema allows one by one do not go together",
    INVALID_CURSOR: "a page cursor this server did not give out",
    MODEL_LOAD_FAILED: "an admin load's path holds no model this server can read",
    INVALID_TESTS: "a verify request's tests (or its prompt's doctests) do not compile, are "
    "missing, or do not call its entry_point; or its language or stream is not served",
    INVALID_GUIDED_CONSTRAINT: "a structured-output constraint (JSON schema, regex, choice or "
    "grammar) that is not valid or does not compile",
    INPUT_MISMATCH: "a tensor model's input it does not take: an unknown or missing name, "
    "another shape or dtype, more rows than its max_batch_size",
}


def conflict(message: str) -> PydanticCustomError:
    """A validation error for fields that do not go together (code conflicting_fields)."""
    return PydanticCustomError(CONFLICTING_FIELDS, message)


class RequestConflict(ValueError):
    """Fields that do not go together, found after validation (a 400 with
    code conflicting_fields naming ``param``)."""

    code = CONFLICTING_FIELDS

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# Why the OpenAI fields modelbench does not implement are refused (the error
# handler words a 400 with these; any other undeclared field is refused too).
UNSUPPORTED_FIELDS = {
    "logit_bias": (
        "logit_bias is not supported: token logits cannot be biased (send {} or leave it out)"
    ),
    "tools": "tools is not supported here: tool calling is chat's (/v1/chat/completions)",
    "tool_choice": (
        "tool_choice is not supported here: tool calling is chat's (/v1/chat/completions)"
    ),
    "parallel_tool_calls": (
        "parallel_tool_calls is not supported here: tool calling is chat's (/v1/chat/completions)"
    ),
    "functions": "functions is not supported: it is deprecated; send tools instead",
    "function_call": (
        'function_call is not supported beyond "none": it is deprecated; send tool_choice instead'
    ),
    "suffix": "suffix is not supported: completions do not insert text before a suffix",
    "best_of": "best_of is not supported unless it equals n: extra samples are not ranked",
    "echo": "echo is not supported together with logprobs (the prompt's logprobs are not returned)",
    "audio": "audio is not supported: only text output",
    "modalities": "modalities is not supported: only text output",
    "prediction": "prediction is not supported: no predicted outputs",
}


def unsupported(field: str) -> PydanticCustomError:
    """A validation error whose message says why ``field`` is refused."""
    return PydanticCustomError("unsupported", UNSUPPORTED_FIELDS[field])


def check_room(max_tokens: int, room: int, param: str) -> None:
    """``max_tokens`` tokens must fit in the ``room`` the prompt leaves."""
    if max_tokens > room:
        raise ContextTooLong(max_tokens, room, param)


class ContextTooLong(ValueError):
    """More tokens asked for than the prompt leaves of the context; the route
    words it with the prompt's and the model's numbers (code
    context_length_exceeded)."""

    code = CONTEXT_LENGTH_EXCEEDED

    def __init__(self, asked: int, room: int, param: str) -> None:
        super().__init__(f"{param} is {asked}, but only {room} tokens are left")
        self.asked = asked
        self.room = room
        self.param = param
