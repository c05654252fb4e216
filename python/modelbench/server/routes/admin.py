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
from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator

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
from modelbench.models.encoder_loader import is_encoder_model
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError, invalid_value
from modelbench.server.load_checks import (
    check_sampling_defaults,
    estimate_memory,
    inside_model_dirs,
)
from modelbench.server.protocol import ErrorResponse
from modelbench.server.protocol_fields import STRICT_REQUEST
from modelbench.server.registry import ModelRegistry
from modelbench.server.registry_store import actor
from modelbench.server.routes.admin_views import (
    ADMIN_PREFIX,
    LoadStatus,
    LoadStatusList,
    NameStatus,
    load_status,
    status_url,
    versions_status,
)

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

router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], responses=_AUTH_ERRORS)


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
    kv_cache_dtype: Literal["auto", "bfloat16", "int8"] = "auto"
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


class UnloadResponse(BaseModel):
    id: str
    unloaded: bool = True
    requests_in_flight_at_unload: int = Field(
        description="requests still running when it was asked"
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
    data = {**body.model_dump(exclude={"routing"}), **update}
    # Tasks left out: an embedding model's are ["embed"], which only the
    # resolved path shows (a relative one is resolved here).
    if "tasks" not in body.model_fields_set and is_encoder_model(data["path"]):
        data["tasks"] = ["embed"]
    try:
        config = ModelConfig.model_validate(data, strict=False)
    except ValidationError as exc:  # what only the resolved path shows (an embedding model's tasks)
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise invalid_value(ValueError(reasons)) from exc
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
    if registry.remote(config.name) is not None:
        raise APIError(
            409,
            f"{config.name} is served by upstreams here (GET /v1/admin/upstreams); a local "
            "version needs another name",
            param="name",
            code="model_exists",
        )
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
    if store is not None:  # a load that fails is marked failed in the store
        store.watch(handle, actor(request))
    if body.routing is not None:
        registry.set_policy(config.name, body.routing)
    response.headers["Location"] = status_url(handle.id)
    return load_status(handle, registry, memory)


@router.get("/models")
async def list_versions(request: Request, registry: RegistryDep) -> LoadStatusList:
    """Every version this server holds, started with it or loaded by an admin,
    with its state, then (``--registry store``) the registry's versions it
    does not hold; each with its row in the store."""
    rows = await stored_rows(request)
    return LoadStatusList(data=versions_status(registry, rows))


async def stored_rows(request: Request) -> list[Any] | None:
    store = request.app.state.registry_store
    return await store.rows() if store is not None else None


def not_found(model_id: str, registry: ModelRegistry, rows: list[Any] | None) -> APIError:
    """The 404 for a name or version neither held here nor in the registry."""
    known = [s.id for s in versions_status(registry, rows)]
    return APIError(
        404,
        f"model {model_id} is not loaded or loading here, nor in the registry. Versions: "
        f"{', '.join(known) or 'none'}",
        param="model_id",
        code="model_not_found",
        type="not_found_error",
    )


def _name_or_id(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value) and not re.fullmatch(MODEL_ID_PATTERN, value):
        raise ValueError(
            "name a model (SmolLM2-135M-Instruct) or a version (SmolLM2-135M-Instruct:1)"
        )
    return value


NAME_OR_ID_PATTERN = NAME_PATTERN[:-1] + "(:" + VERSION_PATTERN[1:-1] + ")?$"
NameOrId = Annotated[
    str,
    AfterValidator(_name_or_id),
    Path(json_schema_extra={"pattern": NAME_OR_ID_PATTERN}, description="a name, or name:version"),
]


@router.get(
    "/models/{model_id:path}",
    responses={
        400: _error("model_id is neither a name nor name:version"),
        404: _error("no such name or version, here or in the registry"),
    },
)
async def model_status(
    model_id: NameOrId, request: Request, registry: RegistryDep
) -> LoadStatus | NameStatus:
    """A version (``name:version``): how its load goes here (loaded at start
    or by an admin), and its row in the store. A name: each of its versions
    so, and how the name routes."""
    rows = await stored_rows(request)
    name, _, version = model_id.partition(":")
    found = [s for s in versions_status(registry, rows, name) if not version or s.id == model_id]
    if not found:
        raise not_found(model_id, registry, rows)
    if version:
        return found[0]
    return NameStatus(name=name, routing=registry.policy(name), data=found)


class UnloadList(BaseModel):
    """What ``DELETE /v1/admin/models/{name}`` unloaded: each version of the name."""

    object: Literal["list"] = "list"
    data: list[UnloadResponse]


@router.delete(
    "/models/{model_id:path}",
    responses={
        400: _error("model_id is neither a name nor name:version, or timeout_s is out of range"),
        404: _error("no such name or version, here or in the registry"),
        409: _error("the version (or one of the name's) is still loading"),
        503: _error("the store is unavailable (the change would not survive a restart)"),
    },
)
async def unload_model(
    model_id: NameOrId,
    request: Request,
    registry: RegistryDep,
    timeout_s: Annotated[
        float, Query(ge=0, le=3600, description="seconds its requests in flight may finish")
    ] = 30.0,
) -> UnloadResponse | UnloadList:
    """Stop routing to ``name:version``, let its requests finish (up to
    ``timeout_s`` seconds), free it; with the registry in the store, mark it
    unloaded there (so every server drops it), held here or not. A bare name
    unloads each of its versions the same way."""
    if ":" in model_id:
        return await _unload_one(model_id, request, registry, timeout_s, None)
    rows = await stored_rows(request)
    ids = [s.id for s in versions_status(registry, rows, model_id) if _still_served(s)]
    if not ids:
        raise not_found(model_id, registry, rows)
    for one in ids:  # all or none: a version still loading is a 409 before any goes
        handle = registry.get(one)
        if handle is not None and handle.state.value == "loading":
            registry.unload_refusal(handle)
    return UnloadList(data=[await _unload_one(i, request, registry, timeout_s, rows) for i in ids])


def _still_served(status: LoadStatus) -> bool:
    held = status.state != "not_loaded"
    return held or (status.stored is not None and status.stored.state == "active")


async def _unload_one(
    model_id: str,
    request: Request,
    registry: ModelRegistry,
    timeout_s: float,
    rows: list[Any] | None,
) -> UnloadResponse:
    """One version; ``rows``: the registry's, when the caller read them already."""
    handle = registry.get(model_id)
    store = request.app.state.registry_store
    if handle is None and store is not None:  # in the registry only: mark it there
        rows = rows if rows is not None else await store.rows()
        row = next((r for r in rows or [] if r.id == model_id and r.kind == "model"), None)
        if row is not None and row.state == "active":
            await store.record("unload", model_id, actor(request))
            return UnloadResponse(id=model_id, requests_in_flight_at_unload=0)
    in_flight = handle.outstanding if handle is not None else 0
    if store is not None and handle is not None and handle.state.value in ("ready", "failed"):
        await store.record("unload", model_id, actor(request))
    handle = await registry.unload(model_id, timeout_s=timeout_s)
    if store is not None:  # the registry no longer has it: a restart would not serve it
        registry.undeclare_if_empty(handle.name)
    return UnloadResponse(id=handle.id, requests_in_flight_at_unload=in_flight)
