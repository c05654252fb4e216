"""POST /v1/predict on a real server: `modelbench serve --model m.pt`'s
settings serve a TorchScript classifier trained here; answers equal the
PyTorch module's, one at a time and concurrent; /v1/models lists its inputs
and outputs; bad inputs are 400s naming the input and both shapes; every
call is on record in the store; a language model does not take predict."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from sqlalchemy import create_engine, text

from modelbench.config import Settings

from ..predict.test_predict_engine import LABELS, train
from .conftest import free_port, run_server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("predict_route")
    path = root / "clusters.pt"
    module = train(path)
    settings = Settings(
        model=str(path), port=free_port(), database_url=f"sqlite:///{root / 'store.db'}"
    )
    with run_server(settings, path) as server:
        yield server, module, root


def post(base: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base}/v1/predict", json=body, timeout=60)


def test_answers_equal_the_module(served) -> None:
    server, module, _ = served
    x = torch.randn(24, 4, generator=torch.Generator().manual_seed(3)) * 2
    with torch.inference_mode():
        expected = module(x)
    one = post(server.base_url, {"model": "clusters", "inputs": {"features": x[:3].tolist()}})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == "clusters:1"
    assert torch.allclose(torch.tensor(body["outputs"]["probabilities"]), expected[:3], atol=1e-5)
    assert body["class_id"] == [int(r.argmax()) for r in expected[:3]]
    assert body["label"] == [LABELS[i] for i in body["class_id"]]
    # The seed's shape: one row of features, the model by model_name.
    seed = post(server.base_url, {"model_name": "clusters", "features": x[5].tolist()})
    assert seed.status_code == 200, seed.text
    assert seed.json()["class_id"] == [int(expected[5].argmax())]
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(
                lambda i: post(server.base_url, {"model": "clusters", "features": x[i].tolist()}),
                range(24),
            )
        )
    for i, r in enumerate(answers):
        assert r.status_code == 200
        got = torch.tensor(r.json()["outputs"]["probabilities"][0])
        assert torch.allclose(got, expected[i], atol=1e-5)


def test_models_lists_inputs_and_outputs(served) -> None:
    server, _, _ = served
    cards = httpx.get(f"{server.base_url}/v1/models", timeout=30).json()["data"]
    # The name's card says what its versions serve: predict alone.
    assert next(c for c in cards if c["id"] == "clusters")["tasks"] == ["predict"]
    card = next(c for c in cards if c["id"] == "clusters:1")
    assert card["tasks"] == ["predict"]
    assert card["inputs"] == [{"name": "features", "dtype": "float32", "shape": [-1, 4]}]
    assert card["outputs"][0]["name"] == "probabilities"
    assert card["labels"] == LABELS


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (
            {"model": "clusters", "inputs": {"features": [1.0, 2.0]}},
            "inputs.features",
            "expects [any, 4]",
        ),
        ({"model": "clusters", "inputs": {"x": [1.0] * 4}}, "inputs.x", "unknown input"),
        (
            {"model": "clusters", "inputs": {"features": [[1.0] * 4] * 40}},
            "inputs.features",
            "1 to 16",
        ),
        ({"model": "clusters"}, None, "inputs"),
        ({"inputs": {"features": [1.0] * 4}}, None, "model is required"),
        ({"model": "nope", "features": [1.0] * 4}, "model", "does not exist"),
    ],
)
def test_bad_requests_name_the_field(served, body: dict, param: str | None, says: str) -> None:
    server, _, _ = served
    r = post(server.base_url, body)
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert says in error["message"], error
    if param is not None:
        assert error["param"] == param


def test_every_call_is_on_record(served) -> None:
    server, _, root = served
    assert post(server.base_url, {"model": "clusters", "features": [0.0] * 4}).status_code == 200
    store = create_engine(f"sqlite:///{root / 'store.db'}")
    query = text("SELECT task, model_name FROM requests WHERE endpoint = '/v1/predict'")
    for _ in range(100):  # the record is written after the answer
        with store.connect() as c:
            rows = c.execute(query).fetchall()
        if rows:
            break
        time.sleep(0.1)
    # Every call, refused ones too (no model for those it could not route).
    assert rows and all(r.task == "predict" for r in rows)
    assert any(r.model_name == "clusters" for r in rows)


def test_a_tensor_model_refuses_other_tasks_naming_predict(served) -> None:
    server, _, _ = served
    r = httpx.post(
        f"{server.base_url}/v1/completions",
        json={"model": "clusters", "prompt": "hi", "max_tokens": 1},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "task_not_supported"
    assert error["message"].endswith("it serves: predict"), error
