"""Benchmark runs in the store (``bench_runs``, ``bench_requests``): saving
a result, and reading runs back for reports."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from modelbench.config import store_url
from modelbench.db import make_engine, upgrade
from modelbench.db.tables import BenchRequest, BenchRun

PER_REQUEST = (
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "e2els",
    "start_times",
    "generated_texts",
    "errors",
)


def served_model(result: dict[str, Any]) -> str | None:
    """The model a run measured: the one asked for, else the one the target
    said it served (a run against a server's default model names it so)."""
    identity = (result.get("environment") or {}).get("model") or {}
    asked = result["config"].get("model")
    return asked or identity.get("served") or identity.get("name")


def save_run(result: dict[str, Any], url: str | None = None) -> str:
    """Write a run and its per-request records; returns the run id."""
    url = store_url(url)
    upgrade(url)
    engine = make_engine(url)
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    summary = {
        k: v
        for k, v in result.items()
        if k not in PER_REQUEST and k not in ("config", "environment")
    }
    rows = [
        {
            "run_id": run_id,
            "position": i,
            "success": not result["errors"][i],
            "prompt_len": result["input_lens"][i],
            "output_len": result["output_lens"][i],
            "ttft_ms": None if result["ttfts"][i] is None else result["ttfts"][i] * 1000,
            "latency_ms": None if result["e2els"][i] is None else result["e2els"][i] * 1000,
            "itl_ms": [gap * 1000 for gap in result["itls"][i]],
            "error": result["errors"][i] or None,
        }
        for i in range(len(result["input_lens"]))
    ]
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(BenchRun).values(
                    id=run_id,
                    name=result["config"].get("name"),
                    backend=result["config"]["backend"],
                    model=served_model(result),
                    config=result["config"],
                    environment=result["environment"],
                    summary=summary,
                )
            )
            if rows:
                connection.execute(insert(BenchRequest), rows)
    finally:
        engine.dispose()
    return run_id


def load_runs(run_ids: list[str], url: str | None = None) -> list[dict[str, Any]]:
    """Runs with their per-request records, in the order asked; ValueError
    names the ids that are not in the store."""
    engine = make_engine(store_url(url))
    try:
        with Session(engine) as session:
            runs = {
                r.id: r for r in session.scalars(select(BenchRun).where(BenchRun.id.in_(run_ids)))
            }
            missing = [i for i in run_ids if i not in runs]
            if missing:
                raise ValueError(
                    f"no benchmark run {', '.join(missing)} in the store; "
                    "`modelbench report --list` shows the saved ones"
                )
            out = []
            for run_id in run_ids:
                run = runs[run_id]
                requests = session.scalars(
                    select(BenchRequest)
                    .where(BenchRequest.run_id == run_id)
                    .order_by(BenchRequest.position)
                ).all()
                out.append(
                    {
                        "id": run.id,
                        "name": run.name,
                        "backend": run.backend,
                        "model": run.model,
                        "created_at": run.created_at,
                        "config": run.config,
                        "environment": run.environment,
                        "summary": run.summary,
                        "requests": [
                            {
                                "success": q.success,
                                "prompt_len": q.prompt_len,
                                "output_len": q.output_len,
                                "ttft_ms": q.ttft_ms,
                                "latency_ms": q.latency_ms,
                                "itl_ms": q.itl_ms or [],
                            }
                            for q in requests
                        ],
                    }
                )
            return out
    finally:
        engine.dispose()


def list_runs(url: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    engine = make_engine(store_url(url))
    try:
        with Session(engine) as session:
            runs = session.scalars(
                select(BenchRun).order_by(BenchRun.created_at.desc()).limit(limit)
            ).all()
            return [
                {
                    "id": r.id,
                    "name": r.name,
                    "backend": r.backend,
                    "model": r.model,
                    "created_at": r.created_at,
                    "output_throughput": (r.summary or {}).get("output_throughput"),
                }
                for r in runs
            ]
    finally:
        engine.dispose()
