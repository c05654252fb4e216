"""POST /v1/chat/completions: the prompt is the model's chat template over
the messages; the answer is the assistant's message, streamed or not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.outputs import PositionLogprobs, RequestOutput
from modelbench.server.dependencies import RegistryDep, describe_request, resolve
from modelbench.server.errors import APIError
from modelbench.server.protocol import (
    ChatChoice,
    ChatChoiceLogprobs,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatResponseMessage,
    ChatTokenLogprob,
    ChatTopLogprob,
    DeltaMessage,
    now,
    random_id,
)
from modelbench.server.routes.generation import (
    SSE_DONE,
    build_params,
    collect,
    sse,
    start_generation,
    usage_of,
)
from modelbench.server.routes.remote import answer_if_remote

router = APIRouter()


def to_chat_logprobs(positions: list[PositionLogprobs], top: int) -> ChatChoiceLogprobs:
    content = []
    for position in positions:
        candidates = list(position.values())  # the sampled token first
        chosen = candidates[0]
        alternatives = sorted(candidates, key=lambda c: c.rank)[:top]
        content.append(
            ChatTokenLogprob(
                token=chosen.decoded_token,
                logprob=chosen.logprob,
                bytes=list(chosen.decoded_token.encode()),
                top_logprobs=[
                    ChatTopLogprob(
                        token=c.decoded_token,
                        logprob=c.logprob,
                        bytes=list(c.decoded_token.encode()),
                    )
                    for c in alternatives
                ],
            )
        )
    return ChatChoiceLogprobs(content=content)


async def render_prompt(engine: AsyncEngine, body: ChatCompletionRequest) -> list[int]:
    """The chat template over the messages, tokenized (off the event loop).
    The template writes the special tokens itself, so none are added."""
    messages = [m.for_template() for m in body.messages]

    def render() -> list[int]:
        text = engine.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=body.add_generation_prompt,
            continue_final_message=body.continue_final_message,
            chat_template=body.chat_template,
            **(body.chat_template_kwargs or {}),
        )
        return engine.tokenizer.encode(text, add_special_tokens=False)

    try:
        return await asyncio.to_thread(render)
    except ValueError as exc:  # no chat template
        raise APIError(400, str(exc), param="messages") from exc
    except Exception as exc:  # the template rejected the messages (raise_exception)
        raise APIError(
            400, f"the chat template could not render the messages: {exc}", param="messages"
        ) from exc


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, registry: RegistryDep
) -> ChatCompletionResponse | Response:
    describe_request(body, messages=[m.model_dump(exclude_none=True) for m in body.messages])
    served = await answer_if_remote(request, registry, "/chat/completions", body)
    if isinstance(served, Response):
        return served
    body = served  # a local model, or the local fallback of a remote one
    handle = resolve(request, body.model)
    engine = handle.engine
    assert engine is not None
    prompt_ids = await render_prompt(engine, body)
    room = max(1, engine.max_model_len - len(prompt_ids))
    sent_as = (
        {"max_tokens": "max_completion_tokens"} if body.max_completion_tokens is not None else None
    )
    params = build_params(lambda: body.sampling_params(room, engine.sampling_defaults), sent_as)
    request_id = random_id("chatcmpl")
    deltas = await start_generation(registry, handle, prompt_ids, params, request_id, "messages")
    top = body.top_logprobs or 0
    if body.stream:
        return StreamingResponse(
            stream_chat(
                deltas,
                request_id,
                handle.id,
                bool(body.logprobs),
                top,
                body.include_usage,
                params.n,
                body.echoed(),
            ),
            media_type="text/event-stream",
        )

    choices, last = await collect(request, deltas, params.n)
    return ChatCompletionResponse(
        id=request_id,
        model=handle.id,
        usage=usage_of(last, sum(c.num_generated for c in choices)),
        choices=[
            ChatChoice(
                index=i,
                message=ChatResponseMessage(content=body.echoed() + c.text),
                finish_reason=c.finish_reason,
                logprobs=to_chat_logprobs(c.positions, top) if body.logprobs else None,
            )
            for i, c in enumerate(choices)
        ],
    )


async def stream_chat(
    deltas: AsyncIterator[RequestOutput],
    request_id: str,
    model: str,
    want_logprobs: bool,
    top: int,
    include_usage: bool,
    n: int,
    echoed: str = "",
) -> AsyncIterator[str]:
    created = now()  # one id and one creation time for every chunk of the response

    def chunk(
        index: int,
        delta: DeltaMessage,
        finish_reason: str | None = None,
        logprobs: ChatChoiceLogprobs | None = None,
    ) -> str:
        return sse(
            ChatCompletionChunk(
                id=request_id,
                created=created,
                model=model,
                choices=[
                    ChatChunkChoice(
                        index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason
                    )
                ],
            )
        )

    num_generated, last = 0, None
    try:
        for i in range(n):
            yield chunk(i, DeltaMessage(role="assistant", content=echoed))
        async for out in deltas:
            delta = out.outputs[0]
            num_generated += len(delta.token_ids)
            last = out
            if delta.text or delta.logprobs:
                logprobs = to_chat_logprobs(delta.logprobs or [], top) if want_logprobs else None
                yield chunk(delta.index, DeltaMessage(content=delta.text), logprobs=logprobs)
            if delta.finish_reason is not None:
                yield chunk(delta.index, DeltaMessage(), finish_reason=delta.finish_reason)
        if include_usage and last is not None:
            yield sse(
                ChatCompletionChunk(
                    id=request_id,
                    created=created,
                    model=model,
                    choices=[],
                    usage=usage_of(last, num_generated),
                )
            )
        yield SSE_DONE
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]
