"""POST /v1/completions: OpenAI's text completions, streamed or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from modelbench.async_engine import AsyncEngine
from modelbench.outputs import PositionLogprobs, RequestOutput
from modelbench.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
    random_id,
)
from modelbench.server.routes import (
    SSE_DONE,
    collect,
    build_params,
    check_model,
    get_engine,
    sse,
    start_generation,
)

router = APIRouter()


def to_logprobs(positions: list[PositionLogprobs], text_offset: int) -> CompletionLogprobs:
    """OpenAI's legacy logprobs: per token, its text, its logprob, the top
    alternatives (the sampled token comes first in each position)."""
    out = CompletionLogprobs()
    for position in positions:
        chosen = next(iter(position.values()))
        out.tokens.append(chosen.decoded_token)
        out.token_logprobs.append(chosen.logprob)
        out.top_logprobs.append({c.decoded_token: c.logprob for c in position.values()})
        out.text_offset.append(text_offset)
        text_offset += len(chosen.decoded_token)
    return out


def usage_of(out: RequestOutput, num_generated: int) -> Usage:
    num_prompt = len(out.prompt_token_ids)
    return Usage(prompt_tokens=num_prompt, completion_tokens=num_generated,
                 total_tokens=num_prompt + num_generated)


@router.post("/v1/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, request: Request, engine: AsyncEngine = Depends(get_engine)
) -> CompletionResponse | StreamingResponse:
    model = check_model(request, body.model)
    params = build_params(body.sampling_params, set(CompletionRequest.model_fields))
    request_id = random_id("cmpl")
    deltas = await start_generation(engine, body.prompt, params, request_id, "prompt")
    want_logprobs = params.logprobs is not None
    if body.stream:
        return StreamingResponse(
            stream_completion(deltas, request_id, model, want_logprobs, body.include_usage),
            media_type="text/event-stream",
        )

    text, num_generated, positions, last = await collect(deltas)
    return CompletionResponse(
        id=request_id, model=model, usage=usage_of(last, num_generated),
        choices=[CompletionChoice(
            index=0, text=text, finish_reason=last.outputs[0].finish_reason,
            logprobs=to_logprobs(positions, 0) if want_logprobs else None,
        )],
    )


async def stream_completion(
    deltas: AsyncIterator[RequestOutput],
    request_id: str,
    model: str,
    want_logprobs: bool,
    include_usage: bool,
) -> AsyncIterator[str]:
    sent_chars, num_generated, last = 0, 0, None
    try:
        async for out in deltas:
            delta = out.outputs[0]
            num_generated += len(delta.token_ids)
            last = out
            logprobs = to_logprobs(delta.logprobs or [], sent_chars) if want_logprobs else None
            sent_chars += len(delta.text)
            yield sse(CompletionResponse(
                id=request_id, model=model,
                choices=[CompletionChoice(index=0, text=delta.text, logprobs=logprobs,
                                          finish_reason=delta.finish_reason)],
            ))
        if include_usage and last is not None:
            yield sse(CompletionResponse(id=request_id, model=model, choices=[],
                                         usage=usage_of(last, num_generated)))
        yield SSE_DONE
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]
