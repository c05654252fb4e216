"""Loading and unloading model versions while the server runs:
``POST /v1/admin/models`` (a models-file entry as JSON, plus an optional
routing policy for its name) answers 202 and loads in the background;
``GET /v1/admin/models/{name}:{version}`` says how the load goes;
``DELETE /v1/admin/models/{name}:{version}`` unloads. The other versions
keep serving throughout.

Every route needs an admin key (server/auth.py ``require_admin``). A load
is checked whole before anything is read: its fields, its paths (inside
``MODELBENCH_MODEL_DIRS``, or none for the default model), then the memory
it would take (server/load_checks.py), and only then do its weights load,
one load at a time, in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field, field_validator

from modelbench.config import TASKS, ModelConfig, RoutingPolicy, Task
from modelbench.engine.sampling_ranges import (
    MaxTokens,
    MinP,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    integer,
)
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError, invalid_value
from modelbench.server.load_checks import (
    MemoryEstimate,
    check_sampling_defaults,
    estimate_memory,
    inside_model_dirs,
)
from modelbench.server.protocol import ErrorResponse, ModelCard
from modelbench.server.protocol_fields import STRICT_REQUEST
from modelbench.server.registry import ModelHandle, ModelRegistry
from modelbench.server.registry_store import actor
from modelbench.server.routes.models import version_card

# Names and versions an admin may give: letters, digits, ".", "_", "-", and
# "/" between parts of a name ("org/model"), as in URLs and metric labels.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MODEL_ID_PATTERN = NAME_PATTERN[:-1] + ":" + VERSION_PATTERN[1:]
if TYPE_CHECKING:  # integer() builds the Annotated type at run time
    ModelLen = int
    KVBytes = int
    NumSeqs = int
else:
    ModelLen = integer(1, 1 << 20)
    KVBytes = integer(1, 1 << 50)
    NumSeqs = integer(1, 4096)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# What the require_admin dependency answers, on every route.
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("keys are configured and none, or a wrong one, was sent"),
    403: _error(
        "not an admin key; or no keys are configured and the server was not started "
        "with --allow-open-admin; or (loads) a path outside MODELBENCH_MODEL_DIRS"
    ),
    429: _error("too many requests, or too many failed authentications, from this caller"),
}

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=_AUTH_ERRORS)


class GenerationOverrides(BaseModel):
    """Default sampling settings on top of the model's, in
    generation_config.json's names, in the ranges requests have."""

    model_config = STRICT_REQUEST

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    repetition_penalty: RepetitionPenalty | None = None
    max_new_tokens: MaxTokens | None = None
    do_sample: bool | None = None


class LoadModelRequest(ModelConfig):
    """A models-file entry, checked field by field before anything loads.
    Admin loads run on the CPU, so the dtypes are those it takes (float16 is
    for CUDA), and any KV cache dtype given goes with any model dtype."""

    model_config = STRICT_REQUEST

    name: str = Field(pattern=NAME_PATTERN, max_length=520)
    version: str = Field(default="1", pattern=VERSION_PATTERN)
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        pattern=r"^[^\x00]+$",
        description="inside one of MODELBENCH_MODEL_DIRS (absolute, or relative to it); "
        "omitted: the default model",
    )
    tasks: list[Task] = Field(
        default_factory=lambda: list(get_args(Task)),
        min_length=1,
        max_length=len(TASKS),
        json_schema_extra={"uniqueItems": True},
    )
    weight: float = Field(default=1.0, ge=0.0, le=1e6)
    max_model_len: ModelLen | None = None
    kv_cache_memory: KVBytes | Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        default=None, description="bytes, or a fraction (up to 1.0) of the memory available"
    )
    max_num_seqs: NumSeqs = 64
    dtype: Literal["float32", "bfloat16"] = "float32"
    kv_cache_dtype: Literal["auto", "bfloat16"] = "auto"
    generation_config: str = Field(
        default="auto",
        min_length=1,
        max_length=4096,
        pattern=r"^[^\x00]+$",
        description="auto, vllm, or a folder inside MODELBENCH_MODEL_DIRS",
    )
    override_generation_config: GenerationOverrides | None = None  # type: ignore[assignment]
    routing: RoutingPolicy | None = None

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, tasks: list[str]) -> list[str]:
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must not repeat a task, got {tasks}")
        return tasks


class MemoryNeeded(BaseModel):
    """The estimate a load was admitted on (server/load_checks.py)."""

    num_parameters: int
    weights_bytes: int
    kv_cache_bytes: int
    peak_bytes: int
    available_bytes: int


class LoadStatus(BaseModel):
    """Where a version's load is: ``loading``, then ``ready`` (with its
    card) or ``failed`` (with the error); ``unloading`` while it goes."""

    id: str
    state: Literal["loading", "ready", "failed", "unloading"]
    status_url: str = Field(description="GET it to follow the load")
    declared: bool = Field(description="the server was started with it (else an admin loaded it)")
    load_seconds: float | None = Field(description="from the request to ready or failed")
    error: str | None = None
    memory: MemoryNeeded | None = None
    model: ModelCard | None = Field(default=None, description="once ready")


class UnloadResponse(BaseModel):
    id: str
    unloaded: bool = True
    requests_in_flight_at_unload: int = Field(
        description="requests still running when it was asked"
    )


def status_url(model_id: str) -> str:
    return f"{router.prefix}/models/{model_id}"


