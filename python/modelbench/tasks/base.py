"""What every task shares: the input error, the output, the chat prompt
over one instruction, and the context-length check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelbench.engine.errors import CONTEXT_LENGTH_EXCEEDED, InvalidParameter
from modelbench.models.tokenizer import Tokenizer


class TaskInputError(InvalidParameter):
    """Input a caller got wrong; ``param`` names it (``"parameters.labels"``)."""


# ---- parameters -------------------------------------------------------------


@dataclass
class TaskOutput:
    """What a task returns: the result (text, or label and scores) and metadata."""

    result: str | dict[str, Any]
    metadata: dict[str, Any]


def has_chat_template(tokenizer: Tokenizer) -> bool:
    return bool(tokenizer.chat_template)


def chat_prefix(tokenizer: Tokenizer, instruction: str) -> list[int]:
    """The chat template over one user message, up to where the assistant
    answers. The template writes the special tokens itself."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": instruction}], add_generation_prompt=True
    )
    return tokenizer.encode(text, add_special_tokens=False)


def check_length(num_tokens: int, max_model_len: int) -> None:
    # One slot is left for the token the engine generates after the prompt.
    if num_tokens >= max_model_len:
        raise TaskInputError(
            f"text is too long: the prompt takes {num_tokens} tokens and the model's context "
            f"is {max_model_len}; shorten the text",
            "text",
            CONTEXT_LENGTH_EXCEEDED,
        )
