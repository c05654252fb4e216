"""GET /health (the process answers) and GET /ready: every version the
server was started with has loaded, and every name it was started with has a
version ready whose engine answers (the body also says whether the store is
migrated yet). Versions an admin loads at run time do not count: a load in
progress, or one that failed, leaves /ready 200 while the others serve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from modelbench._version import __version__
from modelbench.server.registry import ModelRegistry, ModelState

router = APIRouter(tags=["health"])


@router.get("/version")
async def version() -> dict[str, str]:
    """The modelbench version serving (vLLM's /version)."""
    return {"version": __version__}


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    status_code, body = readiness(request.app.state)
    return JSONResponse(body, status_code=status_code)


def readiness(state: Any) -> tuple[int, dict[str, Any]]:
    """/ready's status code and body for the app whose ``state`` this is
    (the gRPC health service follows it too: server/grpc/server.py)."""
    registry: ModelRegistry = state.registry
    if getattr(state, "draining", False):
        return 503, {"status": "draining"}
    models = {h.id: h.state.value for h in registry.handles()}
    declared = [h for h in registry.handles() if h.declared]
    failed = {h.id: h.error for h in declared if h.state == ModelState.FAILED}
    if failed:
        return 503, {"status": "failed", "models": models, "errors": failed}
    if not state.started or registry.is_starting():
        return 503, {"status": "loading", "models": models}
    # A name the server was started with and whose versions were all unloaded
    # serves nothing: every request for it would be a 404.
    gone = [n for n in registry.declared_names() if not registry.ready_versions(n)]
    if gone:
        return 503, {
            "status": "unavailable",
            "models": models,
            "errors": {
                n: f"no version of {n} is ready (the server was started with it); load "
                "one with POST /v1/admin/models"
                for n in gone
            },
        }
    # The loop starts with the first request; once started it must keep running.
    stalled = [h.id for h in registry.ready() if h.engine is not None and not h.engine.is_healthy()]
    if stalled:
        return 503, {
            "status": "failed",
            "models": models,
            "errors": {m: "the engine loop is not running" for m in stalled},
        }
    # Ready while every upstream name has at least one healthy replica.
    gateway = registry.gateway
    upstreams = {n: p.is_ready for n, p in gateway.pools.items()} if gateway is not None else {}
    unready = [name for name, ok in upstreams.items() if not ok]
    if unready:
        return 503, {
            "status": "unavailable",
            "models": models,
            "upstreams": upstreams,
            "errors": {n: "no healthy upstream" for n in unready},
        }
    # Inference does not wait for the store (an outage only delays records);
    # batch and request-log routes answer 503 until it is migrated.
    store = getattr(state, "store", None)
    store_state = "ready" if store is not None and store.is_migrated else "migrating"
    body: dict[str, Any] = {"status": "ready", "models": models, "store": store_state}
    if gateway is not None:
        body["upstreams"] = upstreams
    return 200, body
