"""POST /v1/infer and /v1/infer/batch end to end against a real server: every
task, the answer's envelope, a batch with bad items among good ones, every
4xx path, the default model per task, and admission of batch items."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from modelbench.config import Settings

from .conftest import (
    KV_CACHE_MEMORY,
    MAX_MODEL_LEN,
    MODEL_NAME,
    RunningServer,
    free_port,
    run_server,
)

TEXT = "the cat sat on the mat; the dog sat on the log."
SUMMARY_INSTRUCTION = "Summarize the following text in a few sentences.\n\n"


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def infer(http: httpx.Client, **body: object) -> httpx.Response:
    return http.post("/v1/infer", json=body)


def assert_envelope(
    body: dict, request_id: str | None = None, model: str = f"{MODEL_NAME}:1"
) -> None:
    assert body["success"] is True and body["error"] is None and body["status_code"] == 200
    assert body["model_used"] == model
    assert body["latency_ms"] > 0
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    if request_id is not None:
        assert body["request_id"] == request_id


def assert_error(
    r: httpx.Response, status: int, param: str | None, *fragments: str, code: str | None = None
) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    for fragment in fragments:
        assert fragment in error["message"], error
    if code is not None:
        assert error["code"] == code
    return error


def test_generate_is_the_completion_with_the_same_parameters(http: httpx.Client) -> None:
    params = {"max_tokens": 9, "temperature": 0, "ignore_eos": True}
    r = http.post(
        "/v1/infer",
        json={"text": "hello world", "task": "generate", "model": MODEL_NAME, "parameters": params},
        headers={"X-Request-ID": "infer-gen-1"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert_envelope(body, "infer-gen-1")
    assert r.headers["x-request-id"] == "infer-gen-1"
    completion = http.post(
        "/v1/completions", json={"model": MODEL_NAME, "prompt": "hello world", **params}
    ).json()
    assert body["result"] == completion["choices"][0]["text"]
    assert body["metadata"] == {
        "finish_reason": "length",
        "completion_tokens": 9,
        "prompt_tokens": completion["usage"]["prompt_tokens"],
    }


def test_prompt_is_another_name_for_text_and_the_model_may_be_omitted(http: httpx.Client) -> None:
    params = {"max_tokens": 4, "temperature": 0, "ignore_eos": True}
    by_text = infer(http, text="hello", parameters=params).json()
    by_prompt = infer(http, prompt="hello", task="generate", parameters=params).json()
    assert infer(http, text="hello", parameters=None).status_code == 200
    assert_envelope(by_text)
    assert_envelope(by_prompt)
    assert by_text["result"] == by_prompt["result"]
    assert len(by_text["request_id"]) >= 16  # made up when the client sends none


def test_summarize_is_the_chat_answer_to_the_instruction(http: httpx.Client) -> None:
    r = infer(
        http, text=TEXT, task="summarize", model=f"{MODEL_NAME}:1", parameters={"max_tokens": 16}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert_envelope(body)
    chat = http.post(
        "/v1/chat/completions",
        json={
            "model": MODEL_NAME,
            "max_tokens": 16,
            "temperature": 0,
            "messages": [{"role": "user", "content": SUMMARY_INSTRUCTION + TEXT}],
        },
    ).json()
    assert body["result"] == chat["choices"][0]["message"]["content"].strip()  # greedy by default
    assert body["metadata"]["template"] == "chat"
    assert body["metadata"]["prompt_tokens"] == chat["usage"]["prompt_tokens"]
    assert body["metadata"]["completion_tokens"] == chat["usage"]["completion_tokens"] <= 16


def assert_same_result(got: str | dict, expected: str | dict) -> None:
    """Equal texts, or the same label with the same scores (up to float noise)."""
    if isinstance(expected, str):
        assert got == expected
    else:
        assert isinstance(got, dict) and got["label"] == expected["label"]
        assert got["scores"] == pytest.approx(expected["scores"])


def check_label_result(body: dict, labels: list[str]) -> None:
    result, meta = body["result"], body["metadata"]
    assert list(result["scores"]) == labels
    assert sum(result["scores"].values()) == pytest.approx(1.0)
    # The calibrated scores are the labels' log-softmax after the text less
    # that after the content-free text; the probabilities are their softmax.
    total = math.log(sum(math.exp(meta["logprobs"][la]) for la in labels))
    prior_total = math.log(sum(math.exp(meta["calibration"][la]) for la in labels))
    assert prior_total == pytest.approx(0.0, abs=1e-9)  # already a log-softmax
    for label in labels:
        assert meta["calibrated"][label] == pytest.approx(
            meta["logprobs"][label] - total - meta["calibration"][label]
        )
    assert result["label"] == max(labels, key=lambda la: meta["calibrated"][la])
    top = max(meta["calibrated"].values())
    weights = {la: math.exp(meta["calibrated"][la] - top) for la in labels}
    for label in labels:
        assert result["scores"][label] == pytest.approx(weights[label] / sum(weights.values()))
        assert meta["logprobs"][label] < 0
        # The per-token mean is the most likely form's, whose sum is at most the label's.
        mean_sum = meta["mean_logprobs"][label] * meta["label_tokens"][label]
        assert mean_sum <= meta["logprobs"][label] + 1e-9
    assert meta["template"] == "chat"


def test_sentiment_scores_the_three_labels(http: httpx.Client) -> None:
    r = infer(http, text="I loved this film.", task="sentiment", model=MODEL_NAME)
    assert r.status_code == 200, r.text
    assert_envelope(r.json())
    check_label_result(r.json(), ["positive", "negative", "neutral"])
    again = infer(http, text="I loved this film.", task="sentiment").json()
    assert_same_result(again["result"], r.json()["result"])  # scoring is deterministic


def test_classify_scores_the_given_labels(http: httpx.Client) -> None:
    labels = ["animals", "cooking", "the weather"]
    r = infer(http, text=TEXT, task="classify", parameters={"labels": labels})
    assert r.status_code == 200, r.text
    assert_envelope(r.json())
    check_label_result(r.json(), labels)


def test_batch_keeps_order_and_fails_bad_items_alone(
    http: httpx.Client, server: RunningServer
) -> None:
    gen = {
        "text": "hello world",
        "parameters": {"max_tokens": 5, "temperature": 0, "ignore_eos": True},
    }
    sentiment = {"text": "I loved this film.", "task": "sentiment"}
    classify = {"text": TEXT, "task": "classify", "parameters": {"labels": ["animals", "food"]}}
    items = [
        gen,
        {"text": "x", "task": "juggle"},
        sentiment,
        {"task": "generate"},
        classify,
        {"text": "x", "model": "nope"},
        "not an object",
        {**classify, "parameters": {"labels": ["a", "a"]}},
    ]
    r = http.post("/v1/infer/batch", json={"requests": items}, headers={"X-Request-ID": "batch-7"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == "batch-7" and body["latency_ms"] > 0
    assert (body["num_succeeded"], body["num_failed"]) == (3, 5)
    results = body["results"]
    assert [x["request_id"] for x in results] == [f"batch-7-{i}" for i in range(len(items))]
    assert [x["success"] for x in results] == [True, False, True, False, True, False, False, False]
    assert [x["status_code"] for x in results] == [200, 400, 200, 400, 200, 404, 400, 400]
    errors = [x["error"] for x in results]
    assert errors[1]["param"] == "task" and "requests.1.task" in errors[1]["message"]
    assert errors[3]["param"] == "text" and "text is required" in errors[3]["message"]
    assert errors[5]["code"] == "model_not_found" and errors[5]["type"] == "not_found_error"
    assert errors[6]["type"] == "invalid_request_error" and "requests.6" in errors[6]["message"]
    assert errors[7]["param"] == "parameters.labels" and "twice" in errors[7]["message"]
    for i, item in [(0, gen), (2, sentiment), (4, classify)]:  # each as it would be alone
        alone = infer(http, **item).json()
        assert_same_result(results[i]["result"], alone["result"])
        assert results[i]["model_used"] == f"{MODEL_NAME}:1"
    assert all(x["result"] is None and x["model_used"] is None for x in results if not x["success"])
    assert server.handle.outstanding == 0  # every admitted item ended


@pytest.mark.parametrize(
    ("body", "param", "fragments"),
    [
        ({"task": "generate"}, "text", ["text is required"]),
        ({"text": ""}, "text", ["must not be empty"]),
        ({"text": "a", "prompt": "b"}, "text", ["not both"]),
        ({"text": 3}, "text", ["valid string"]),
        ({"text": "a", "task": "juggle"}, "task", ["task:", "'generate'"]),
        ({"text": "a", "task": "translate"}, "task", ["task:"]),
        ({"text": "a", "colour": "blue"}, "colour", ["colour is not supported"]),
        (
            {"text": "a", "parameters": {"max_tokenz": 3, "temp": 1}},
            "parameters.max_tokenz",
            ["unknown parameters for task 'generate': max_tokenz, temp", "max_tokens"],
        ),
        ({"text": "a", "parameters": {"top_p": 0}}, "parameters.top_p", ["top_p"]),
        (
            {"text": "a", "parameters": {"temperature": "hot"}},
            "parameters.temperature",
            ["valid number"],
        ),
        ({"text": "a", "parameters": {"max_tokens": 10_000}}, "parameters.max_tokens", ["leaves"]),
        (
            {"text": "a", "task": "summarize", "parameters": {"labels": ["x", "y"]}},
            "parameters.labels",
            ["unknown parameters"],
        ),
        (
            {"text": "a", "task": "sentiment", "parameters": {"labels": ["x", "y"]}},
            "parameters.labels",
            ["it takes: none"],
        ),
        ({"text": "a", "task": "classify"}, "parameters.labels", ["Field required"]),
        (
            {"text": "a", "task": "classify", "parameters": {"labels": []}},
            "parameters.labels",
            ["at least 2"],
        ),
        (
            {"text": "a", "task": "classify", "parameters": {"labels": ["x", ""]}},
            "parameters.labels",
            ["blank"],
        ),
        (
            {"text": "a", "task": "classify", "parameters": {"labels": ["x", "y", "x"]}},
            "parameters.labels",
            ["'x' twice"],
        ),
        ({"text": "the cat sat " * 200, "task": "sentiment"}, "text", ["too long"]),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    http: httpx.Client, body: dict, param: str, fragments: list[str]
) -> None:
    assert_error(infer(http, **body), 400, param, *fragments)


def test_unknown_model_is_404(http: httpx.Client) -> None:
    r = infer(http, text="a", model="nope")
    assert_error(r, 404, "model", "'nope' does not exist", MODEL_NAME, code="model_not_found")
    r = infer(http, text="a", model=f"{MODEL_NAME}:9")
    assert_error(r, 404, "model", code="model_not_found")


def test_batch_shape_errors(http: httpx.Client, server: RunningServer) -> None:
    limit = server.app.state.settings.infer_max_batch
    too_many = [{"text": "a"}] * (limit + 1)
    assert_error(
        http.post("/v1/infer/batch", json={"requests": too_many}),
        400,
        "requests",
        f"{limit + 1} items",
        f"limit of {limit}",
        "MODELBENCH_INFER_MAX_BATCH",
    )
    assert_error(
        http.post("/v1/infer/batch", json={"requests": []}), 400, "requests", "at least one"
    )
    assert_error(
        http.post("/v1/infer/batch", json={"requests": {"text": "a"}}),
        400,
        "requests",
        "valid list",
    )
    assert_error(http.post("/v1/infer/batch", json={}), 400, "requests", "Field required")
    r = http.post(
        "/v1/infer/batch", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


def test_a_client_that_walks_away_has_its_batch_aborted(server: RunningServer) -> None:
    """Closing the connection mid-batch cancels every item: their engine
    requests are aborted (fewer tokens generated than asked for), their KV
    blocks freed and their admissions ended."""
    num_items, max_tokens = 16, MAX_MODEL_LEN - 16
    item = {"text": "hello", "parameters": {"max_tokens": max_tokens, "ignore_eos": True}}
    payload = json.dumps({"requests": [item] * num_items}).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    stats = server.engine.stats
    before = stats().num_generation_tokens
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/infer/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        deadline = time.monotonic() + 30
        while stats().num_generation_tokens == before and time.monotonic() < deadline:
            time.sleep(0.002)
        assert server.handle.outstanding == num_items
    deadline = time.monotonic() + 30
    while (server.handle.outstanding or stats().scheduler.kv_cache_usage) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert server.handle.outstanding == 0
    assert stats().scheduler.kv_cache_usage == 0.0
    assert stats().num_generation_tokens - before < num_items * max_tokens


# ---- several models: the default per task, tasks not served, admission ----


@pytest.fixture(scope="module")
def two_models(
    tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """ "writer" does only generate and holds two requests at a time
    (max_num_seqs 1 + max_queue 1); "judge", loaded after it, does every task."""
    engine = f"max_model_len = {MAX_MODEL_LEN}\nkv_cache_memory = {KV_CACHE_MEMORY}\n"
    models = tmp_path_factory.mktemp("infer") / "models.toml"
    models.write_text(f"""
