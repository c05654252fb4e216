"""Loading and unloading model versions while the server runs:
``POST /v1/admin/models`` (a models-file entry as JSON, plus an optional
routing policy for its name) and ``DELETE /v1/admin/models/{name}:{version}``.
The other versions keep serving throughout."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from modelbench.config import ModelConfig, RoutingPolicy
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError, invalid_value
from modelbench.server.protocol import ModelCard
from modelbench.server.routes.models import version_card

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class LoadModelRequest(ModelConfig):
    model_config = ConfigDict(extra="forbid")

    routing: RoutingPolicy | None = None


class UnloadResponse(BaseModel):
    id: str
    unloaded: bool = True
    requests_in_flight_at_unload: int = Field(
        description="requests still running when it was asked"
    )


@router.post("/models", status_code=201)
async def load_model(body: LoadModelRequest, registry: RegistryDep) -> ModelCard:
    """Load a version; answers when it is ready (or 400 with why it could not load)."""
    config = ModelConfig.model_validate(body.model_dump(exclude={"routing"}))
    try:
        config.engine_args()
    except ValueError as exc:
        raise invalid_value(exc) from exc
    try:
        handle = await registry.load(config)
    except APIError:
        raise
    except Exception as exc:  # what the checkpoint holds is the client's input
        await registry.unload(config.id, timeout_s=0)
        raise APIError(
            400,
            f"model {config.id} could not be loaded from "
            f"{config.path or 'the default model'}: {exc}",
            param="path",
            code="model_load_failed",
        ) from exc
    if body.routing is not None:
        registry.set_policy(config.name, body.routing)
    return version_card(handle, registry)


@router.delete("/models/{model_id}")
async def unload_model(
    model_id: str, registry: RegistryDep, timeout_s: float = 30.0
) -> UnloadResponse:
    """Stop routing to ``name:version``, let its requests finish (up to
    ``timeout_s`` seconds), free it."""
    if ":" not in model_id:
        raise APIError(
            400, f"name the version to unload as name:version, got {model_id!r}", param="model"
        )
    if timeout_s < 0:
        raise APIError(400, f"timeout_s must be >= 0, got {timeout_s}", param="timeout_s")
    in_flight = next((h.outstanding for h in registry.handles() if h.id == model_id), 0)
    handle = await registry.unload(model_id, timeout_s=timeout_s)
    return UnloadResponse(id=handle.id, requests_in_flight_at_unload=in_flight)
