"""POST /v1/chat/completions: the prompt is the model's chat template over
the messages (and the tools, server/tool_prompt.py); the answer is the
assistant's message, streamed or not, with the tool calls read out of it
(server/tool_parser.py) when the request offers tools."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.outputs import PositionLogprobs, RequestOutput
from modelbench.server import cache_hooks
from modelbench.server.chat_roles import template_roles, unknown_role
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep, describe_request, resolve
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses, streamed
from modelbench.server.protocol import ChatCompletionRequest, now, random_id
from modelbench.server.protocol_fields import CHAT_TEMPLATE_ERROR, UNSUPPORTED_ROLE
from modelbench.server.protocol_outputs import (
    ChatChoice,
    ChatChoiceLogprobs,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatResponseMessage,
    ChatTokenLogprob,
    ChatToolCall,
    ChatTopLogprob,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
)
from modelbench.server.routes.generation import (
    SSE_DONE,
    collect,
    sse,
    start_generation,
    usage_of,
)
from modelbench.server.routes.prompts import check_prompt_length, params_in_context, room
from modelbench.server.routes.remote import answer_if_remote
from modelbench.server.tool_parser import (
    ForcedCallParser,
    HermesParser,
    ParsedDelta,
    ToolCallParser,
)
from modelbench.server.tool_prompt import template_inputs

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
    The template writes the special tokens itself, so none are added. A role
    the template does not know, a template that refuses the messages, or a
    prompt past the context is a 400 naming ``messages``."""
    source = body.chat_template or engine.tokenizer.chat_template
    if not source:
        raise APIError(
            400,
            "this model has no chat template; send a plain prompt to /v1/completions, or a "
            "template in chat_template",
            param="messages",
            code=CHAT_TEMPLATE_ERROR,
        )
    role = unknown_role([m.role for m in body.messages], source)
    if role is not None:
        raise APIError(
            400,
            f"messages: role {role!r} is not one this model's chat template knows; use one of "
            f"{', '.join(sorted(template_roles(source)))}",
            param="messages",
            code=UNSUPPORTED_ROLE,
        )
    messages, variables = template_inputs(body.messages, body.tools_offered, source)

    def render() -> list[int]:
        text = engine.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=body.add_generation_prompt,
            continue_final_message=body.continue_final_message,
            chat_template=body.chat_template,
            **{**variables, **(body.chat_template_kwargs or {})},
        )
        return engine.tokenizer.encode(text, add_special_tokens=False)

    try:
        ids = await asyncio.to_thread(render)
    except Exception as exc:  # the template refused the messages (raise_exception), or broke
        raise APIError(
            400,
            f"the chat template could not render the messages: {exc}",
            param="messages",
            code=CHAT_TEMPLATE_ERROR,
        ) from exc
    if not ids:
        raise APIError(
            400,
            "the chat template rendered these messages as an empty prompt",
            param="messages",
            code=CHAT_TEMPLATE_ERROR,
        )
    check_prompt_length(len(ids), engine.max_model_len, "messages")
    return ids


def tool_call_parser(body: ChatCompletionRequest) -> Callable[[], ToolCallParser] | None:
    """What reads each choice's tool calls: a forced call's JSON, the Hermes
    format in free text when the model may call a tool, or nothing."""
    if body.tools_offered is None:
        return None
    if body.forced_call_schema() is not None:
        return ForcedCallParser
    return lambda: HermesParser(parallel=body.parallel)


def choice_finish_reason(reason: str | None, parser: ToolCallParser | None) -> str | None:
    """OpenAI's ``tool_calls`` for an answer that ended by itself with calls."""
    return "tool_calls" if parser is not None and parser.calls and reason == "stop" else reason


def chat_message(text: str, echoed: str, parser: ToolCallParser | None) -> ChatResponseMessage:
    if parser is None:
        return ChatResponseMessage(content=echoed + text)
    content, calls = parser.parse(text)
    return ChatResponseMessage(
        content=echoed + content if content or echoed or not calls else None,
        tool_calls=[
            ChatToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
            for c in calls
        ]
        or None,
    )


