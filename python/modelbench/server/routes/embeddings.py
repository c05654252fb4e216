"""POST /v1/embeddings: OpenAI's embeddings. An embedding model
(all-MiniLM-L6-v2, or another sentence-transformers BERT folder) pools as
its folder says (engine/encoder_engine.py); a language model's final hidden
states are mean-pooled over each input's tokens and L2-normalized (see
modelbench.engine.embedding). ``encoding_format`` "float" or "base64" (little-endian
float32, what the openai client asks for by default).

Truncation (embedding models): an input past the model's max_seq_length
(256 tokens for all-MiniLM-L6-v2) is cut to it, and ``usage.truncated``
counts the inputs that were; with ``"truncate": false`` such an input is a
400 naming the limit. A language model never truncates: a prompt past its
context is a 400 either way."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from modelbench.engine.embedding import token_ids_of
from modelbench.engine.sampling_ranges import Int32, TokenId
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep, resolve
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses
from modelbench.server.protocol_fields import STRICT_REQUEST, only
from modelbench.server.recorder import current_record
from modelbench.server.registry import ModelHandle
from modelbench.server.routes.generation import until_disconnect
from modelbench.server.routes.prompts import check_prompt_length, check_token_ids

router = APIRouter(tags=["embeddings"])

MAX_INPUTS = 2048  # OpenAI's limit per request
# The route words the error; the schema states the same.
MAX_INPUTS_SCHEMA = Field(json_schema_extra={"minItems": 1, "maxItems": MAX_INPUTS})


class EmbeddingRequest(BaseModel):
    """OpenAI's fields; any other is a 400 naming it. ``user`` is accepted
    and ignored, as OpenAI does."""

    model_config = STRICT_REQUEST

    model: str
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], MAX_INPUTS_SCHEMA]
        | Annotated[list[TokenId], MAX_INPUTS_SCHEMA]
        | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], MAX_INPUTS_SCHEMA]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[
        int | None,
        only({"type": "null", "description": "not supported: the model's width is fixed"}),
    ] = None
    user: str | None = None
    # vLLM's: orders admission (embeddings run beside the scheduler, not in its queue).
    priority: Int32 = 0
    # modelbench's: an embedding model cuts inputs past its max_seq_length (true, the
    # default; usage.truncated counts them) or refuses them with a 400 (false).
    truncate: bool = True


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int  # as embedded (after truncation)
    total_tokens: int
    truncated: int = 0  # inputs cut to the embedding model's max_seq_length


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.post("/v1/embeddings", dependencies=JSON_BODY, responses=error_responses(404))
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
    if handle.encoder is not None:
        return await _embed_with_encoder(body, request, registry, handle)
    engine = handle.engine
    assert engine is not None
    try:
        ids = await asyncio.to_thread(token_ids_of, engine.tokenizer, body.input)
    except ValueError as exc:  # every message is about one of the inputs
        raise APIError(400, str(exc), param="input") from exc
    for i, one in enumerate(ids):
        check_token_ids(one, engine.config.vocab_size, "input", f"input[{i}]")
        check_prompt_length(len(one), engine.max_model_len, "input", f"input[{i}]")
    registry.admit(handle, body.priority)
    try:
        try:
            output = await until_disconnect(request, engine.embed(ids))
        except ValueError as exc:  # every message is about one of the inputs
            raise APIError(400, str(exc), param="input") from exc
    finally:
        handle.end(body.priority)
    return _response(body, handle, output, record)


async def _embed_with_encoder(
    body: EmbeddingRequest, request: Request, registry: RegistryDep, handle: ModelHandle
) -> EmbeddingResponse:
    """/v1/embeddings on an embedding model: truncation as the module says."""
    record = current_record.get()
    encoder = handle.encoder
    assert encoder is not None
    try:
        ids, truncated = await asyncio.to_thread(encoder.token_ids, body.input, body.truncate)
    except ValueError as exc:  # every message is about one of the inputs
        raise APIError(400, str(exc), param="input") from exc
    registry.admit(handle, body.priority)
    try:
        output = await until_disconnect(request, encoder.embed_ids(ids, truncated))
    finally:
        handle.end(body.priority)
    return _response(body, handle, output, record, truncated=output.truncated)


def _response(
    body: EmbeddingRequest, handle: ModelHandle, output: Any, record: Any, truncated: int = 0
) -> EmbeddingResponse:
    """The response (and the request's record) for either kind of model."""
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
            prompt_tokens=output.num_prompt_tokens,
            total_tokens=output.num_prompt_tokens,
            truncated=truncated,
        ),
    )
