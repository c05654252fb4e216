"""POST /v1/embeddings through the official openai client (which asks for
base64 by default) and as floats; equal to the in-process LLM.embed; the
4xx paths; and recorded."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch

from modelbench import LLM

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, MODEL_NAME, RunningServer

TEXTS = ["the cat sat on the mat", "embeddings are mean-pooled hidden states"]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def test_openai_client_embeddings_equal_llm(server: RunningServer, client: openai.OpenAI) -> None:
    out = client.embeddings.create(model=MODEL_NAME, input=TEXTS)  # base64 on the wire
    assert [d.index for d in out.data] == [0, 1] and out.model == f"{MODEL_NAME}:1"
    llm = LLM(str(server.model_path), max_model_len=MAX_MODEL_LEN, kv_cache_memory=KV_CACHE_MEMORY)
    expected = torch.tensor([o.outputs.embedding for o in llm.embed(TEXTS)])
    got = torch.tensor([d.embedding for d in out.data])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert out.usage.prompt_tokens == sum(len(llm.tokenizer.encode(t)) for t in TEXTS)
    floats = client.embeddings.create(model=MODEL_NAME, input=TEXTS[0], encoding_format="float")
    torch.testing.assert_close(
        torch.tensor(floats.data[0].embedding), expected[0], atol=1e-6, rtol=0
    )
    ids = client.embeddings.create(
        model=MODEL_NAME, input=[[5, 6, 7], [8]], encoding_format="float"
    )
    assert len(ids.data) == 2 and ids.usage.prompt_tokens == 4


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": "x", "dimensions": 8}, "dimensions"),
        ({"input": []}, "input"),
        ({"input": [""]}, "input"),
        ({"input": [[1, 10**7]]}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": 3.5}, "input"),
    ],
)
def test_bad_embedding_requests_are_400(server: RunningServer, body: dict, param: str) -> None:
    r = httpx.post(
        server.base_url + "/v1/embeddings", json={"model": MODEL_NAME, **body}, timeout=30
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_embeddings_are_recorded(server: RunningServer) -> None:
    from .test_records import record_of

    r = httpx.post(
        server.base_url + "/v1/embeddings", json={"model": MODEL_NAME, "input": "hi"}, timeout=30
    )
    rec = record_of(server, r)
    assert rec["task"] == "embed" and rec["status"] == "succeeded" and rec["prompt_tokens"] > 0


def test_unknown_model_is_404_listing_the_available(server: RunningServer) -> None:
    r = httpx.post(
        server.base_url + "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "hi"},
        timeout=30,
    )
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["param"] == "model" and error["code"] == "model_not_found"
    assert error["type"] == "not_found_error"
    assert "text-embedding-3-small" in error["message"] and MODEL_NAME in error["message"]
