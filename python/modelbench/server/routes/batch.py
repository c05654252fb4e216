"""Asynchronous batch jobs: ``POST /v1/batch`` stores the jobs and answers at
once with the batch id; workers run them. ``GET /v1/batch/{id}`` (counts by
status), ``GET /v1/batch/{id}/results`` (JSONL, in order), ``POST
/v1/batch/{id}/cancel``, ``GET /v1/jobs/{id}``.

A batch is a JSON list of requests, ``{"requests": [...], "metadata": {...}}``,
or OpenAI's batch JSONL (one ``{"custom_id", "method", "url", "body"}`` per
line) as the body (``application/jsonl``) or as an uploaded file (multipart
field ``file``). A list item without ``body`` is a task-API request for
``/v1/infer``. A malformed line or item fails alone, with an error that says
which line and why; the rest run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from modelbench.db.tables import Batch, Job
from modelbench.jobs.queue import TERMINAL, NewJob
from modelbench.jobs.worker import JOB_URLS
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses
from modelbench.server.persistence import Store

router = APIRouter(tags=["batch"])

JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines", "text/plain")


def get_store(request: Request) -> Store:
    """The store, once its migrations are applied; 503 with Retry-After before."""
    store = getattr(request.app.state, "store", None)
    if store is None or not store.is_migrated:
        raise APIError(
            503,
            "the store is not ready yet (its migrations run at start, or the "
            "database is unreachable); retry shortly",
            code="store_not_ready",
            type="service_unavailable",
            headers={"Retry-After": "2"},
        )
    return store


class BatchObject(BaseModel):
    id: str
    object: str = "batch"
    status: str  # queued | in_progress | completed | cancelling | cancelled
    created_at: int
    cancelled_at: int | None = None
    request_counts: dict[str, int]  # total, completed, failed (OpenAI's), and each status
    metadata: dict[str, Any] | None = None


def epoch(moment: datetime | None) -> int | None:
    """Unix seconds; SQLite gives times back without their zone, and we store UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def batch_object(batch: Batch, counts: dict[str, int]) -> BatchObject:
    total = sum(counts.values())
    finished = sum(counts[s] for s in TERMINAL)
    if batch.status == "cancelled":
        status = "cancelled" if counts["running"] == 0 else "cancelling"
    elif finished == total:
        status = "completed"
    elif counts["queued"] == total:
        status = "queued"
    else:
        status = "in_progress"
    return BatchObject(
        id=batch.id,
        status=status,
        created_at=epoch(batch.created_at) or 0,
        cancelled_at=epoch(batch.cancelled_at),
        metadata=batch.metadata_,
        request_counts={
            "total": total,
            "completed": counts["succeeded"],
            "failed": counts["failed"],
            **counts,
        },
    )


def job_object(job: Job) -> dict[str, Any]:
    response = None
    if job.response_status is not None:
        response = {"status_code": job.response_status, "request_id": job.id, "body": job.result}
    return {
        "id": job.id,
        "object": "batch.job",
        "batch_id": job.batch_id,
        "custom_id": job.custom_id,
        "position": job.position,
        "url": job.url or None,
        "status": job.status,
        "attempts": job.attempts,
        "response": response,
        "error": {"message": job.error} if job.error else None,
        "created_at": epoch(job.created_at),
        "started_at": epoch(job.started_at),
        "finished_at": epoch(job.finished_at),
    }


def parse_item(item: Any, where: str) -> NewJob:
    """One request of a batch, or a job that fails on arrival saying why."""
    if not isinstance(item, dict):
        return NewJob(
            None, None, error=f"{where}: a request must be a JSON object, got {type(item).__name__}"
        )
    custom_id = item.get("custom_id")
    custom_id = str(custom_id) if custom_id is not None else None
    if "body" not in item:  # a bare task-API request
        return NewJob("/v1/infer", item, custom_id=custom_id)
    url, method, body = (
        item.get("url", "/v1/infer"),
        str(item.get("method", "POST")).upper(),
        item["body"],
    )
    if url not in JOB_URLS:
        return NewJob(
            None,
            None,
            custom_id=custom_id,
            error=f"{where}: url must be one of {', '.join(JOB_URLS)}, got {url!r}",
        )
    if method != "POST":
        return NewJob(
            None, None, custom_id=custom_id, error=f"{where}: method must be POST, got {method!r}"
        )
    if not isinstance(body, dict):
        return NewJob(None, None, custom_id=custom_id, error=f"{where}: body must be a JSON object")
    if body.get("stream"):
        body = {**body, "stream": False}  # a job's result is stored whole
    return NewJob(url, body, custom_id=custom_id, method=method)