def load_status(
    handle: ModelHandle, registry: ModelRegistry, memory: MemoryEstimate | None = None
) -> LoadStatus:
    finished = handle.finished_at
    return LoadStatus(
        id=handle.id,
        state=handle.state.value,
        status_url=status_url(handle.id),
        declared=handle.declared,
        load_seconds=round(finished - handle.loaded_at, 3) if finished is not None else None,
        error=handle.error,
        memory=MemoryNeeded(
            num_parameters=memory.num_parameters,
            weights_bytes=memory.weights_bytes,
            kv_cache_bytes=memory.kv_cache_bytes,
            peak_bytes=memory.peak_bytes,
            available_bytes=memory.available_bytes,
        )
        if memory is not None
        else None,
        model=version_card(handle, registry)
        if handle.engine is not None or handle.encoder is not None
        else None,
    )


def checked_config(body: LoadModelRequest, request: Request) -> ModelConfig:
    """The version to load, its paths inside the model directories; every
    field checked (400/403) before anything is read from disk."""
    model_dirs = request.app.state.settings.model_dirs
    update: dict[str, Any] = {}
    if body.path is not None:
        update["path"] = inside_model_dirs(body.path, model_dirs, "path")
    if body.generation_config not in ("auto", "vllm"):
        update["generation_config"] = inside_model_dirs(
            body.generation_config, model_dirs, "generation_config"
        )
    overrides = body.override_generation_config
    if overrides is not None:
        update["override_generation_config"] = overrides.model_dump(exclude_none=True)
    config = ModelConfig.model_validate(
        {**body.model_dump(exclude={"routing"}), **update}, strict=False
    )
    check_sampling_defaults(config)
    try:
        config.engine_args()
    except ValueError as exc:
        raise invalid_value(exc) from exc
    return config


@router.post(
    "/models",
    status_code=202,
    dependencies=JSON_BODY,  # 415 for a body not sent as JSON
    responses={
        202: {
            "description": "the load began; follow it at status_url (the Location header)",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        400: _error("a field is invalid, or the path holds no model"),
        409: _error(
            "the version is loaded already, another load is in progress, or the model "
            "would not fit in memory (the message gives the numbers)"
        ),
    },
)
async def load_model(
    body: LoadModelRequest, request: Request, response: Response, registry: RegistryDep
) -> LoadStatus:
    """Check a version and start loading it in the background; 202 with the
    status to poll."""
    config = checked_config(body, request)
    registry.check_can_load(config.id)  # before reading a header
    memory = await asyncio.to_thread(estimate_memory, config)
    if not memory.fits:
        raise APIError(
            409,
            f"model {config.id} would not fit in memory: it needs {memory.describe()}. "
            "Lower kv_cache_memory or max_model_len, load it with dtype bfloat16, or unload "
            "a version first",
            param="kv_cache_memory",
            code="insufficient_memory",
        )
    registry.check_can_load(config.id)  # again: the memory estimate took a while
    store = request.app.state.registry_store
    if store is not None:  # kept before it starts, or refused (503) with the store down
        await store.record("load", config.id, actor(request), config, body.routing)
    handle = registry.begin_load(config)
    if body.routing is not None:
        registry.set_policy(config.name, body.routing)
    response.headers["Location"] = status_url(handle.id)
    return load_status(handle, registry, memory)


def _model_id(value: str) -> str:
    if not re.fullmatch(MODEL_ID_PATTERN, value):
        raise ValueError("name the version as name:version, like SmolLM2-135M-Instruct:1")
    return value


ModelId = Annotated[
    str,
    AfterValidator(_model_id),
    Path(json_schema_extra={"pattern": MODEL_ID_PATTERN}, description="name:version"),
]


class LoadStatusList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LoadStatus]


@router.get("/models")
async def list_versions(registry: RegistryDep) -> LoadStatusList:
    """Every version this server holds, started with it or loaded by an admin,
    with its state (``GET /v1/admin/models/{name}:{version}`` for one)."""
    return LoadStatusList(data=[load_status(h, registry) for h in registry.handles()])


@router.get(
    "/models/{model_id:path}",
    responses={
        400: _error("model_id is not name:version"),
        404: _error("no such version"),
    },
)
async def model_status(model_id: ModelId, registry: RegistryDep) -> LoadStatus:
    """How a version's load goes (any version: loaded at start or by an admin)."""
    handle = registry.get(model_id)
    if handle is None:
        raise APIError(
            404,
            f"model {model_id} is not loaded or loading. Versions: "
            f"{', '.join(h.id for h in registry.handles()) or 'none'}",
            param="model_id",
            code="model_not_found",
            type="not_found_error",
        )
    return load_status(handle, registry)


@router.delete(
    "/models/{model_id:path}",
    responses={
        400: _error("model_id is not name:version, or timeout_s is out of range"),
        404: _error("no such version"),
        409: _error("the version is still loading"),
    },
)
async def unload_model(
    model_id: ModelId,
    request: Request,
    registry: RegistryDep,
    timeout_s: Annotated[
        float, Query(ge=0, le=3600, description="seconds its requests in flight may finish")
    ] = 30.0,
) -> UnloadResponse:
    """Stop routing to ``name:version``, let its requests finish (up to
    ``timeout_s`` seconds), free it."""
    handle = registry.get(model_id)
    in_flight = handle.outstanding if handle is not None else 0
    store = request.app.state.registry_store
    if store is not None and handle is not None and handle.state.value in ("ready", "failed"):
        await store.record("unload", model_id, actor(request))
    handle = await registry.unload(model_id, timeout_s=timeout_s)
    return UnloadResponse(id=handle.id, requests_in_flight_at_unload=in_flight)
