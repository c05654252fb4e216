"""GET /health (the process answers) and GET /ready (the model is loaded)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    state = request.app.state
    if getattr(state, "engine", None) is not None:
        return JSONResponse({"status": "ready"})
    error = getattr(state, "load_error", None)
    detail = {"status": "failed", "error": error} if error else {"status": "loading"}
    return JSONResponse(detail, status_code=503)
