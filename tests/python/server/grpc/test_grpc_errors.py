"""Errors over gRPC are statuses, never fields: INVALID_ARGUMENT naming the
field (and google.rpc.BadRequest saying it), UNAUTHENTICATED,
PERMISSION_DENIED, NOT_FOUND, RESOURCE_EXHAUSTED with google.rpc.RetryInfo
and ``retry-after`` trailing metadata, DEADLINE_EXCEEDED for a predict that
times out; and a client that cancels a Generate stream aborts its request in
the engine (the request log says aborted, the engine runs nothing, its KV
blocks are free). Against the real server of conftest.py."""

from __future__ import annotations

import time

import grpc
import httpx
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from modelbench.server.grpc import inference_pb2 as pb
from modelbench.server.grpc.inference_pb2_grpc import InferenceStub

from .conftest import DIGITS_NAME, JWT_SECRET, LLM_NAME, RATE_LIMIT_RPM, GrpcServed
from .test_grpc_service import metric


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> InferenceStub:
    return InferenceStub(channel)


def refused(call) -> grpc.RpcError:
    """The error a call (a callable run here) fails with."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def details(error: grpc.RpcError) -> dict[str, object]:
    """The rich status's details by type name."""
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status"
    found: dict[str, object] = {}
    for any_detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


def bad_field(error: grpc.RpcError) -> str:
    bad_request = details(error)["BadRequest"]
    return bad_request.field_violations[0].field  # type: ignore[attr-defined]


def test_invalid_arguments_name_the_field(stub: InferenceStub, served: GrpcServed) -> None:
    md = served.metadata()
    cases = [
        (
            lambda: list(
                stub.Generate(
                    pb.GenerateRequest(model=LLM_NAME, prompt="hi", temperature=-1.0), metadata=md
                )
            ),
            "temperature",
        ),
        (
            lambda: list(
                stub.Generate(
                    pb.GenerateRequest(model=LLM_NAME, prompt="hi", top_p=2.0), metadata=md
                )
            ),
            "top_p",
        ),
        (lambda: list(stub.Generate(pb.GenerateRequest(model=LLM_NAME), metadata=md)), "prompt"),
        (
            lambda: stub.Predict(
                pb.PredictRequest(
                    model=DIGITS_NAME, inputs={"features": pb.Tensor(shape=[1, 3], data=[1, 2, 3])}
                ),
                metadata=md,
            ),
            "inputs.features",
        ),
        (
            lambda: stub.Predict(
                pb.PredictRequest(
                    model=DIGITS_NAME, inputs={"features": pb.Tensor(shape=[2, 64], data=[0] * 64)}
                ),
                metadata=md,
            ),
            "inputs.features.shape",
        ),
    ]
    for call, field in cases:
        error = refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert field in error.details()
        assert bad_field(error) == field


def test_a_key_is_required(stub: InferenceStub, served: GrpcServed) -> None:
    request = pb.ListModelsRequest()
    error = refused(lambda: stub.ListModels(request))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "API key" in error.details()
    wrong = (("authorization", "Bearer mb-not-a-key"),)
    assert refused(lambda: stub.ListModels(request, metadata=wrong)).code() == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    # x-api-key works as over HTTP; a plain key lists the models.
    plain = (("x-api-key", served.plain_key),)
    assert stub.ListModels(request, metadata=plain).models


