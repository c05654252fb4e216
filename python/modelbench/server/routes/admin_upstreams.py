"""Adding and removing the gateway's upstream replicas while it runs:
``POST /v1/admin/upstreams`` (an ``[[upstreams]]`` entry as JSON),
``GET /v1/admin/upstreams`` and ``DELETE /v1/admin/upstreams/{name}``
(``?url=`` picks the replica when the name has several). With the registry
in the store (server/registry_store.py) the change is kept there first, so
it survives a restart and every gateway and server on the database takes
it within seconds; with ``--registry file`` it lasts until the process
ends. Admin keys only; ``GET /v1/upstreams`` shows the replicas' health to
any key."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError

from modelbench.gateway.config import UpstreamConfig
from modelbench.gateway.service import Gateway
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError
from modelbench.server.protocol_fields import STRICT_REQUEST
from modelbench.server.registry import ModelRegistry
from modelbench.server.registry_store import actor, upstream_id
from modelbench.server.routes.admin import _AUTH_ERRORS, NAME_PATTERN, _error, stored_rows
from modelbench.server.routes.admin_views import ADMIN_PREFIX, StoredEntry, stored_entry

router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], responses=_AUTH_ERRORS)


# An http(s) base URL: a host (a name, IPv4, or [IPv6]), a port in range, a path.
# (A compressed IPv6 address other than ::1 is refused: the schema stays exact.)
PORT = r"(6553[0-5]|655[0-2]\d|65[0-4]\d{2}|6[0-4]\d{3}|[1-5]\d{4}|\d{1,4})"
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
IPV6 = r"(::1|[0-9A-Fa-f]{1,4}(:[0-9A-Fa-f]{1,4}){7})"  # loopback, or written out in full
URL_PATTERN = (
    rf"^https?://({LABEL}(\.{LABEL})*|\[{IPV6}\])(:{PORT})?"
    r"(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$"
)


class AddUpstream(BaseModel):
    """An ``[[upstreams]]`` entry: one replica serving ``name``."""

    model_config = STRICT_REQUEST

    name: str = Field(pattern=NAME_PATTERN, max_length=520, description="what clients send")
    url: str = Field(
        max_length=2048,
        pattern=URL_PATTERN,
        description="its OpenAI base URL, like http://host:8000/v1",
    )
    model: str | None = Field(
        default=None, min_length=1, max_length=520, description="the name it knows the model by"
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="the environment variable holding its key (on every gateway); never logged",
    )
    weight: float = Field(default=1.0, ge=0.0, le=1e6)


class UpstreamStatus(BaseModel):
    id: str = Field(description="its id in the registry (name:upstream-<digest of the url>)")
    name: str
    url: str
    model: str
    state: Literal["healthy", "unhealthy", "not_held"] = Field(
        description="by its health checks here; not_held: in the registry, not on this gateway"
    )
    last_error: str | None = None
    stored: StoredEntry | None = None


class UpstreamList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UpstreamStatus]


def _gateway(registry: ModelRegistry) -> Gateway:
    assert registry.gateway is not None  # the app always makes one (server/app.py)
    return registry.gateway


def _status(config: UpstreamConfig, registry: ModelRegistry, row: Any = None) -> UpstreamStatus:
    replica = _gateway(registry).find(config.name, config.url)
    state: Literal["healthy", "unhealthy", "not_held"] = (
        "not_held" if replica is None else "healthy" if replica.healthy else "unhealthy"
    )
    return UpstreamStatus(
        id=upstream_id(config.name, config.url),
        name=config.name,
        url=config.url,
        model=config.upstream_model,
        state=state,
        last_error=replica.last_error if replica is not None else None,
        stored=stored_entry(row),
    )


@router.get("/upstreams")
async def list_admin_upstreams(request: Request, registry: RegistryDep) -> UpstreamList:
    """Every replica this process routes to, then the registry's it does not hold."""
    rows = await stored_rows(request)
    by_id = {r.id: r for r in rows or [] if r.kind == "upstream"}
    held = [r.config for p in _gateway(registry).pools.values() for r in p.replicas]
    data = [_status(c, registry, by_id.pop(upstream_id(c.name, c.url), None)) for c in held]
    for row in by_id.values():
        try:
            data.append(_status(UpstreamConfig.model_validate(row.config), registry, row))
        except ValidationError:
            continue  # written by another version of modelbench: not one this one can route to
    return UpstreamList(data=data)


