"""The ranges SamplingParams and the engine accept, as pydantic field types:
request bodies (the server's protocol, the task API's parameters) declare
their fields with these, so their JSON schemas state what the engine checks
and a value a schema allows is one the engine takes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

# The engine samples in float32: anything larger is infinite there, and a
# positive value below float32's smallest would be 0.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.401298464324817e-45  # the smallest positive float32
MAX_N = 128  # choices per request (prompts × n for a completion): each is a sequence
MAX_LOGPROBS = 20  # alternatives per position, as vLLM's max_logprobs


def _whole_number(value: object) -> object:
    """A JSON number with no fraction (``4.0``) is an integer, as JSON Schema
    reads it; strict models would refuse the float otherwise."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer(ge: int, le: int, **kwargs: Any) -> Any:
    """An integer field in [ge, le] that takes ``4`` and ``4.0``, not ``"4"``."""
    return Annotated[int, Field(ge=ge, le=le, **kwargs), BeforeValidator(_whole_number)]


# The engine keeps counts in 32-bit integers: a larger value is a 400 naming
# the field, not an overflow deep in the bindings. Seeds stop at 2**53 - 1,
# the largest integer every JSON reader (JavaScript's too) keeps exactly.
Int32 = integer(-(2**31), 2**31 - 1)
NonNegativeInt32 = integer(0, 2**31 - 1)
Seed = integer(0, 2**53 - 1)
TokenId = integer(0, 2**31 - 1)
MaxTokens = integer(1, 2**31 - 1)
NumChoices = integer(1, MAX_N)
NumLogprobs = integer(0, MAX_LOGPROBS)
TopK = integer(-1, 2**31 - 1, description="0 or -1: off")
NonEmptyStr = Annotated[str, Field(min_length=1)]


def _at_least_tiny(value: float) -> float:
    """A positive value float32 cannot hold becomes float32's smallest (the
    same sampling: only the most likely token)."""
    return max(value, FLOAT32_TINY)


Temperature = Annotated[float, Field(ge=0, le=FLOAT32_MAX, description="0 is greedy")]
TopP = Annotated[float, Field(gt=0, le=1), AfterValidator(_at_least_tiny)]
MinP = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
RepetitionPenalty = Annotated[
    float, Field(gt=0, le=FLOAT32_MAX, description="1 is off"), AfterValidator(_at_least_tiny)
]
Stop = NonEmptyStr | list[NonEmptyStr]