def delta_message(parsed: ParsedDelta) -> DeltaMessage:
    return DeltaMessage(
        content=parsed.content or None,
        tool_calls=[
            DeltaToolCall(
                index=d.index,
                id=d.id,
                type="function" if d.id else None,
                function=DeltaFunctionCall(
                    name=d.name, arguments=d.arguments if d.arguments or d.id else None
                ),
            )
            for d in parsed.tool_calls
        ]
        or None,
    )


@router.post(
    "/v1/chat/completions",
    response_model=None,
    dependencies=JSON_BODY,
    responses={
        **error_responses(404, 502, 504),
        **streamed(ChatCompletionResponse, ChatCompletionChunk),
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, registry: RegistryDep
) -> ChatCompletionResponse | Response:
    describe_request(body, messages=[m.model_dump(exclude_none=True) for m in body.messages])
    cacheable = body.tools_offered is None  # the cache keeps text, not tool calls
    cached = await cache_hooks.lookup_remote(request, registry, body) if cacheable else None
    if cached is not None:
        return cached
    served = await answer_if_remote(request, registry, "/chat/completions", body)
    if isinstance(served, Response):
        return await cache_hooks.remembered(request, served) if cacheable else served
    body = served  # a local model, or the local fallback of a remote one
    handle = resolve(request, body.model)
    cached = await cache_hooks.lookup(request, handle, body) if cacheable else None
    if cached is not None:
        return cached
    engine = handle.engine
    assert engine is not None
    prompt_ids = await render_prompt(engine, body)
    params = params_in_context(
        lambda: body.sampling_params(room(engine, len(prompt_ids)), engine.sampling_defaults),
        len(prompt_ids),
        engine.max_model_len,
        {"max_tokens": body.max_tokens_param},
    )
    request_id = random_id("chatcmpl")
    deltas = await start_generation(registry, handle, prompt_ids, params, request_id, "messages")
    top = body.top_logprobs or 0
    make_parser = tool_call_parser(body)
    if body.stream:
        events = stream_chat(
            deltas,
            request_id,
            handle.id,
            bool(body.logprobs),
            top,
            body.include_usage,
            params.n,
            body.echoed(),
            make_parser,
        )
        return StreamingResponse(
            cache_hooks.remembering(request, events) if cacheable else events,
            media_type="text/event-stream",
        )

    choices, last = await collect(request, deltas, params.n)
    if cacheable:
        await cache_hooks.remember(request)
    parsers = [make_parser() if make_parser else None for _ in choices]
    return ChatCompletionResponse(
        id=request_id,
        model=handle.id,
        usage=usage_of(last, sum(c.num_generated for c in choices)),
        choices=[
            ChatChoice(
                index=i,
                message=chat_message(c.text, body.echoed(), parser),
                finish_reason=choice_finish_reason(c.finish_reason, parser),
                logprobs=to_chat_logprobs(c.positions, top) if body.logprobs else None,
            )
            for i, (c, parser) in enumerate(zip(choices, parsers))
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
    make_parser: Callable[[], ToolCallParser] | None = None,
) -> AsyncIterator[str]:
    created = now()  # one id and one creation time for every chunk of the response
    parsers = [make_parser() for _ in range(n)] if make_parser else None

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
            parser = parsers[delta.index] if parsers else None
            if delta.text or delta.logprobs:
                logprobs = to_chat_logprobs(delta.logprobs or [], top) if want_logprobs else None
                if parser is None:
                    yield chunk(delta.index, DeltaMessage(content=delta.text), logprobs=logprobs)
                else:
                    parsed = parser.feed(delta.text)
                    if parsed or logprobs:
                        yield chunk(delta.index, delta_message(parsed), logprobs=logprobs)
            if delta.finish_reason is not None:
                if parser is not None and (parsed := parser.finish()):
                    yield chunk(delta.index, delta_message(parsed))
                reason = choice_finish_reason(delta.finish_reason, parser)
                yield chunk(delta.index, DeltaMessage(), finish_reason=reason)
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