def parse_jsonl(text: str) -> list[NewJob]:
    jobs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            jobs.append(
                NewJob(
                    None,
                    None,
                    error=f"line {number}: not valid JSON: {exc.msg} (column {exc.colno})",
                )
            )
            continue
        jobs.append(parse_item(item, f"line {number}"))
    return jobs


def batch_priority(value: Any, param: str, text: bool = False) -> int | None:
    """The batch's ``priority`` (an integer, lower first), or None when absent;
    ``text`` when it comes from the URL, as digits."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a JSON number with no fraction is an integer
    try:
        priority = int(value) if text and isinstance(value, str) else value
    except ValueError:
        priority = value
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not (-(2**31) <= priority < 2**31)
    ):
        raise APIError(
            400,
            f"priority must be a 32-bit integer (lower runs first), got {value!r}",
            param=param,
        )
    return priority


def with_priority(jobs: list[NewJob], priority: int | None) -> list[NewJob]:
    """Give every request that sets no ``priority`` of its own the batch's."""
    if priority is not None:
        for job in jobs:
            if job.body is not None and job.body.get("priority") is None:
                job.body = {**job.body, "priority": priority}
    return jobs


async def read_batch(request: Request) -> tuple[list[NewJob], dict[str, Any] | None]:
    """The batch's jobs and metadata. A batch-wide ``priority`` (in the JSON
    object, or ``?priority=`` for JSONL and uploads) goes to each request
    that sets none: batch work can run behind interactive traffic."""
    query_priority = batch_priority(request.query_params.get("priority"), "priority", text=True)
    jobs, metadata, priority = await read_batch_items(request)
    if priority is not None and query_priority is not None and priority != query_priority:
        raise APIError(
            400,
            f"priority is {priority} in the body and {query_priority} in the URL; give one",
            param="priority",
        )
    return with_priority(jobs, query_priority if priority is None else priority), metadata


async def read_batch_items(
    request: Request,
) -> tuple[list[NewJob], dict[str, Any] | None, int | None]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "upload the JSONL as the multipart field 'file'", param="file")
        raw = await upload.read()
        return parse_jsonl(decode(raw, "file")), None, None
    raw = await request.body()
    if content_type in JSONL_TYPES:
        return parse_jsonl(decode(raw, "body")), None, None
    try:
        data = json.loads(raw)
    except ValueError as exc:  # not JSON, or not UTF-8
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise APIError(
            400,
            f"the request body is not valid JSON: {why}; send a JSON list of "
            "requests, or JSONL with Content-Type: application/jsonl",
            param="body",
        ) from exc
    metadata, priority = None, None
    if isinstance(data, dict):
        metadata = data.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise APIError(400, "metadata must be a JSON object", param="metadata")
        priority = batch_priority(data.get("priority"), "priority")
        data = data.get("requests")
    if not isinstance(data, list):
        raise APIError(
            400, 'send a JSON list of requests, or {"requests": [...]}', param="requests"
        )
    items = [parse_item(item, f"requests[{i}]") for i, item in enumerate(data)]
    return items, metadata, priority


