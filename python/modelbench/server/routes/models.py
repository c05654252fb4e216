"""GET /v1/models: the one model this server serves."""

from __future__ import annotations

from fastapi import APIRouter, Request

from modelbench.server.protocol import ModelCard, ModelList

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    settings = request.app.state.settings
    engine = getattr(request.app.state, "engine", None)
    max_model_len = engine.config.scheduler.max_model_len if engine is not None else None
    return ModelList(data=[ModelCard(id=settings.served_model_name, max_model_len=max_model_len)])
