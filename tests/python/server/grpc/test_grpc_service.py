"""modelbench.v1.Inference through a real grpcio client against a real
``modelbench serve --grpc-port`` process: each method answers what its HTTP
route answers for the same request (Generate's streamed text is the
completion's and the chat's, Predict's outputs /v1/predict's, Embed's
vectors /v1/embeddings', ListModels /v1/models'); the standard health
service follows /ready; reflection lists the services; the calls are in the
request log under their gRPC method and in /metrics with protocol="grpc"."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelbench.predict.example import digits
from modelbench.server.grpc import inference_pb2 as pb
from modelbench.server.grpc.inference_pb2_grpc import InferenceStub

from .conftest import DIGITS_NAME, LLM_NAME, GrpcServed

PROMPT = "The three primary colors are"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> InferenceStub:
    return InferenceStub(channel)


def generate(stub: InferenceStub, served: GrpcServed, **fields) -> list[pb.GenerateResponse]:
    return list(
        stub.Generate(pb.GenerateRequest(**fields), metadata=served.metadata(), timeout=120)
    )


def test_generate_streams_the_http_completion(stub: InferenceStub, served: GrpcServed) -> None:
    responses = generate(
        stub,
        served,
        model=LLM_NAME,
        prompt=PROMPT,
        max_tokens=12,
        temperature=0.0,
        include_usage=True,
    )
    with served.http() as http:
        body = {"model": LLM_NAME, "prompt": PROMPT, "max_tokens": 12, "temperature": 0.0}
        expected = http.post("/v1/completions", json=body).json()
    deltas = [r for r in responses if not r.HasField("usage")]
    assert len(deltas) > 1  # streamed: more than one delta
    assert "".join(r.text for r in deltas) == expected["choices"][0]["text"]
    assert deltas[-1].finish_reason == expected["choices"][0]["finish_reason"]
    assert {r.id for r in responses} == {responses[0].id} and responses[0].model == f"{LLM_NAME}:1"
    usage = responses[-1].usage
    assert responses[-1].HasField("usage") and not responses[-1].text
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        expected["usage"]["prompt_tokens"],
        expected["usage"]["completion_tokens"],
    )


def test_generate_chat_streams_the_http_chat(stub: InferenceStub, served: GrpcServed) -> None:
    chat = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content=QUESTION)])
    responses = generate(stub, served, model=LLM_NAME, chat=chat, max_tokens=16, temperature=0.0)
    with served.http() as http:
        body = {
            "model": LLM_NAME,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 16,
            "temperature": 0.0,
        }
        expected = http.post("/v1/chat/completions", json=body).json()["choices"][0]
    text = "".join(r.text for r in responses)
    assert "Paris" in text and text == expected["message"]["content"]
    assert responses[-1].finish_reason == expected["finish_reason"]


def test_generate_choices_seeds_and_logprobs(stub: InferenceStub, served: GrpcServed) -> None:
    fields = dict(model=LLM_NAME, prompt=PROMPT, max_tokens=6, temperature=0.8, seed=7, n=2)
    responses = generate(stub, served, **fields, logprobs=2)
    texts = {i: "".join(r.text for r in responses if r.index == i) for i in (0, 1)}
    with served.http() as http:
        body = {"prompt": PROMPT, "model": LLM_NAME, "max_tokens": 6, "temperature": 0.8}
        expected = http.post("/v1/completions", json=body | {"seed": 7, "n": 2, "logprobs": 2})
    choices = expected.json()["choices"]
    assert texts == {c["index"]: c["text"] for c in choices}
    for choice in choices:
        got = [lp for r in responses if r.index == choice["index"] for lp in r.logprobs]
        want = choice["logprobs"]
        assert [lp.token for lp in got] == want["tokens"]
        assert [lp.logprob for lp in got] == pytest.approx(want["token_logprobs"], abs=1e-4)
        tops = [{t.token: t.logprob for t in lp.top_logprobs} for lp in got]
        assert [list(t) for t in tops] == [list(t) for t in want["top_logprobs"]]
        assert all(len(t) >= 2 for t in tops)


def test_predict_answers_the_http_predict(stub: InferenceStub, served: GrpcServed) -> None:
    pixels, _ = digits()
    rows = pixels[:3]
    request = pb.PredictRequest(
        model=DIGITS_NAME,
        inputs={"features": pb.Tensor(shape=list(rows.shape), data=rows.reshape(-1).tolist())},
    )
    answer = stub.Predict(request, metadata=served.metadata(), timeout=60)
    with served.http() as http:
        body = {"model": DIGITS_NAME, "inputs": {"features": rows.tolist()}}
        expected = http.post("/v1/predict", json=body).json()
    out = answer.outputs["probabilities"]
    assert list(out.shape) == [3, 10]
    got = np.array(out.data).reshape(3, 10).tolist()
    assert got == expected["outputs"]["probabilities"]
    assert list(answer.class_id) == expected["class_id"]
    assert list(answer.label) == expected["label"]
    assert list(answer.confidence) == expected["confidence"]
    assert answer.model == f"{DIGITS_NAME}:1"
    # The seed's shape: one row of features and model_name.
    seed = stub.Predict(
        pb.PredictRequest(model_name=DIGITS_NAME, features=pixels[0].tolist()),
        metadata=served.metadata(),
        timeout=60,
    )
    assert list(seed.class_id) == expected["class_id"][:1]


def test_embed_answers_the_http_embeddings(stub: InferenceStub, served: GrpcServed) -> None:
    texts = ["a red apple", "the capital of France"]
    answer = stub.Embed(
        pb.EmbedRequest(model=LLM_NAME, input=texts), metadata=served.metadata(), timeout=60
    )
    with served.http() as http:
        expected = http.post("/v1/embeddings", json={"model": LLM_NAME, "input": texts}).json()
    assert [list(d.embedding) for d in answer.data] == [d["embedding"] for d in expected["data"]]
    assert [d.index for d in answer.data] == [0, 1]
    assert answer.usage.prompt_tokens == expected["usage"]["prompt_tokens"]


def test_list_models(stub: InferenceStub, served: GrpcServed) -> None:
    answer = stub.ListModels(pb.ListModelsRequest(), metadata=served.metadata(), timeout=30)
    with served.http() as http:
        expected = http.get("/v1/models").json()["data"]
    assert [m.id for m in answer.models] == [c["id"] for c in expected]
    digits_card = next(m for m in answer.models if m.id == f"{DIGITS_NAME}:1")
    assert list(digits_card.tasks) == ["predict"] and digits_card.state == "ready"
    assert [(s.name, s.dtype, list(s.shape)) for s in digits_card.inputs] == [
        ("features", "float32", [-1, 64])
    ]
    assert list(digits_card.labels) == [str(d) for d in range(10)]
    # An admin's view: every version with its load state.
    every = stub.ListModels(
        pb.ListModelsRequest(all_versions=True), metadata=served.metadata(), timeout=30
    )
    assert {m.id: m.state for m in every.models} == {
        f"{LLM_NAME}:1": "ready",
        f"{DIGITS_NAME}:1": "ready",
    }


def test_health_follows_ready(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "modelbench.v1.Inference"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as refused:
        health.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answer = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=10)))
    names = {s.name for s in answer.list_services_response.service}
    assert {
        "modelbench.v1.Inference",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    # The proto itself, for grpcurl: the file that defines the service.
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="modelbench.v1.Inference"
    )
    answer = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=10)))
    assert answer.file_descriptor_response.file_descriptor_proto


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a family's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def test_metrics_say_the_protocol(stub: InferenceStub, served: GrpcServed) -> None:
    with served.http() as http:
        before = http.get("/metrics").text
        generate(stub, served, model=LLM_NAME, prompt=PROMPT, max_tokens=4, temperature=0.0)
        body = {"model": LLM_NAME, "prompt": PROMPT, "max_tokens": 4, "temperature": 0.0}
        assert http.post("/v1/completions", json=body).status_code == 200
        after = http.get("/metrics").text
    tokens = "modelbench:generation_tokens_total"
    for protocol in ("grpc", "http"):
        grown = metric(after, tokens, protocol=protocol) - metric(before, tokens, protocol=protocol)
        assert grown == 4, protocol
    success = "modelbench:request_success_total"
    assert metric(after, success, protocol="grpc") - metric(before, success, protocol="grpc") == 1
    calls = "modelbench:grpc_requests_total"
    method = "/modelbench.v1.Inference/Generate"
    assert (
        metric(after, calls, grpc_method=method, grpc_code="OK")
        - metric(before, calls, grpc_method=method, grpc_code="OK")
        == 1
    )
    # A gRPC call is not an HTTP request.
    assert 'route="/modelbench.v1.Inference' not in after


def test_calls_are_on_record(stub: InferenceStub, served: GrpcServed) -> None:
    call = stub.Predict.with_call(
        pb.PredictRequest(model_name=DIGITS_NAME, features=[0.0] * 64),
        metadata=served.metadata(served.plain_key),
        timeout=60,
    )
    record_id = dict(call[1].initial_metadata())["x-modelbench-record-id"]
    with served.http(served.plain_key) as http:
        for _ in range(100):  # the record is written after the answer
            r = http.get(f"/v1/requests/{record_id}")
            if r.status_code == 200:
                break
            time.sleep(0.1)
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["endpoint"] == "/modelbench.v1.Inference/Predict"
    assert record["task"] == "predict" and record["status"] == "succeeded"
    assert record["model_name"] == DIGITS_NAME and record["api_key_id"].startswith("key_")
