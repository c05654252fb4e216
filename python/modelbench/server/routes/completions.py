"""POST /v1/completions: OpenAI's text completions, streamed or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

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
    Choice,
    RegistryDep,
    build_params,
    collect,
    describe_request,
    resolve,
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
    """Prompt tokens are counted once however many choices share the prompt."""
    num_prompt = len(out.prompt_token_ids)
    return Usage(prompt_tokens=num_prompt, completion_tokens=num_generated,
                 total_tokens=num_prompt + num_generated)


@router.post("/v1/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, request: Request, registry: RegistryDep
) -> CompletionResponse | StreamingResponse:
    describe_request(body, prompt=body.prompt)
    handle = resolve(request, body.model)
    params = build_params(body.sampling_params, set(CompletionRequest.model_fields))
    request_id = random_id("cmpl")
    deltas = await start_generation(registry, handle, body.prompt, params, request_id, "prompt")
    want_logprobs = params.logprobs is not None
    if body.stream:
        return StreamingResponse(
            stream_completion(deltas, request_id, handle.id, want_logprobs, body.include_usage, params.n),
            media_type="text/event-stream",
        )

    choices, last = await collect(request, deltas, params.n)
    return CompletionResponse(
        id=request_id, model=handle.id,
        usage=usage_of(last, sum(c.num_generated for c in choices)),
        choices=[CompletionChoice(
            index=i, text=c.text, finish_reason=c.finish_reason,
            logprobs=to_logprobs(c.positions, 0) if want_logprobs else None,
        ) for i, c in enumerate(choices)],
    )


async def stream_completion(
    deltas: AsyncIterator[RequestOutput],
    request_id: str,
    model: str,
    want_logprobs: bool,
    include_usage: bool,
    n: int,
) -> AsyncIterator[str]:
    choices = [Choice() for _ in range(n)]  # text offsets and token counts so far
    last = None
    try:
        async for out in deltas:
            delta = out.outputs[0]
            choice = choices[delta.index]
            choice.num_generated += len(delta.token_ids)
            last = out
            logprobs = to_logprobs(delta.logprobs or [], len(choice.text)) if want_logprobs else None
            choice.text += delta.text
            yield sse(CompletionResponse(
                id=request_id, model=model,
                choices=[CompletionChoice(index=delta.index, text=delta.text, logprobs=logprobs,
                                          finish_reason=delta.finish_reason)],
            ))
        if include_usage and last is not None:
            yield sse(CompletionResponse(
                id=request_id, model=model, choices=[],
                usage=usage_of(last, sum(c.num_generated for c in choices))))
        yield SSE_DONE
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]