def test_admin_views_need_an_admin_key(stub: InferenceStub, served: GrpcServed) -> None:
    request = pb.ListModelsRequest(all_versions=True)
    error = refused(lambda: stub.ListModels(request, metadata=served.metadata(served.plain_key)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "admin" in error.details()


def test_jwts_work_as_keys(stub: InferenceStub, served: GrpcServed) -> None:
    def bearer(secret: str, **claims: object) -> tuple[tuple[str, str], ...]:
        token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 300, **claims}, secret)
        return (("authorization", f"Bearer {token}"),)

    assert stub.ListModels(pb.ListModelsRequest(), metadata=bearer(JWT_SECRET)).models
    every = pb.ListModelsRequest(all_versions=True)
    assert stub.ListModels(every, metadata=bearer(JWT_SECRET, role="admin")).models
    error = refused(lambda: stub.ListModels(every, metadata=bearer(JWT_SECRET)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "jwt:carol" in error.details()
    error = refused(lambda: stub.ListModels(every, metadata=bearer("x" * 40, role="admin")))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_unknown_models_and_versions_are_not_found(stub: InferenceStub, served: GrpcServed) -> None:
    md = served.metadata()
    for call in (
        lambda: list(stub.Generate(pb.GenerateRequest(model="nope", prompt="hi"), metadata=md)),
        lambda: list(
            stub.Generate(pb.GenerateRequest(model=f"{LLM_NAME}:9", prompt="hi"), metadata=md)
        ),
        lambda: stub.Predict(
            pb.PredictRequest(model=DIGITS_NAME, version="9", features=[0.0] * 64), metadata=md
        ),
        lambda: stub.Embed(pb.EmbedRequest(model="nope", input=["x"]), metadata=md),
    ):
        error = refused(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


def test_rate_limits_say_when_to_retry(stub: InferenceStub, served: GrpcServed) -> None:
    md = served.metadata(served.limited_key)
    for _ in range(RATE_LIMIT_RPM):
        stub.ListModels(pb.ListModelsRequest(), metadata=md)
    error = refused(lambda: stub.ListModels(pb.ListModelsRequest(), metadata=md))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in error.details()
    retry = details(error)["RetryInfo"]
    assert retry.retry_delay.seconds > 0  # type: ignore[attr-defined]
    trailing = dict(error.trailing_metadata())
    assert int(trailing["retry-after"]) == retry.retry_delay.seconds  # type: ignore[attr-defined]
    assert details(error)["ErrorInfo"].reason == "rate_limit_exceeded"  # type: ignore[attr-defined]


def test_a_predict_that_times_out(stub: InferenceStub, served: GrpcServed) -> None:
    request = pb.PredictRequest(model=DIGITS_NAME, features=[0.0] * 64, timeout_s=1e-6)
    error = refused(lambda: stub.Predict(request, metadata=served.metadata()))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    assert "timeout_s" in error.details()


def engine_state(served: GrpcServed) -> tuple[float, float]:
    """smol's requests running and waiting, and its KV cache usage."""
    text = httpx.get(f"{served.base_url}/metrics", timeout=30).text
    busy = metric(text, "modelbench:num_requests_running", model_name=LLM_NAME) + metric(
        text, "modelbench:num_requests_waiting", model_name=LLM_NAME
    )
    return busy, metric(text, "modelbench:kv_cache_usage_perc", model_name=LLM_NAME)


def test_cancelling_a_stream_aborts_it_in_the_engine(
    stub: InferenceStub, served: GrpcServed
) -> None:
    max_tokens = 400
    request = pb.GenerateRequest(
        model=LLM_NAME,
        prompt="Count from one to a thousand:",
        max_tokens=max_tokens,
        min_tokens=max_tokens,
        temperature=0.0,
    )
    stream = stub.Generate(request, metadata=served.metadata())
    record_id = dict(stream.initial_metadata())["x-modelbench-record-id"]
    next(stream)
    busy, kv_usage = engine_state(served)
    assert busy == 1 and kv_usage > 0  # running, holding blocks
    stream.cancel()
    deadline = time.monotonic() + 30
    while engine_state(served) != (0.0, 0.0):
        assert time.monotonic() < deadline, f"still in the engine: {engine_state(served)}"
        time.sleep(0.05)
    with served.http() as http:
        for _ in range(100):
            record = http.get(f"/v1/requests/{record_id}")
            if record.status_code == 200:
                break
            time.sleep(0.1)
        record = record.json()
    assert record["status"] == "aborted", record
    assert record["endpoint"] == "/modelbench.v1.Inference/Generate"
    assert 0 < record["completion_tokens"] < max_tokens
    aborted = metric(
        httpx.get(f"{served.base_url}/metrics").text,
        "modelbench:request_success_total",
        protocol="grpc",
        finished_reason="abort",
    )
    assert aborted >= 1
