"""A real ``modelbench serve`` process serving a language model and the
embedding model all-MiniLM-L6-v2 beside it (--embedding-model): the openai
client's embeddings from both, truncation in ``usage`` and the 400 with
``truncate: false``, /v1/models, the embed task, the semantic response
cache embedding prompts with it, and the settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch

from modelbench.config import Settings
from modelbench.engine.encoder_engine import EncoderEngine
from modelbench.models.encoder_loader import DEFAULT_EMBEDDING_MODEL

from .conftest import MODEL_NAME, free_port, serve_args

DATA = json.loads((Path(__file__).parents[1] / "data" / "embedding_sentences.json").read_text())


@pytest.fixture(scope="module")
def base_url(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("embedding-serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MODELBENCH_RUN_WORKER": "false"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelbench",
                *serve_args(
                    tiny_llama_path,
                    port,
                    "--embedding-model",
                    DEFAULT_EMBEDDING_MODEL,
                    "--cache",
                    "semantic",  # the response cache embeds prompts with it
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the server exited: {log_path.read_text()}"
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)


def test_embeddings_from_both_models(client: openai.OpenAI) -> None:
    texts = DATA["sentences"][:8]
    minilm = client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input=texts)
    assert minilm.model == f"{DEFAULT_EMBEDDING_MODEL}:1"
    got = torch.tensor([d.embedding for d in minilm.data])
    expected = torch.tensor(EncoderEngine(DEFAULT_EMBEDDING_MODEL).embed_sync(texts).embeddings)
    assert got.shape == (8, 384)
    assert torch.nn.functional.cosine_similarity(got, expected).min().item() >= 0.9999
    assert minilm.usage.model_extra == {"truncated": 0}
    llm = client.embeddings.create(model=MODEL_NAME, input=texts[:2])
    assert llm.model == f"{MODEL_NAME}:1" and len(llm.data) == 2
    assert len(llm.data[0].embedding) != 384  # the language model's own width


def test_long_input_is_truncated_and_usage_says_so(client: openai.OpenAI, base_url: str) -> None:
    texts = [DATA["sentences"][0], DATA["long"][0], DATA["long"][1]]
    out = client.embeddings.create(model=DEFAULT_EMBEDDING_MODEL, input=texts)
    assert out.usage.model_extra == {"truncated": 2}
    short = len(EncoderEngine(DEFAULT_EMBEDDING_MODEL).tokenizer.encode(texts[0]))
    assert out.usage.prompt_tokens == short + 2 * 256
    r = httpx.post(
        f"{base_url}/v1/embeddings",
        json={"model": DEFAULT_EMBEDDING_MODEL, "input": texts, "truncate": False},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input" and "input[1]" in error["message"]
    assert "at most 256" in error["message"]


def test_models_lists_the_embedding_model(base_url: str) -> None:
    data = httpx.get(f"{base_url}/v1/models", timeout=10).json()["data"]
    cards = {m["id"]: m for m in data}
    assert cards[DEFAULT_EMBEDDING_MODEL]["tasks"] == ["embed"]
    assert cards[DEFAULT_EMBEDDING_MODEL]["max_model_len"] == 256
    assert MODEL_NAME in cards


def test_embed_task_and_generation_refused(base_url: str) -> None:
    r = httpx.post(
        f"{base_url}/v1/infer",
        json={"model": DEFAULT_EMBEDDING_MODEL, "task": "embed", "text": "A cat sat on the mat."},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"]["dimensions"] == 384
    r = httpx.post(
        f"{base_url}/v1/completions",
        json={"model": DEFAULT_EMBEDDING_MODEL, "prompt": "hi", "max_tokens": 2},
        timeout=60,
    )
    assert r.status_code == 400 and "generate" in r.text


def test_the_semantic_cache_embeds_with_the_encoder(base_url: str) -> None:
    greedy = {"model": MODEL_NAME, "max_tokens": 4, "temperature": 0}
    with httpx.Client(base_url=base_url, timeout=60) as http:
        first = http.post(
            "/v1/completions", json={"prompt": "How do I reset my password?", **greedy}
        )
        assert first.status_code == 200 and first.headers["x-modelbench-cache"] == "miss"
        later = http.post(
            "/v1/completions", json={"prompt": "How can I reset my password?", **greedy}
        )
        assert later.headers["x-modelbench-cache"] == "hit-semantic"
        assert later.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]


def test_settings_choose_the_embedding_model(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [m.name for m in Settings().model_configs().models]
    assert names == ["SmolLM2-135M-Instruct", DEFAULT_EMBEDDING_MODEL]
    assert [m.name for m in Settings(model="/m/x").model_configs().models] == ["x"]
    monkeypatch.setenv("MODELBENCH_EMBEDDING_MODEL", "none")
    assert [m.name for m in Settings().model_configs().models] == ["SmolLM2-135M-Instruct"]
    monkeypatch.setenv("MODELBENCH_EMBEDDING_MODEL", DEFAULT_EMBEDDING_MODEL)
    configs = Settings(model="/m/x").model_configs().models
    assert [(m.name, m.tasks) for m in configs] == [
        ("x", ["generate", "summarize", "sentiment", "classify", "embed"]),
        (DEFAULT_EMBEDDING_MODEL, ["embed"]),
    ]
    monkeypatch.setenv("MODELBENCH_EMBEDDING_MODEL", "/nowhere/model")
    with pytest.raises(ValueError, match="is not an embedding model"):
        Settings().model_configs()
