"""GET /v1/models/{id} (the openai client's models.retrieve) and GET /version."""

from __future__ import annotations

import httpx
import openai
import pytest

from modelbench import __version__

from .conftest import MODEL_NAME, RunningServer


def test_the_openai_client_retrieves_a_model_and_its_version(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")
    card = client.models.retrieve(MODEL_NAME)
    assert card.id == MODEL_NAME and card.object == "model"
    version = client.models.retrieve(f"{MODEL_NAME}:1")
    assert version.id == f"{MODEL_NAME}:1" and version.model_extra["state"] == "ready"
    listed = {m.id for m in client.models.list().data}
    assert {MODEL_NAME, f"{MODEL_NAME}:1"} <= listed


def test_an_unknown_model_is_a_404_listing_those_served(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_found"
    assert MODEL_NAME in error["message"]


def test_version(server: RunningServer) -> None:
    r = httpx.get(server.base_url + "/version", timeout=10)
    assert r.status_code == 200 and r.json() == {"version": __version__}
