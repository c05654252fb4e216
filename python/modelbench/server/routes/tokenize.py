"""POST /tokenize and POST /detokenize in vLLM's shapes: a prompt (or chat
messages, through the model's chat template) to token ids, and token ids
back to text, with the model's own tokenizer."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from modelbench.engine.sampling_ranges import TokenId
from modelbench.server.chat_roles import template_roles, unknown_role
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep, resolve
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses
from modelbench.server.protocol import ChatMessage
from modelbench.server.protocol_fields import (
    CHAT_TEMPLATE_ERROR,
    STRICT_REQUEST,
    TASK_NOT_SUPPORTED,
    TOKEN_OUT_OF_VOCABULARY,
    UNSUPPORTED_ROLE,
)
from modelbench.server.tool_prompt import template_inputs

router = APIRouter(tags=["tokenize"])


def _prompt_or_messages(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [
        {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
        {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
    ]


class TokenizeRequest(BaseModel):
    """``prompt`` (a completion's text) or ``messages`` (a chat, rendered with
    the chat template), one of them."""

    model_config = STRICT_REQUEST | {"json_schema_extra": _prompt_or_messages}

    model: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    add_special_tokens: bool | None = None  # default: True for a prompt, False for messages
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model_config = STRICT_REQUEST

    model: str
    tokens: list[TokenId]


class DetokenizeResponse(BaseModel):
    prompt: str


def local_engine(request: Request, registry: RegistryDep, model: str) -> Any:
    if registry.remote(model) is not None:
        raise APIError(
            400,
            f"model {model!r} is served by an upstream: tokenize with that server",
            param="model",
            code=TASK_NOT_SUPPORTED,
        )
    engine = resolve(request, model).engine
    assert engine is not None
    return engine


@router.post("/tokenize", dependencies=JSON_BODY, responses=error_responses(404))
async def tokenize(
    body: TokenizeRequest, request: Request, registry: RegistryDep
) -> TokenizeResponse:
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "send prompt or messages, one of them", param="prompt")
    engine = local_engine(request, registry, body.model)
    tokenizer = engine.tokenizer
    if body.messages is not None and tokenizer.chat_template:
        role = unknown_role([m.role for m in body.messages], tokenizer.chat_template)
        if role is not None:
            raise APIError(
                400,
                f"messages: role {role!r} is not one this model's chat template knows; use "
                f"one of {', '.join(sorted(template_roles(tokenizer.chat_template)))}",
                param="messages",
                code=UNSUPPORTED_ROLE,
            )

    def run() -> list[int]:
        if body.messages is not None:
            # As chat renders them (tool calls and results in the model's tool format).
            messages, _ = template_inputs(body.messages, None, tokenizer.chat_template or "")
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=body.add_generation_prompt
            )
            special = bool(body.add_special_tokens)  # the template writes its own
        else:
            text = body.prompt or ""
            special = body.add_special_tokens is not False
        return list(tokenizer.encode(text, add_special_tokens=special))

    try:
        ids = await asyncio.to_thread(run)
    except Exception as exc:  # no chat template, or it refused the messages
        raise APIError(
            400,
            f"the chat template could not render the messages: {exc}",
            param="messages",
            code=CHAT_TEMPLATE_ERROR,
        ) from exc
    strs = [tokenizer.decode([t], skip_special_tokens=False) for t in ids]
    return TokenizeResponse(
        count=len(ids),
        max_model_len=engine.max_model_len,
        tokens=ids,
        token_strs=strs if body.return_token_strs else None,
    )


@router.post("/detokenize", dependencies=JSON_BODY, responses=error_responses(404))
async def detokenize(
    body: DetokenizeRequest, request: Request, registry: RegistryDep
) -> DetokenizeResponse:
    engine = local_engine(request, registry, body.model)
    vocab = engine.tokenizer.vocab_size
    bad = [t for t in body.tokens if t >= vocab]
    if bad:
        raise APIError(
            400,
            f"tokens {bad[:5]} are outside the vocabulary [0, {vocab})",
            param="tokens",
            code=TOKEN_OUT_OF_VOCABULARY,
        )
    text = engine.tokenizer.decode(body.tokens, skip_special_tokens=False)
    return DetokenizeResponse(prompt=text)
