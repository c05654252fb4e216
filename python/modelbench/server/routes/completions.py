"""POST /v1/completions: OpenAI's text completions, streamed or not, of one
prompt or several, with the prompt echoed before the text if asked."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelbench.engine.outputs import PositionLogprobs, RequestOutput
from modelbench.engine.sampling_params import SamplingParams
from modelbench.engine.sampling_ranges import MAX_N
from modelbench.models.tokenizer import Tokenizer
from modelbench.server import cache_hooks
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep, describe_request, resolve
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses, streamed
from modelbench.server.protocol import CompletionRequest, Usage, now, random_id
from modelbench.server.protocol_fields import CONFLICTING_FIELDS
from modelbench.server.protocol_outputs import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
)
from modelbench.server.registry import ModelHandle
from modelbench.server.routes.generation import (
    SSE_DONE,
    Choice,
    collect,
    merge,
    sse,
    start_generation,
    usage,
)
from modelbench.server.routes.prompts import params_in_context, prompt_token_ids, room
from modelbench.server.routes.remote import answer_if_remote

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


class Prompts:
    """A completion's prompts (one, or a list) running together: prompt k's
    choice i is choice ``k * n + i``. Each prompt is admitted as a request of
    its own; ``deltas`` interleaves them all."""

    def __init__(self, prompts: list[str | list[int]], token_ids: list[list[int]], n: int) -> None:
        self.prompts = prompts  # as sent: echo repeats them
        self.token_ids = token_ids  # what the engine runs
        self.n = n
        self.num_prompt_tokens = [0] * len(prompts)  # learnt from each prompt's deltas
        self.num_cached_tokens = [0] * len(prompts)  # of those, served by the prefix cache

    @property
    def num_choices(self) -> int:
        return len(self.prompts) * self.n

    async def start(
        self, registry: RegistryDep, handle: ModelHandle, params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        streams: list[AsyncIterator[RequestOutput]] = []
        try:
            for k in range(len(self.prompts)):
                sub_id = request_id if len(self.prompts) == 1 else f"{request_id}-p{k}"
                streams.append(
                    await start_generation(
                        registry, handle, self.token_ids[k], params, sub_id, "prompt", k * self.n
                    )
                )
        except BaseException:
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]
            raise
        return self._deltas(streams)

    async def _deltas(
        self, streams: list[AsyncIterator[RequestOutput]]
    ) -> AsyncIterator[RequestOutput]:
        merged = streams[0] if len(streams) == 1 else merge(streams)
        try:
            async for out in merged:
                k = out.outputs[0].index // self.n
                self.num_prompt_tokens[k] = len(out.prompt_token_ids)
                self.num_cached_tokens[k] = out.metrics.num_cached_tokens
                yield out
        finally:
            await merged.aclose()  # type: ignore[attr-defined]  # stops merge's pumps first
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]

    def usage(self, num_generated: int) -> Usage:
        return usage(sum(self.num_prompt_tokens), num_generated, sum(self.num_cached_tokens))

    def echoes(self, tokenizer: Tokenizer) -> list[str]:
        """Each prompt's text, as ``echo`` puts it before its choices'."""
        return [
            p if isinstance(p, str) else tokenizer.decode(p, skip_special_tokens=False)
            for p in self.prompts
        ]


@router.post(
    "/v1/completions",
    response_model=None,
    dependencies=JSON_BODY,
    responses={
        **error_responses(404, 502, 504),
        **streamed(CompletionResponse, CompletionResponse),
    },
)
async def create_completion(
    body: CompletionRequest, request: Request, registry: RegistryDep
) -> CompletionResponse | Response:
    describe_request(body, prompt=body.prompt)
    cached = await cache_hooks.lookup_remote(request, registry, body)
    if cached is not None:
        return cached
    served = await answer_if_remote(request, registry, "/completions", body)
    if isinstance(served, Response):
        return await cache_hooks.remembered(request, served)
    body = served  # a local model, or the local fallback of a remote one
    handle = resolve(request, body.model)
    cached = await cache_hooks.lookup(request, handle, body)
    if cached is not None:
        return cached
    engine = handle.engine
    assert engine is not None
    texts = body.prompts()
    if len(texts) * (body.n or 1) > MAX_N:
        raise APIError(
            400,
            f"{len(texts)} prompts with n={body.n or 1} make {len(texts) * (body.n or 1)} "
            f"choices; at most {MAX_N} per request",
            param="prompt",
            code=CONFLICTING_FIELDS,
        )
    token_ids = [await prompt_token_ids(engine, p, "prompt") for p in texts]
    longest = max(len(ids) for ids in token_ids)  # the answer must fit after each prompt
    params = params_in_context(
        lambda: body.sampling_params(room(engine, longest), engine.sampling_defaults),
        longest,
        engine.max_model_len,
    )
    request_id = random_id("cmpl")
    prompts = Prompts(texts, token_ids, params.n)
    echoes = prompts.echoes(engine.tokenizer) if body.echo else None
    deltas = await prompts.start(registry, handle, params, request_id)
    want_logprobs = params.logprobs is not None
    if body.stream:
        return StreamingResponse(
            cache_hooks.remembering(
                request,
                stream_completion(
                    deltas,
                    request_id,
                    handle.id,
                    want_logprobs,
                    body.include_usage,
                    prompts,
                    echoes,
                ),
            ),
            media_type="text/event-stream",
        )

    choices, _ = await collect(request, deltas, prompts.num_choices)
    await cache_hooks.remember(request)
    return CompletionResponse(
        id=request_id,
        model=handle.id,
        usage=prompts.usage(sum(c.num_generated for c in choices)),
        choices=[
            CompletionChoice(
                index=i,
                text=(echoes[i // params.n] if echoes else "") + c.text,
                finish_reason=c.finish_reason,
                logprobs=to_logprobs(c.positions, 0) if want_logprobs else None,
            )
            for i, c in enumerate(choices)
        ],
    )


async def stream_completion(
    deltas: AsyncIterator[RequestOutput],
    request_id: str,
    model: str,
    want_logprobs: bool,
    include_usage: bool,
    prompts: Prompts,
    echoes: list[str] | None,
) -> AsyncIterator[str]:
    choices = [Choice() for _ in range(prompts.num_choices)]  # text offsets and token counts so far
    created = now()  # one id and one creation time for every chunk of the response
    try:
        if echoes:  # each choice starts with its prompt's text
            for i in range(prompts.num_choices):
                yield sse(
                    CompletionResponse(
                        id=request_id,
                        created=created,
                        model=model,
                        choices=[CompletionChoice(index=i, text=echoes[i // prompts.n])],
                    )
                )
        async for out in deltas:
            delta = out.outputs[0]
            choice = choices[delta.index]
            choice.num_generated += len(delta.token_ids)
            logprobs = (
                to_logprobs(delta.logprobs or [], len(choice.text)) if want_logprobs else None
            )
            choice.text += delta.text
            yield sse(
                CompletionResponse(
                    id=request_id,
                    created=created,
                    model=model,
                    choices=[
                        CompletionChoice(
                            index=delta.index,
                            text=delta.text,
                            logprobs=logprobs,
                            finish_reason=delta.finish_reason,
                        )
                    ],
                )
            )
        if include_usage:
            yield sse(
                CompletionResponse(
                    id=request_id,
                    created=created,
                    model=model,
                    choices=[],
                    usage=prompts.usage(sum(c.num_generated for c in choices)),
                )
            )
        yield SSE_DONE
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]
