"""POST /v1/predict: a tensor model (TorchScript behind the C++ dynamic
batcher, modelbench.predict) answers one request of one or more rows.

The version is picked like any model's (name, name:version, its routing
policy); the request counts against the version's admission bound, its
inputs are checked against the model's config (a 400 naming the input and
both shapes), a full batcher queue is a 429, a timeout in the queue a 504.
Every call is recorded in the store like any request."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from modelbench.engine.errors import INPUT_MISMATCH, InvalidParameter
from modelbench.predict.engine import QueueFull
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError
from modelbench.server.openapi import error_responses
from modelbench.server.protocol import random_id
from modelbench.server.protocol_predict import PredictRequest, PredictResponse
from modelbench.server.recorder import current_record
from modelbench.server.routes.generation import until_disconnect

router = APIRouter(tags=["predict"])


async def predict_one(registry: RegistryDep, body: PredictRequest) -> PredictResponse:
    started = time.perf_counter()
    handle = registry.resolve(body.target(), "predict")
    predictor = handle.predictor
    assert predictor is not None  # resolve() returns a ready version, which has its predictor
    inputs: dict[str, object]
    if body.inputs is not None:
        inputs = dict(body.inputs)
    else:
        if len(predictor.config.inputs) != 1:
            names = ", ".join(s.name for s in predictor.config.inputs)
            raise APIError(
                400,
                f"features names no input; this model takes {names}: send inputs by name",
                param="features",
                code=INPUT_MISMATCH,
            )
        inputs = {predictor.config.inputs[0].name: body.features or []}
    record = current_record.get()
    if record is not None:
        record.describe(task="predict", parameters={"inputs": sorted(inputs)})
        record.routed(handle.name, handle.version)
    registry.admit(handle)
    try:
        output = await predictor.predict(inputs, body.timeout_s)
    except InvalidParameter as exc:
        raise APIError(400, str(exc), param=exc.param, code=exc.code) from exc
    except QueueFull as exc:
        raise APIError(
            429, str(exc), code="queue_full", type="rate_limit_error", headers={"Retry-After": "1"}
        ) from exc
    except TimeoutError as exc:
        raise APIError(504, str(exc), param="timeout_s", code="timeout", type="timeout") from exc
    finally:
        handle.end()
    response = PredictResponse(
        id=random_id("pred"),
        model=handle.id,
        outputs={name: t.tolist() for name, t in output.outputs.items()},
        class_id=output.class_ids or None,
        label=output.labels or None,
        confidence=output.confidences or None,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    if record is not None:
        summary = response.label or response.class_id
        record.output = str(summary if summary is not None else sorted(response.outputs))
        record.finish_reasons[0] = "stop"
    return response


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    dependencies=JSON_BODY,
    responses=error_responses(404, 429, 504),
)
async def predict(body: PredictRequest, request: Request, registry: RegistryDep) -> PredictResponse:
    response = await until_disconnect(request, predict_one(registry, body))
    request.scope.setdefault("state", {})["model"] = response.model
    return response
