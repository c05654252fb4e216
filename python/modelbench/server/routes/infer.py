"""POST /v1/infer and /v1/infer/batch: modelbench's task API (generate,
summarize, sentiment, classify) over the registry's models.

The work is models/tasks.py's; this file picks the model, counts the request
against the version's admission bound, times it and shapes the answer. A
batch runs its items concurrently, each admitted on its own, and returns
every item's answer or error in order with status 200 once the batch itself
is well-formed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError
from modelbench.server.openapi import array_limit, error_responses
from modelbench.server.protocol import ErrorInfo, random_id
from modelbench.server.protocol_infer import (
    InferBatchRequest,
    InferBatchResponse,
    InferRequest,
    InferResponse,
)
from modelbench.server.recorder import current_record, new_record, submit
from modelbench.server.registry import ModelHandle, ModelRegistry, ModelState
from modelbench.server.routes.generation import until_disconnect
from modelbench.tasks.adapters import TaskInputError, parse_parameters, run_task

logger = logging.getLogger("modelbench.server")

router = APIRouter(tags=["infer"])


def pick_model(registry: ModelRegistry, model: str | None, task: str) -> ModelHandle:
    """The version serving ``model`` for ``task``. Without a model, the first
    loaded name (in load order, ready ones first) that serves the task, routed
    among its versions by the name's policy."""
    if model is not None:
        return registry.resolve(model, task)
    handles = [h for h in registry.handles() if h.state != ModelState.UNLOADING]
    serving = [h for h in handles if h.serves(task)]
    if not serving:
        if not handles:
            raise APIError(
                503,
                "no model is loaded; load one, or retry when /ready says so",
                code="model_not_ready",
                type="service_unavailable",
                headers={"Retry-After": "5"},
            )
        raise APIError(
            400,
            f"no loaded model serves the task {task!r}; name a model that does",
            param="task",
            code="task_not_supported",
        )
    ready = [h for h in serving if h.state == ModelState.READY]
    return registry.resolve((ready or serving)[0].name, task)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def infer_one(
    registry: ModelRegistry, body: InferRequest, request_id: str, timestamp: str
) -> InferResponse:
    """Run one validated request; APIError for anything the client got wrong."""
    started = time.perf_counter()
    try:
        text = body.input_text()
        parameters = parse_parameters(body.task, body.parameters)
    except TaskInputError as exc:
        raise APIError(400, str(exc), param=exc.param, code=exc.code) from exc
    record = current_record.get()
    if record is not None:
        record.describe(task=body.task, prompt=text, parameters=body.parameters)
    handle = pick_model(registry, body.model, body.task)
    if record is not None:
        record.routed(handle.name, handle.version)
    registry.admit(handle, body.priority)
    try:
        engine = handle.encoder or handle.engine
        assert engine is not None
        output = await run_task(
            engine, body.task, text, parameters, random_id("infer"), body.priority
        )
    except TaskInputError as exc:
        raise APIError(400, str(exc), param=exc.param, code=exc.code) from exc
    finally:
        handle.end(body.priority)
    if record is not None:
        record.output = (
            output.result if isinstance(output.result, str) else json.dumps(output.result)
        )
        meta = output.metadata
        record.finish_reasons[0] = meta.get("finish_reason", "stop")
        record.prompt_tokens = meta.get("prompt_tokens")
        record.completion_tokens = meta.get("completion_tokens", 0)
    return InferResponse(
        success=True,
        result=output.result,
        model_used=handle.id,
        latency_ms=(time.perf_counter() - started) * 1000,
        request_id=request_id,
        timestamp=timestamp,
        metadata=output.metadata,
    )


def request_id_of(request: Request) -> str:
    """The X-Request-ID RequestIdMiddleware gave this request."""
    return request.scope.get("state", {}).get("request_id") or random_id("req")


@router.post(
    "/v1/infer",
    response_model=InferResponse,
    dependencies=JSON_BODY,
    responses=error_responses(404),
)
async def infer(body: InferRequest, request: Request, registry: RegistryDep) -> InferResponse:
    timestamp = now_iso()
    response = await until_disconnect(
        request, infer_one(registry, body, request_id_of(request), timestamp)
    )
    request.scope.setdefault("state", {})["model"] = response.model_used
    return response


def _failure(exc: BaseException, request_id: str, timestamp: str, started: float) -> InferResponse:
    if isinstance(exc, APIError):
        status, error = (
            exc.status_code,
            ErrorInfo(message=exc.message, type=exc.type, param=exc.param, code=exc.code),
        )
    else:
        logger.error("infer batch item %s failed", request_id, exc_info=exc)
        status, error = (
            500,
            ErrorInfo(message=f"internal error: {type(exc).__name__}", type="internal_error"),
        )
    return InferResponse(
        success=False,
        latency_ms=(time.perf_counter() - started) * 1000,
        request_id=request_id,
        timestamp=timestamp,
        status_code=status,
        error=error,
    )


def _invalid_item(exc: ValidationError, index: int) -> APIError:
    """An item's validation error as the 400 it would be alone, located in the batch."""
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    where = ".".join([f"requests.{index}", *loc])
    message = f"{where}: {first.get('msg')}"
    if first.get("type") != "missing":
        message += f" (got {first.get('input')!r})"[:300]
    return APIError(400, message, param=loc[0] if loc else None)


async def _batch_item(
    request: Request,
    registry: ModelRegistry,
    item: Any,
    index: int,
    request_id: str,
    timestamp: str,
) -> InferResponse:
    """One item, recorded as a request of its own (this runs in a task of its
    own, so the record set here is this item's)."""
    started = time.perf_counter()
    record = new_record(request.scope, "/v1/infer/batch", "generate", http_request_id=request_id)
    current_record.set(record)
    try:
        try:
            body = InferRequest.model_validate(item)
        except ValidationError as exc:
            raise _invalid_item(exc, index) from exc
        response = await infer_one(registry, body, request_id, timestamp)
    except Exception as exc:
        response = _failure(exc, request_id, timestamp, started)
        record.error = response.error.message if response.error else None
    except asyncio.CancelledError:
        submit(request.scope, record, 499)
        raise
    submit(request.scope, record, response.status_code)
    return response


array_limit("post", "/v1/infer/batch", "requests", lambda app: app.state.settings.infer_max_batch)


@router.post("/v1/infer/batch", response_model=InferBatchResponse, dependencies=JSON_BODY)
async def infer_batch(
    body: InferBatchRequest, request: Request, registry: RegistryDep
) -> InferBatchResponse:
    limit = request.app.state.settings.infer_max_batch
    if not body.requests:
        raise APIError(400, "requests must hold at least one item", param="requests")
    if len(body.requests) > limit:
        raise APIError(
            400,
            f"requests holds {len(body.requests)} items, more than the limit of "
            f"{limit} (MODELBENCH_INFER_MAX_BATCH); split the batch",
            param="requests",
        )
    started, timestamp, request_id = time.perf_counter(), now_iso(), request_id_of(request)
    results = await until_disconnect(
        request,
        asyncio.gather(
            *(
                _batch_item(request, registry, item, i, f"{request_id}-{i}", timestamp)
                for i, item in enumerate(body.requests)
            )
        ),
    )
    num_succeeded = sum(r.success for r in results)
    return InferBatchResponse(
        request_id=request_id,
        timestamp=timestamp,
        latency_ms=(time.perf_counter() - started) * 1000,
        num_succeeded=num_succeeded,
        num_failed=len(results) - num_succeeded,
        results=results,
    )
