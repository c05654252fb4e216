"""GET /v1/upstreams: the gateway's upstreams by name, each replica with its
health, breaker state, requests in flight and latency (never its key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelbench.server.dependencies import RegistryDep

router = APIRouter(tags=["upstreams"])


@router.get("/v1/upstreams")
async def list_upstreams(registry: RegistryDep) -> dict[str, Any]:
    gateway = registry.gateway
    return {"object": "list", "data": gateway.cards() if gateway is not None else []}
