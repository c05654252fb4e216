"""GET /metrics: the app's Prometheus metrics in the text exposition format
(server/metrics.py says what they are), format 0.0.4, which every
Prometheus reads. Open to scrapers without a key."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
