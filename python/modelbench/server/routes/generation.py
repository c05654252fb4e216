"""The generation path every generated token passes through on its way to a
client, whatever the route: sampling parameters from the request (a bad one
is a 400 naming the field), admission and submission to the engine, the
choices' deltas merged, gathered for a non-streamed response or sent as
server-sent events, and the usage counted.

A route validates and renders its prompt, calls ``start_generation`` once,
and shapes the response from the deltas (``collect`` or its own stream)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel

from modelbench.engine.outputs import RequestOutput
from modelbench.engine.sampling_params import SamplingParams
from modelbench.engine.sampling_ranges import MAX_N  # choices per request
from modelbench.server.errors import APIError, invalid_value
from modelbench.server.prometheus import RequestObserver
from modelbench.server.protocol import PromptTokensDetails, Usage
from modelbench.server.recorder import current_record
from modelbench.server.registry import ModelHandle, ModelRegistry


def build_params(
    make: Callable[[], SamplingParams], rename: dict[str, str] | None = None
) -> SamplingParams:
    """Call ``make()`` (a request's sampling_params) and turn its ValueError
    into a 400 naming the field; ``rename`` maps a SamplingParams field to the
    request field the client sent it as (``max_completion_tokens``)."""
    try:
        params = make()
    except ValueError as exc:
        raise invalid_value(exc, rename) from exc
    if params.n > MAX_N:
        raise APIError(400, f"n must be <= {MAX_N}, got {params.n}", param="n")
    return params


async def start_generation(
    registry: ModelRegistry,
    handle: ModelHandle,
    prompt: str | list[int],
    params: SamplingParams,
    request_id: str,
    prompt_param: str,
    index_offset: int = 0,
) -> AsyncIterator[RequestOutput]:
    """Admit the request to ``handle`` (429 past its bound), submit it, and
    wait for the first delta, so that bad input (a prompt too long, a token
    outside the vocabulary) is a 400 before any response starts.

    Returns the deltas of all ``params.n`` choices, interleaved; each delta's
    ``outputs[0].index`` says which choice it extends: ``index_offset + i``
    for choice i (which samples with seed + i when a seed is given; a request
    of several prompts starts each with its own offset). Closing the iterator
    aborts what is still running; the version's count of requests in flight
    drops when it ends.
    """
    observer = RequestObserver.begin(handle, params.n)  # metrics: timings start here
    record = current_record.get()  # the request log's row for this request
    registry.admit(handle, params.priority)
    assert handle.engine is not None
    engine = handle.engine
    gens: list[AsyncGenerator[RequestOutput, None]] = []
    try:
        for i in range(params.n):
            one = dataclasses.replace(
                params, n=1, seed=None if params.seed is None else params.seed + i
            )
            sub_id = request_id if params.n == 1 else f"{request_id}-{i}"
            gens.append(engine.generate(prompt, one, sub_id))
        firsts = []
        for gen in gens:
            try:
                firsts.append(await gen.__anext__())
            except ValueError as exc:
                raise invalid_value(exc, {"prompt": prompt_param}) from exc
    except BaseException:
        for gen in gens:
            await gen.aclose()
        handle.end(params.priority)
        raise
    for i, first in enumerate(firsts):
        first.outputs[0].index = index_offset + i
    if record is not None:
        record.add_prompt(len(firsts[0].prompt_token_ids))  # once, however many choices share it

    async def one_choice(i: int, gen: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
        async for out in gen:
            out.outputs[0].index = index_offset + i
            yield out

    def seen(out: RequestOutput) -> RequestOutput:
        if record is not None:
            record.on_delta(out)
        return out

    async def deltas() -> AsyncIterator[RequestOutput]:
        try:
            for first in firsts:
                yield seen(first)
            if len(gens) == 1:
                async for out in one_choice(0, gens[0]):
                    yield seen(out)
            else:
                merged = merge(
                    [one_choice(i, g) for i, g in enumerate(gens) if not firsts[i].finished]
                )
                try:
                    async for out in merged:
                        yield seen(out)
                finally:
                    await merged.aclose()  # stops its pumps before the generators are closed
        finally:
            for gen in gens:
                await gen.aclose()  # aborts the request unless it finished
            handle.end(params.priority)

    return observer.watch(deltas())


async def merge(streams: list[AsyncIterator[RequestOutput]]) -> AsyncGenerator[RequestOutput, None]:
    """Interleave several streams in the order their items arrive."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for item in stream:
                await queue.put(item)
        finally:
            await queue.put(done)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
            else:
                yield item
        for task in tasks:
            task.result()  # re-raise a stream's error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclasses.dataclass
class Choice:
    """One choice of a non-streamed response, gathered from its deltas."""

    text: str = ""
    num_generated: int = 0
    positions: list = dataclasses.field(default_factory=list)
    finish_reason: str | None = None


async def collect(
    request: Request, deltas: AsyncIterator[RequestOutput], n: int
) -> tuple[list[Choice], RequestOutput]:
    """A non-streamed response's material: each choice's text, token count,
    logprobs and finish reason, and one final output (for the prompt).

    A client that disconnects before the end has its request aborted in the
    engine (its KV blocks freed) rather than generated for nobody."""
    try:
        return await until_disconnect(request, gather_choices(deltas, n))
    except APIError:
        await deltas.aclose()  # type: ignore[attr-defined]
        raise


T = TypeVar("T")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or 499 if the client goes away first; then the work
    is cancelled, which aborts its engine requests and frees their blocks."""
    working = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({working, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if not working.done():
        working.cancel()
        await asyncio.gather(working, return_exceptions=True)
        raise APIError(
            499,
            "the client closed the connection before the response was ready",
            code="client_closed_request",
        )
    return working.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read already, so
    the only message left to receive is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def gather_choices(
    deltas: AsyncIterator[RequestOutput], n: int
) -> tuple[list[Choice], RequestOutput]:
    choices = [Choice() for _ in range(n)]
    last = None
    async for out in deltas:
        delta = out.outputs[0]
        choice = choices[delta.index]
        choice.text += delta.text
        choice.num_generated += len(delta.token_ids)
        choice.positions.extend(delta.logprobs or [])
        if out.finished:
            choice.finish_reason = delta.finish_reason
        last = out
    assert last is not None and all(c.finish_reason for c in choices), (
        "the engine ended a stream without a final output"
    )
    return choices, last


def sse(event: BaseModel | str) -> str:
    """One server-sent event."""
    data = event if isinstance(event, str) else event.model_dump_json()
    return f"data: {data}\n\n"


SSE_DONE = sse("[DONE]")


def usage_of(out: RequestOutput, num_generated: int) -> Usage:
    """Prompt tokens are counted once however many choices share the prompt;
    ``cached_tokens`` says how many of them the prefix cache served."""
    return usage(len(out.prompt_token_ids), num_generated, out.metrics.num_cached_tokens)


def usage(num_prompt: int, num_generated: int, num_cached: int = 0) -> Usage:
    return Usage(
        prompt_tokens=num_prompt,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=num_cached),
        completion_tokens=num_generated,
        total_tokens=num_prompt + num_generated,
    )
