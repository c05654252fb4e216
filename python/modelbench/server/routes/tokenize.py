"""POST /tokenize and POST /detokenize in vLLM's shapes: a prompt (or chat
messages, through the model's chat template) to token ids, and token ids
back to text, with the model's own tokenizer."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from modelbench.server.dependencies import RegistryDep, resolve
from modelbench.server.errors import APIError
from modelbench.server.protocol import ChatMessage, TokenId

router = APIRouter(tags=["tokenize"])


class TokenizeRequest(BaseModel):
    """``prompt`` (a completion's text) or ``messages`` (a chat, rendered with
    the chat template), one of them."""

    model_config = ConfigDict(extra="forbid")

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
    model_config = ConfigDict(extra="forbid")

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
        )
    engine = resolve(request, model).engine
    assert engine is not None
    return engine


@router.post("/tokenize")
async def tokenize(
    body: TokenizeRequest, request: Request, registry: RegistryDep
) -> TokenizeResponse:
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "send prompt or messages, one of them", param="prompt")
    engine = local_engine(request, registry, body.model)
    tokenizer = engine.tokenizer

    def run() -> list[int]:
        if body.messages is not None:
            messages = [m.for_template() for m in body.messages]
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
    except ValueError as exc:  # no chat template
        raise APIError(400, str(exc), param="messages") from exc
    strs = [tokenizer.decode([t], skip_special_tokens=False) for t in ids]
    return TokenizeResponse(
        count=len(ids),
        max_model_len=engine.max_model_len,
        tokens=ids,
        token_strs=strs if body.return_token_strs else None,
    )


@router.post("/detokenize")
async def detokenize(
    body: DetokenizeRequest, request: Request, registry: RegistryDep
) -> DetokenizeResponse:
    engine = local_engine(request, registry, body.model)
    vocab = engine.tokenizer.vocab_size
    bad = [t for t in body.tokens if t >= vocab]
    if bad:
        raise APIError(
            400, f"tokens {bad[:5]} are outside the vocabulary [0, {vocab})", param="tokens"
        )
    text = engine.tokenizer.decode(body.tokens, skip_special_tokens=False)
    return DetokenizeResponse(prompt=text)
