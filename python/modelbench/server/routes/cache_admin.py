"""DELETE /v1/admin/cache: empty the response cache, or only the entries of
one model (``?model=name``) or of one API key's requests (``?key=key_...``).
An admin route: server/auth.py ``require_admin``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from modelbench.cache.redis_backend import CacheUnavailable
from modelbench.server.errors import APIError
from modelbench.server.protocol import ErrorResponse

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class CacheCleared(BaseModel):
    object: str = "cache.cleared"
    removed: int  # entries deleted
    model: str | None = None
    key: str | None = None


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


@router.delete(
    "/cache",
    responses={
        401: _error("keys are configured and none, or a wrong one, was sent"),
        403: _error("not an admin key"),
        409: _error("the response cache is off on this server"),
        429: _error("too many requests from this caller"),
        503: _error("the cache's Redis does not answer"),
    },
)
async def clear_cache(
    request: Request,
    model: Annotated[
        str | None, Query(min_length=1, max_length=255, description="only this model's entries")
    ] = None,
    key: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="only entries of this key's requests"),
    ] = None,
) -> CacheCleared:
    cache = getattr(request.app.state, "cache", None)
    if cache is None:
        raise APIError(
            409,
            "the response cache is off on this server: start it with --cache exact or "
            "--cache semantic (or a model's [models.cache] mode)",
            code="cache_off",
        )
    name = model.partition(":")[0] if model else None  # every version of the name
    try:
        removed = await cache.clear(model_name=name, owner=key)
    except CacheUnavailable as exc:
        raise APIError(
            503, f"the cache's Redis does not answer: {exc}", code="cache_unavailable"
        ) from exc
    return CacheCleared(removed=removed, model=model, key=key)
