"""POST /v1/embeddings: OpenAI's embeddings, from the model's final hidden
states, mean-pooled over each input's tokens and L2-normalized (see
modelbench.engine.embedding). ``encoding_format`` "float" or "base64" (little-endian
float32, what the openai client asks for by default)."""

from __future__ import annotations

import base64
import struct
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from modelbench.server.dependencies import RegistryDep, resolve
from modelbench.server.errors import APIError
from modelbench.server.recorder import current_record
from modelbench.server.routes.generation import until_disconnect

router = APIRouter(tags=["embeddings"])

MAX_INPUTS = 2048  # OpenAI's limit per request


class EmbeddingRequest(BaseModel):
    """OpenAI's fields; any other is a 400 naming it. ``user`` is accepted
    and ignored, as OpenAI does."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        default=None, description="not supported: the model's width is fixed"
    )
    user: str | None = None
    # vLLM's: orders admission (embeddings run beside the scheduler, not in its queue).
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.post("/v1/embeddings")
async def create_embeddings(
    body: EmbeddingRequest, request: Request, registry: RegistryDep
) -> EmbeddingResponse:
    record = current_record.get()
    if record is not None:
        record.describe(prompt=body.input, parameters={"encoding_format": body.encoding_format})
    if isinstance(body.input, list) and len(body.input) > MAX_INPUTS:
        raise APIError(
            400,
            f"input holds {len(body.input)} items; at most {MAX_INPUTS} per request",
            param="input",
        )
    handle = resolve(request, body.model, "embed")
    if body.dimensions is not None:
        raise APIError(
            400,
            "dimensions is not supported: embeddings have the model's hidden size; leave it out",
            param="dimensions",
        )
    registry.admit(handle, body.priority)
    try:
        assert handle.engine is not None
        try:
            output = await until_disconnect(request, handle.engine.embed(body.input))
        except ValueError as exc:  # every message is about one of the inputs
            raise APIError(400, str(exc), param="input") from exc
    finally:
        handle.end(body.priority)
    if record is not None:
        record.prompt_tokens = output.num_prompt_tokens
        dim = len(output.embeddings[0]) if output.embeddings else 0
        record.output = f"{len(output.embeddings)} embeddings of {dim} dimensions"
    return EmbeddingResponse(
        model=handle.id,
        data=[
            Embedding(index=i, embedding=encode(v, body.encoding_format))
            for i, v in enumerate(output.embeddings)
        ],
        usage=EmbeddingUsage(
            prompt_tokens=output.num_prompt_tokens, total_tokens=output.num_prompt_tokens
        ),
    )