[[models]]
name = "writer"
path = "{tiny_llama_path}"
tasks = ["generate"]
max_num_seqs = 1
{engine}
[[models]]
name = "judge"
path = "{tiny_llama_path}"
{engine}
""")
    with run_server(
        Settings(models_file=models, port=free_port(), max_queue=1), tiny_llama_path
    ) as running:
        yield running


def test_omitted_model_is_the_first_that_serves_the_task(two_models: RunningServer) -> None:
    with httpx.Client(base_url=two_models.base_url, timeout=60) as http:
        generated = infer(http, text="hello", parameters={"max_tokens": 2})
        assert_envelope(generated.json(), model="writer:1")
        judged = infer(http, text="I loved it.", task="sentiment")
        assert_envelope(judged.json(), model="judge:1")
        r = infer(
            http, text="a", task="classify", model="writer", parameters={"labels": ["x", "y"]}
        )
        assert_error(
            r,
            400,
            "task",
            "does not serve the task 'classify'",
            "generate",
            code="task_not_supported",
        )


def test_batch_items_are_admitted_one_by_one(two_models: RunningServer) -> None:
    item = {
        "text": "hello",
        "model": "writer",
        "parameters": {"max_tokens": 40, "ignore_eos": True},
    }
    with httpx.Client(base_url=two_models.base_url, timeout=60) as http:
        r = http.post("/v1/infer/batch", json={"requests": [item] * 5})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    # All five start at once; the version holds two, so the rest are refused.
    assert [x["status_code"] for x in results] == [200, 200, 429, 429, 429]
    assert all(x["error"]["code"] == "queue_full" for x in results[2:])
    assert two_models.registry.resolve("writer").outstanding == 0
