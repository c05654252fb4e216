"""The registry's admin routes beside loads (routes/admin.py):
``PATCH /v1/admin/models/{name}`` changes how a name routes,
``PATCH /v1/admin/models/{name}:{version}`` a version's canary weight, and
``GET /v1/admin/audit`` lists who loaded, unloaded or rerouted what
(server/registry_store.py keeps both in the store). Admin keys only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from modelbench.config import RoutingPolicy
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError
from modelbench.server.protocol_fields import STRICT_REQUEST
from modelbench.server.registry_store import actor
from modelbench.server.routes.admin import _AUTH_ERRORS, _error

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=_AUTH_ERRORS)


class RoutingChange(BaseModel):
    """What a PATCH changes: the name's routing policy, and the canary weight
    of the version in the path (or of every version, for a name)."""

    model_config = STRICT_REQUEST

    routing: RoutingPolicy | None = None
    weight: float | None = Field(default=None, ge=0.0, le=1e6)


class RoutingState(BaseModel):
    name: str
    routing: RoutingPolicy
    weights: dict[str, float] = Field(description="each version's canary weight")


class AuditItem(BaseModel):
    id: int
    at: str
    actor: str | None
    action: Literal["load", "unload", "route", "fail"]
    model_id: str
    detail: dict[str, Any] | None = None


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditItem]


@router.get(
    "/audit",
    responses={
        400: _error("limit is out of range"),
        409: _error("the registry is not kept in the store (--registry file)"),
        503: _error("the store is unavailable"),
    },
)
async def audit_trail(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="entries, newest first")] = 100,
) -> AuditList:
    """Who loaded, unloaded or rerouted which version, and when (newest first)."""
    store = request.app.state.registry_store
    if store is None:
        raise APIError(
            409,
            "the registry is not kept in the store (this server runs with --registry file), "
            "so there is no audit trail",
            code="registry_not_in_store",
        )
    entries = await store.audit(limit)
    return AuditList(
        data=[
            AuditItem(
                id=e.id,
                at=e.at.isoformat(),
                actor=e.actor,
                action=e.action,
                model_id=e.model_id,
                detail=e.detail,
            )
            for e in entries
        ]
    )


@router.patch(
    "/models/{model_id:path}",
    dependencies=JSON_BODY,
    responses={
        400: _error("a field is invalid"),
        404: _error("no such name or version"),
        503: _error("the store is unavailable (the change would not survive a restart)"),
    },
)
async def change_routing(
    model_id: Annotated[str, Path(description="a name, or name:version")],
    body: RoutingChange,
    request: Request,
    registry: RegistryDep,
) -> RoutingState:
    """Change how a name routes (``routing``: for the name, whether the path
    names it or one of its versions) and canary weights (``weight``: of the
    version named, or of every version of the name), audited and kept in the
    store for versions an admin loaded. An empty body changes nothing."""
    name, _, version = model_id.partition(":")
    targets = [h for h in registry.versions(name) if not version or h.id == model_id]
    if not targets:
        raise APIError(
            404,
            f"model {model_id} is not loaded. Loaded: "
            f"{', '.join(h.id for h in registry.handles()) or 'none'}",
            param="model",
            code="model_not_found",
            type="not_found_error",
        )
    if body.routing is not None or body.weight is not None:
        store = request.app.state.registry_store
        if store is not None:
            await store.record(
                "route", model_id, actor(request), routing=body.routing, weight=body.weight
            )
        if body.weight is not None:
            for handle in targets:
                handle.config = handle.config.model_copy(update={"weight": body.weight})
        if body.routing is not None:
            registry.set_policy(name, body.routing)
    return RoutingState(
        name=name,
        routing=registry.policy(name),
        weights={h.id: h.config.weight for h in registry.versions(name)},
    )
