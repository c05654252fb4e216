"""What the admin routes answer about versions (routes/admin.py and
routes/admin_registry.py): a version's load status on this server, with
its entry in the registry kept in the store when there is one, and a name's
versions with its routing."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from modelbench.config import RoutingPolicy
from modelbench.db.tables import ModelVersionRecord
from modelbench.server.load_checks import MemoryEstimate
from modelbench.server.protocol import ModelCard
from modelbench.server.registry import ModelHandle, ModelRegistry
from modelbench.server.routes.models import version_card

ADMIN_PREFIX = "/v1/admin"


class MemoryNeeded(BaseModel):
    """The estimate a load was admitted on (server/load_checks.py)."""

    num_parameters: int | None = Field(
        description="the checkpoint's parameters; null for a tensor (TorchScript) model"
    )
    weights_bytes: int
    kv_cache_bytes: int
    peak_bytes: int
    available_bytes: int


class StoredEntry(BaseModel):
    """A version's row in the registry kept in the store (``--registry store``)."""

    state: Literal["active", "unloaded", "failed"] = Field(
        description="active: every server on the store serves it; unloaded: an admin "
        "removed it; failed: the admin load that made it failed"
    )
    routing: RoutingPolicy | None = None
    created_by: str | None = Field(description="key id, jwt:<sub>, local, or models-file")
    created_at: str
    updated_by: str | None
    updated_at: str


class LoadStatus(BaseModel):
    """Where a version's load is on this server: ``loading``, then ``ready``
    (with its card) or ``failed`` (with the error); ``unloading`` while it
    goes; ``not_loaded``: the registry in the store holds it, this server not."""

    id: str
    state: Literal["loading", "ready", "failed", "unloading", "not_loaded"]
    status_url: str = Field(description="GET it to follow the load")
    declared: bool = Field(description="the server was started with it (else an admin loaded it)")
    load_seconds: float | None = Field(description="from the request to ready or failed")
    error: str | None = None
    memory: MemoryNeeded | None = None
    model: ModelCard | None = Field(default=None, description="once ready")
    stored: StoredEntry | None = Field(
        default=None,
        description="its entry in the registry kept in the store (none with --registry file, "
        "or while the store cannot be read)",
    )


class LoadStatusList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LoadStatus]


class NameStatus(BaseModel):
    """A name's versions (``GET /v1/admin/models/{name}``), and how it routes."""

    object: Literal["model_name"] = "model_name"
    name: str
    routing: RoutingPolicy
    data: list[LoadStatus]


def status_url(model_id: str) -> str:
    return f"{ADMIN_PREFIX}/models/{model_id}"


def stored_entry(row: ModelVersionRecord | None) -> StoredEntry | None:
    if row is None:
        return None
    return StoredEntry(
        state=row.state,  # type: ignore[arg-type]
        routing=row.routing,  # type: ignore[arg-type]
        created_by=row.created_by,
        created_at=row.created_at.isoformat(),
        updated_by=row.updated_by,
        updated_at=row.updated_at.isoformat(),
    )


def load_status(
    handle: ModelHandle,
    registry: ModelRegistry,
    memory: MemoryEstimate | None = None,
    row: ModelVersionRecord | None = None,
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
        if handle.engine is not None or handle.encoder is not None or handle.predictor is not None
        else None,
        stored=stored_entry(row),
    )


def versions_status(
    registry: ModelRegistry, rows: list[ModelVersionRecord] | None, name: str | None = None
) -> list[LoadStatus]:
    """This server's versions (of ``name``, or all), then the registry's
    versions it does not hold (``not_loaded``), each with its row."""
    by_id = {r.id: r for r in rows or [] if r.kind == "model"}
    held = [h for h in registry.handles() if name is None or h.name == name]
    out = [load_status(h, registry, row=by_id.get(h.id)) for h in held]
    held_ids = {h.id for h in held}
    for row in by_id.values():
        if row.id not in held_ids and (name is None or row.name == name):
            out.append(
                LoadStatus(
                    id=row.id,
                    state="not_loaded",
                    status_url=status_url(row.id),
                    declared=False,
                    load_seconds=None,
                    stored=stored_entry(row),
                )
            )
    return out