@router.post(
    "/upstreams",
    status_code=201,
    dependencies=JSON_BODY,
    responses={
        400: _error("a field is invalid"),
        409: _error(
            "the replica is there already, the name is a local model, or its key's "
            "environment variable is not set in this process"
        ),
        503: _error("the store is unavailable (the change would not survive a restart)"),
    },
)
async def add_upstream(
    body: AddUpstream, request: Request, response: Response, registry: RegistryDep
) -> UpstreamStatus:
    """Add a replica; it takes requests once its first health check passes
    (the answer says whether it did)."""
    try:
        config = UpstreamConfig.model_validate(body.model_dump())
    except ValidationError as exc:
        raise APIError(400, exc.errors()[0]["msg"], param="url") from exc
    try:
        config.api_key()  # its key's variable is set here (each gateway reads its own)
    except ValueError as exc:
        raise APIError(
            409,
            f"{exc}: set it in the environment of every gateway and server that routes to "
            "this upstream, then retry",
            param="api_key_env",
            code="upstream_key_missing",
        ) from exc
    if registry.versions(config.name):
        raise APIError(
            409,
            f"{config.name} is a local model on this server; an upstream needs another name",
            param="name",
            code="model_exists",
        )
    gateway = _gateway(registry)
    if gateway.find(config.name, config.url) is not None:
        raise APIError(
            409,
            f"upstream {config.url} already serves {config.name}; DELETE it first to change it",
            param="url",
            code="upstream_exists",
        )
    row_id = upstream_id(config.name, config.url)
    store = request.app.state.registry_store
    if store is not None:
        await store.record("load", row_id, actor(request), config)
    replica = gateway.add_upstream(config)
    await gateway.check_new(replica)
    response.headers["Location"] = f"{ADMIN_PREFIX}/upstreams"
    return _status(config, registry)


@router.delete(
    "/upstreams/{name:path}",
    responses={
        400: _error("the name has several replicas and no url was given"),
        404: _error("no such upstream"),
        503: _error("the store is unavailable (the change would not survive a restart)"),
    },
)
async def remove_upstream(
    name: Annotated[str, Path(description="the name the replica serves")],
    request: Request,
    registry: RegistryDep,
    url: Annotated[
        str | None, Query(max_length=2048, description="which replica, when there are several")
    ] = None,
) -> UpstreamStatus:
    """Stop routing to a replica (requests in flight finish); a name left
    with none is no longer served."""
    gateway = _gateway(registry)
    pool = gateway.pool(name)
    if url is not None:
        one = gateway.find(name, url)
        replicas = [one] if one is not None else []
    else:
        replicas = list(pool.replicas) if pool is not None else []
    if not replicas:
        names = sorted(gateway.pools)
        raise APIError(
            404,
            f"no upstream {name}{f' at {url}' if url else ''}. Upstreams: "
            f"{', '.join(names) or 'none'}",
            param="url" if pool else "name",
            code="upstream_not_found",
            type="not_found_error",
        )
    if len(replicas) > 1:
        raise APIError(
            400,
            f"{name} has {len(replicas)} replicas ({', '.join(r.url for r in replicas)}); "
            "name one with ?url=",
            param="url",
        )
    config = replicas[0].config
    store = request.app.state.registry_store
    if store is not None:
        await store.record("unload", upstream_id(name, config.url), actor(request))
    status = _status(config, registry)
    gateway.remove_upstream(name, config.url)
    return status