def decode(raw: bytes, param: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(400, f"the {param} is not UTF-8 text: {exc}", param=param) from exc


@router.post("/v1/batch", status_code=202)
async def create_batch(request: Request) -> BatchObject:
    store = get_store(request)
    jobs, metadata = await read_batch(request)
    if not jobs:
        raise APIError(400, "the batch holds no requests", param="requests")
    limit = store.settings.max_batch_jobs
    if len(jobs) > limit:
        raise APIError(
            400,
            f"a batch holds at most {limit} requests (MODELBENCH_MAX_BATCH_JOBS), "
            f"got {len(jobs)}; split it",
            param="requests",
        )
    api_key_id = request.scope.get("state", {}).get("api_key_id")
    batch_id = await asyncio.to_thread(
        store.queue.create_batch, jobs, api_key_id, metadata, store.settings.job_max_attempts
    )
    return await read_batch_object(store, batch_id, request)


def may_see(request: Request | None, api_key_id: str | None) -> bool:
    """A plain key sees its own batches; an admin key (or an open server) all."""
    caller = request.scope.get("state", {}).get("caller") if request is not None else None
    key = getattr(caller, "key", None)
    return key is None or key.admin or key.id == api_key_id


async def read_batch_object(
    store: Store, batch_id: str, request: Request | None = None
) -> BatchObject:
    batch = await asyncio.to_thread(store.queue.get_batch, batch_id)
    if batch is None or not may_see(request, batch.api_key_id):
        raise APIError(
            404,
            f"batch {batch_id!r} does not exist",
            param="batch_id",
            code="batch_not_found",
            type="not_found_error",
        )
    counts = await asyncio.to_thread(store.queue.counts, batch_id)
    return batch_object(batch, counts)


@router.get("/v1/batch", responses=error_responses(404))
async def list_batches(
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, pattern=r"^batch_[0-9a-f]{32}$"),
) -> dict[str, Any]:
    """The caller's batches (every batch for an admin key or an open server),
    newest first, ``limit`` (1 to 100) a page; ``after`` is the previous page's
    ``last_id``, as OpenAI's list of batches."""
    store = get_store(request)
    caller = request.scope.get("state", {}).get("caller")
    key = getattr(caller, "key", None)
    owner = None if key is None or key.admin else key.id
    cursor = None
    if after is not None:
        cursor = await asyncio.to_thread(store.queue.get_batch, after)
        if cursor is None or not may_see(request, cursor.api_key_id):
            raise APIError(
                404,
                f"after={after!r} names no batch of yours; pass a list's last_id",
                param="after",
                code="batch_not_found",
                type="not_found_error",
            )
    batches, has_more = await asyncio.to_thread(store.queue.list_batches, owner, limit, cursor)
    counts = await asyncio.to_thread(store.queue.counts_of, [batch.id for batch in batches])
    data = [batch_object(batch, counts[batch.id]) for batch in batches]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].id if data else None,
        "last_id": data[-1].id if data else None,
        "has_more": has_more,
    }


@router.get("/v1/batch/{batch_id}")
async def get_batch(batch_id: str, request: Request) -> BatchObject:
    return await read_batch_object(get_store(request), batch_id, request)


@router.post("/v1/batch/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request) -> BatchObject:
    store = get_store(request)
    await read_batch_object(store, batch_id, request)  # 404 unless the caller may see it
    await asyncio.to_thread(store.queue.cancel, batch_id)
    return await read_batch_object(store, batch_id, request)


@router.get("/v1/batch/{batch_id}/results")
async def batch_results(batch_id: str, request: Request) -> StreamingResponse:
    """Every job of the batch in order, one JSON object per line, as far as
    they have got (``status`` says which are final)."""
    store = get_store(request)
    await read_batch_object(store, batch_id, request)  # 404 before the stream starts

    async def lines() -> AsyncIterator[str]:
        pages = store.queue.iter_jobs(batch_id)
        done = object()
        while (job := await asyncio.to_thread(next, pages, done)) is not done:
            yield json.dumps(job_object(job)) + "\n"  # type: ignore[arg-type]

    return StreamingResponse(lines(), media_type="application/jsonl")


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    store = get_store(request)
    job = await asyncio.to_thread(store.queue.get_job, job_id)
    batch = (
        await asyncio.to_thread(store.queue.get_batch, job.batch_id) if job is not None else None
    )
    if job is None or batch is None or not may_see(request, batch.api_key_id):
        raise APIError(
            404,
            f"job {job_id!r} does not exist",
            param="job_id",
            code="job_not_found",
            type="not_found_error",
        )
    return job_object(job)
