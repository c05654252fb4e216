"""Evaluation runs in the store: a run's summary and every sample's result
(``eval_runs``, ``eval_results``), saved and read back for reports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from modelbench.config import store_url
from modelbench.db import make_engine, upgrade
from modelbench.db.tables import EvalResult, EvalRun
from modelbench.eval.humaneval import SampleResult


def save_eval_run(
    benchmark: str,
    model: str | None,
    config: dict[str, Any],
    summary: dict[str, Any],
    results: Sequence[SampleResult],
    url: str | None = None,
) -> str:
    """Write the run and each sample's result; returns the run id (``eval_...``)."""
    url = store_url(url)
    upgrade(url)
    engine = make_engine(url)
    run_id = f"eval_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(EvalRun).values(
                    id=run_id, benchmark=benchmark, model=model, config=config, summary=summary
                )
            )
            if results:
                connection.execute(
                    insert(EvalResult), [{"run_id": run_id, **asdict(r)} for r in results]
                )
    finally:
        engine.dispose()
    return run_id


def load_eval_runs(run_ids: Sequence[str], url: str | None = None) -> list[dict[str, Any]]:
    """The runs asked for, in order, with their results; ValueError names
    the ids that are not in the store."""
    engine = make_engine(store_url(url))
    try:
        with Session(engine) as session:
            runs = {
                r.id: r for r in session.scalars(select(EvalRun).where(EvalRun.id.in_(run_ids)))
            }
            missing = [i for i in run_ids if i not in runs]
            if missing:
                raise ValueError(
                    f"no evaluation run {', '.join(missing)} in the store; "
                    "`modelbench report --list` shows the saved ones"
                )
            out = []
            for run_id in run_ids:
                run = runs[run_id]
                results = session.scalars(
                    select(EvalResult).where(EvalResult.run_id == run_id).order_by(EvalResult.id)
                ).all()
                out.append(
                    {
                        "id": run.id,
                        "benchmark": run.benchmark,
                        "model": run.model,
                        "created_at": run.created_at,
                        "config": run.config or {},
                        "summary": run.summary or {},
                        "results": [
                            {
                                "task_id": r.task_id,
                                "sample": r.sample,
                                "passed": r.passed,
                                "reason": r.reason,
                                "run_s": r.run_s,
                            }
                            for r in results
                        ],
                    }
                )
            return out
    finally:
        engine.dispose()


def list_eval_runs(url: str | None = None) -> list[dict[str, Any]]:
    """Every saved evaluation run, newest first (no per-sample results)."""
    engine = make_engine(store_url(url))
    try:
        with Session(engine) as session:
            rows = session.scalars(select(EvalRun).order_by(EvalRun.created_at.desc())).all()
            return [
                {
                    "id": r.id,
                    "benchmark": r.benchmark,
                    "model": r.model,
                    "created_at": r.created_at,
                    "summary": r.summary or {},
                }
                for r in rows
            ]
    finally:
        engine.dispose()
