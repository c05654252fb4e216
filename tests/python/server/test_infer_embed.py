"""/v1/infer with task "embed": the same vector /v1/embeddings gives."""

from __future__ import annotations

import httpx
import pytest

from .conftest import MODEL_NAME, RunningServer


def test_the_embed_task_is_the_embeddings_vector(server: RunningServer) -> None:
    r = httpx.post(
        server.base_url + "/v1/infer",
        json={"model": MODEL_NAME, "task": "embed", "text": "A quiet morning."},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    e = httpx.post(
        server.base_url + "/v1/embeddings",
        json={"model": MODEL_NAME, "input": "A quiet morning."},
        timeout=60,
    ).json()["data"][0]["embedding"]
    assert result["dimensions"] == len(e) == len(result["embedding"])
    assert result["embedding"] == pytest.approx(e, abs=1e-6)


def test_embed_takes_no_parameters(server: RunningServer) -> None:
    r = httpx.post(
        server.base_url + "/v1/infer",
        json={"model": MODEL_NAME, "task": "embed", "text": "x", "parameters": {"dim": 3}},
        timeout=60,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "parameters.dim"
