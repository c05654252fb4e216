"""What every route that hands a prompt to a model checks first, with the
model's numbers in the error: the prompt's token ids are in its vocabulary
(code token_out_of_vocabulary), the prompt fits in its context and so does
the answer asked for (code context_length_exceeded, worded as vLLM's).

The routes tokenize a text prompt here (off the event loop) and hand the ids
to the engine, so nothing is tokenized twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.sampling_params import SamplingParams
from modelbench.server.errors import APIError, context_too_long
from modelbench.server.protocol_fields import (
    CONTEXT_LENGTH_EXCEEDED,
    TOKEN_OUT_OF_VOCABULARY,
    ContextTooLong,
)
from modelbench.server.routes.generation import build_params


def check_token_ids(ids: list[int], vocab_size: int, param: str, what: str = "") -> None:
    """Every id is one of the model's ``vocab_size`` tokens; the message
    names ``what`` (``input[2]``), else ``param``."""
    bad = next((i for i, t in enumerate(ids) if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise APIError(
            400,
            f"{what or param} token {bad} is {ids[bad]}, outside the model's vocabulary "
            f"[0, {vocab_size})",
            param=param,
            code=TOKEN_OUT_OF_VOCABULARY,
        )


def check_prompt_length(num_tokens: int, max_model_len: int, param: str, what: str = "") -> None:
    if num_tokens > max_model_len:
        raise APIError(
            400,
            f"{what or param} takes {num_tokens} tokens, more than the model's context of "
            f"{max_model_len} tokens; shorten it",
            param=param,
            code=CONTEXT_LENGTH_EXCEEDED,
        )


async def prompt_token_ids(engine: AsyncEngine, prompt: str | list[int], param: str) -> list[int]:
    """``prompt``'s token ids (a text encoded as the engine encodes it),
    checked against the model's vocabulary and context."""
    if isinstance(prompt, str):
        ids = list(await asyncio.to_thread(engine.tokenizer.encode, prompt))
    else:
        ids = list(prompt)
        check_token_ids(ids, engine.config.vocab_size, param)
    check_prompt_length(len(ids), engine.max_model_len, param)
    return ids


def room(engine: AsyncEngine, num_prompt_tokens: int) -> int:
    """What a prompt leaves of the context for the answer (a prompt that
    fills it still gets one token, as the engine samples after it)."""
    return max(1, engine.max_model_len - num_prompt_tokens)


def params_in_context(
    make: Callable[[], SamplingParams],
    num_prompt_tokens: int,
    max_model_len: int,
    rename: dict[str, str] | None = None,
) -> SamplingParams:
    """``build_params(make, rename)``, with an answer that does not fit
    worded with the prompt's and the model's numbers."""

    def checked() -> SamplingParams:
        try:
            return make()
        except ContextTooLong as exc:
            raise context_too_long(exc, num_prompt_tokens, max_model_len) from exc

    return build_params(checked, rename)
