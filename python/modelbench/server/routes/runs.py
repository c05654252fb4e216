"""Saved benchmark and evaluation runs, read-only: ``GET /v1/bench/runs``
(newest first, each with its configuration and summary metrics: throughput,
TTFT/TPOT/ITL percentiles), ``GET /v1/bench/runs/{id}``, ``GET
/v1/eval/runs`` (pass@k) and ``GET /v1/eval/runs/{id}`` (with each sample's
result). They are what ``modelbench bench --save`` and ``modelbench eval``
wrote into the server's store, and what the web page's Benchmarks view draws.
Runs hold numbers and settings, never prompts, so any key may read them."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbench.db.tables import BenchRun
from modelbench.eval.saved import list_eval_runs, load_eval_runs
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses
from modelbench.server.routes.batch import epoch, get_store

router = APIRouter(tags=["runs"])

BENCH_ID = re.compile(r"run_[0-9a-f]{1,32}")
EVAL_ID = re.compile(r"eval_[0-9a-f]{1,32}")
# The patterns in the spec; the route checks them itself, naming run_id.
BENCH_RUN_ID = Path(json_schema_extra={"pattern": f"^{BENCH_ID.pattern}$"})
EVAL_RUN_ID = Path(json_schema_extra={"pattern": f"^{EVAL_ID.pattern}$"})


def checked_id(value: str, pattern: re.Pattern[str], example: str) -> str:
    if not pattern.fullmatch(value):
        raise APIError(400, f"run_id must look like {example}, got {value[:80]!r}", param="run_id")
    return value


def not_found(run_id: str) -> APIError:
    return APIError(
        404,
        f"no run {run_id!r} in this server's store; GET the list to see the saved ones",
        param="run_id",
        code="run_not_found",
        type="not_found_error",
    )


def with_epoch(run: dict[str, Any]) -> dict[str, Any]:
    created = run.get("created_at")
    return {**run, "created_at": epoch(created) if isinstance(created, datetime) else created}


def bench_object(run: BenchRun) -> dict[str, Any]:
    """A run without its per-request records (``modelbench report`` reads those)."""
    return {
        "id": run.id,
        "name": run.name,
        "backend": run.backend,
        "model": run.model,
        "created_at": run.created_at,
        "config": run.config or {},
        "environment": run.environment or {},
        "summary": run.summary or {},
    }


@router.get("/v1/bench/runs")
async def bench_runs(request: Request, limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    store = get_store(request)

    def run() -> list[dict[str, Any]]:
        query = select(BenchRun).order_by(BenchRun.created_at.desc()).limit(limit)
        with Session(store.engine) as session:
            return [bench_object(r) for r in session.scalars(query)]

    runs = await asyncio.to_thread(run)
    return {"object": "list", "data": [with_epoch(r) for r in runs]}


@router.get("/v1/bench/runs/{run_id}", responses=error_responses(400, 404))
async def bench_run(request: Request, run_id: str = BENCH_RUN_ID) -> dict[str, Any]:
    checked_id(run_id, BENCH_ID, "run_0123456789ab")
    store = get_store(request)

    def run() -> dict[str, Any] | None:
        with Session(store.engine) as session:
            found = session.get(BenchRun, run_id)
            return bench_object(found) if found is not None else None

    found = await asyncio.to_thread(run)
    if found is None:
        raise not_found(run_id)
    return with_epoch(found)


@router.get("/v1/eval/runs")
async def eval_runs(request: Request) -> dict[str, Any]:
    store = get_store(request)
    runs = await asyncio.to_thread(list_eval_runs, store.url)
    return {"object": "list", "data": [with_epoch(r) for r in runs]}


@router.get("/v1/eval/runs/{run_id}", responses=error_responses(400, 404))
async def eval_run(request: Request, run_id: str = EVAL_RUN_ID) -> dict[str, Any]:
    checked_id(run_id, EVAL_ID, "eval_0123456789ab")
    store = get_store(request)
    try:
        (found,) = await asyncio.to_thread(load_eval_runs, [run_id], store.url)
    except ValueError as exc:
        raise not_found(run_id) from exc
    return with_epoch(found)
