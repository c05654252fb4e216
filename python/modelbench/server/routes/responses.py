"""POST /v1/responses: OpenAI's Responses API, stateless. The input becomes
chat's messages (``instructions`` first, as the system message), rendered by
chat's template and generated on the same path as chat; the answer is one
assistant message, whole or as typed server-sent events. Nothing is stored,
so there is no GET, no delete and no ``previous_response_id``."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.outputs import RequestOutput
from modelbench.engine.sampling_params import SamplingParams
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep, describe_request, resolve
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses, streamed
from modelbench.server.protocol import ChatCompletionRequest, ChatMessage, Usage
from modelbench.server.protocol_fields import TASK_NOT_SUPPORTED
from modelbench.server.protocol_responses import (
    ContentPartEvent,
    IncompleteDetails,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    ResponseError,
    ResponseEvent,
    ResponseObject,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
    StreamEvent,
    TextDeltaEvent,
    TextDoneEvent,
    response_id,
)
from modelbench.server.routes.chat import render_prompt
from modelbench.server.routes.generation import collect, start_generation, usage_of
from modelbench.server.routes.prompts import params_in_context, room

router = APIRouter()

# The engine's finish reason -> the response's status ("completed" otherwise).
# "length" is max_output_tokens or the end of the context; "abort" is the
# engine giving the request up (a runner failure, a shutdown).
STATUS_OF_FINISH: dict[str, ResponseStatus] = {"length": "incomplete", "abort": "failed"}
# A streamed response's events (their SSE ``event`` names the type).
STREAM_EVENT = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "sequence_number": {"type": "integer"}},
    "required": ["type", "sequence_number"],
}


@router.post(
    "/v1/responses",
    response_model=None,
    dependencies=JSON_BODY,
    responses={**error_responses(404), **streamed(ResponseObject, STREAM_EVENT)},
)
async def create_response(
    body: ResponsesRequest, request: Request, registry: RegistryDep
) -> ResponseObject | StreamingResponse:
    messages = body.messages()
    # The messages hold input and instructions: the log's parameters need not repeat them.
    describe_request(
        body.model_copy(update={"input": None, "instructions": None}),
        messages=[m.model_dump(exclude_none=True) for m in messages],
    )
    if registry.remote(body.model) is not None:
        raise APIError(
            400,
            f"the Responses API serves local models only, and {body.model!r} is served by "
            "upstreams: use /v1/chat/completions for it",
            param="model",
            code=TASK_NOT_SUPPORTED,
        )
    handle = resolve(request, body.model)
    engine = handle.engine
    assert engine is not None
    prompt_ids = await render(engine, body.model, messages)
    params = params_in_context(
        lambda: body.sampling_params(room(engine, len(prompt_ids)), engine.sampling_defaults),
        len(prompt_ids),
        engine.max_model_len,
        {"max_tokens": "max_output_tokens"},
    )
    started = started_response(body, params, handle.id)
    deltas = await start_generation(registry, handle, prompt_ids, params, started.id, "input")
    if body.stream:
        return StreamingResponse(stream_response(deltas, started), media_type="text/event-stream")

    choices, last = await collect(request, deltas, 1)
    choice = choices[0]
    usage = usage_of(last, choice.num_generated)
    return finished(started, response_id("msg"), choice.text, choice.finish_reason, usage)


async def render(engine: AsyncEngine, model: str, messages: list[ChatMessage]) -> list[int]:
    """The prompt chat renders for these messages (its template controls at
    their defaults); a template's refusal is a 400 naming ``input``."""
    try:
        return await render_prompt(engine, ChatCompletionRequest(model=model, messages=messages))
    except APIError as exc:
        exc.param = "input"
        raise


def started_response(body: ResponsesRequest, params: SamplingParams, model: str) -> ResponseObject:
    """The response before any output: its id and creation time hold for the
    whole stream. It echoes the settings generation uses."""
    return ResponseObject(
        id=response_id("resp"),
        status="in_progress",
        model=model,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        parallel_tool_calls=True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        tool_choice=body.tool_choice or "auto",
        metadata=body.metadata or {},
        user=body.user,
    )


def finished(
    started: ResponseObject, item_id: str, text: str, finish_reason: str | None, usage: Usage
) -> ResponseObject:
    """The response once generation ended: its one message, status and usage."""
    status = STATUS_OF_FINISH.get(finish_reason or "", "completed")
    message = OutputMessage(
        id=item_id,
        status="completed" if status == "completed" else "incomplete",
        content=[OutputText(text=text)],
    )
    return started.model_copy(
        update={
            "status": status,
            "incomplete_details": (
                IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None
            ),
            "error": (
                ResponseError(code="server_error", message="the engine aborted the request")
                if status == "failed"
                else None
            ),
            "output": [message],
            "usage": ResponseUsage.of(usage),
        }
    )


async def stream_response(
    deltas: AsyncIterator[RequestOutput], started: ResponseObject
) -> AsyncIterator[str]:
    """OpenAI's event sequence for one text message: created, in_progress,
    the item and its part added, text deltas, then text, part and item done,
    and the whole response (completed, incomplete or failed) with usage."""
    numbers = itertools.count()

    def send(event: StreamEvent) -> str:
        event.sequence_number = next(numbers)
        return f"event: {event.type}\ndata: {event.model_dump_json()}\n\n"

    item_id = response_id("msg")
    text, num_generated, last, finish_reason = "", 0, None, None
    try:
        yield send(ResponseEvent(type="response.created", response=started))
        yield send(ResponseEvent(type="response.in_progress", response=started))
        item = OutputMessage(id=item_id, status="in_progress", content=[])
        yield send(OutputItemEvent(type="response.output_item.added", item=item))
        empty = OutputText(text="")
        yield send(
            ContentPartEvent(type="response.content_part.added", item_id=item_id, part=empty)
        )
        async for out in deltas:
            delta = out.outputs[0]
            num_generated += len(delta.token_ids)
            last = out
            finish_reason = delta.finish_reason or finish_reason
            if delta.text:
                text += delta.text
                yield send(TextDeltaEvent(item_id=item_id, delta=delta.text))
        assert last is not None, "the engine ended a stream without a final output"
        done = finished(started, item_id, text, finish_reason, usage_of(last, num_generated))
        yield send(TextDoneEvent(item_id=item_id, text=text))
        part = done.output[0].content[0]
        yield send(ContentPartEvent(type="response.content_part.done", item_id=item_id, part=part))
        yield send(OutputItemEvent(type="response.output_item.done", item=done.output[0]))
        yield send(ResponseEvent(type=f"response.{done.status}", response=done))
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]
