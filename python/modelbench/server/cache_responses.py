"""The responses a cache hit is answered with: the shape the miss had, as
JSON or as server-sent events, for completions and chat (server/cache_hooks.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from modelbench.cache.entry import Answer
from modelbench.server.protocol import PromptTokensDetails, Usage, now, random_id
from modelbench.server.protocol_outputs import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatResponseMessage,
    CompletionChoice,
    CompletionResponse,
    DeltaMessage,
)


def usage(answer: Answer) -> Usage:
    return Usage(
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        total_tokens=answer.prompt_tokens + answer.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=answer.prompt_tokens),
    )


def completion_response(
    answer: Answer, model: str, echoes: list[str] | None, n: int
) -> dict[str, Any]:
    return CompletionResponse(
        id=random_id("cmpl"),
        model=model,
        usage=usage(answer),
        choices=[
            CompletionChoice(
                index=i, text=(echoes[i // n] if echoes else "") + text, finish_reason=reason
            )
            for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons))
        ],
    ).model_dump(mode="json")


def chat_response(answer: Answer, model: str, echoed: str) -> dict[str, Any]:
    return ChatCompletionResponse(
        id=random_id("chatcmpl"),
        model=model,
        usage=usage(answer),
        choices=[
            ChatChoice(
                index=i, message=ChatResponseMessage(content=echoed + text), finish_reason=reason
            )
            for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons))
        ],
    ).model_dump(mode="json")


def _sse(event: Any) -> str:
    return f"data: {event if isinstance(event, str) else event.model_dump_json()}\n\n"


async def completion_events(
    answer: Answer, model: str, echoes: list[str] | None, n: int, include_usage: bool
) -> AsyncIterator[str]:
    request_id, created = random_id("cmpl"), now()
    for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons)):
        choice = CompletionChoice(
            index=i, text=(echoes[i // n] if echoes else "") + text, finish_reason=reason
        )
        yield _sse(
            CompletionResponse(id=request_id, created=created, model=model, choices=[choice])
        )
    if include_usage:
        yield _sse(
            CompletionResponse(
                id=request_id, created=created, model=model, choices=[], usage=usage(answer)
            )
        )
    yield _sse("[DONE]")


async def chat_events(
    answer: Answer, model: str, echoed: str, include_usage: bool
) -> AsyncIterator[str]:
    request_id, created = random_id("chatcmpl"), now()

    def chunk(index: int, delta: DeltaMessage, reason: str | None = None) -> str:
        choice = ChatChunkChoice(index=index, delta=delta, finish_reason=reason)
        return _sse(
            ChatCompletionChunk(id=request_id, created=created, model=model, choices=[choice])
        )

    for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons)):
        yield chunk(i, DeltaMessage(role="assistant", content=echoed))
        if text:
            yield chunk(i, DeltaMessage(content=text))
        yield chunk(i, DeltaMessage(), reason)
    if include_usage:
        yield _sse(
            ChatCompletionChunk(
                id=request_id, created=created, model=model, choices=[], usage=usage(answer)
            )
        )
    yield _sse("[DONE]")
