"""``priority`` (vLLM's: lower runs first) through the server: admission to
a full queue, scheduling ahead of a low-priority flood, and every route
that generates (completions, chat, the task API, batch jobs) taking it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from modelbench.config import Settings

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, free_port, run_server

MODEL = "prio"
FLOOD = {"prompt": "flood", "max_tokens": MAX_MODEL_LEN - 8, "ignore_eos": True, "temperature": 0}


@pytest.fixture(scope="module")
def small_queue(tiny_llama_path: Path):
    """Two sequences run, two wait: a version holds four requests at one level."""
    settings = Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL,
        port=free_port(),
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY,
        max_num_seqs=2,
        max_queue=2,
    )
    with run_server(settings, tiny_llama_path) as running:
        yield running


async def _flood_then(base_url: str, registry, urgent: dict, path: str = "/v1/completions") -> dict:
    """Fill the version with low-priority work, then send ``urgent``; report
    what was refused and the order things finished in."""
    finished: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:

        async def send(name: str, body: dict, route: str = "/v1/completions") -> httpx.Response:
            r = await client.post(route, json={"model": MODEL, **body})
            finished.append(name)
            return r

        flood = [asyncio.create_task(send(f"low-{i}", {**FLOOD, "priority": 10})) for i in range(4)]
        handle = registry.resolve(MODEL)
        while handle.outstanding < 4:  # all four admitted: two running, two waiting
            await asyncio.sleep(0.001)
        refused = await client.post(
            "/v1/completions", json={"model": MODEL, **FLOOD, "priority": 10}
        )
        started = time.monotonic()
        answer = await send("urgent", urgent, path)
        urgent_s = time.monotonic() - started
        lows = await asyncio.gather(*flood)
    return {
        "refused": refused,
        "answer": answer,
        "finished": finished,
        "lows": lows,
        "urgent_s": urgent_s,
    }


def test_a_high_priority_request_is_admitted_and_served_before_a_full_low_priority_queue(
    small_queue,
) -> None:
    urgent = {"prompt": "urgent", "max_tokens": 4, "ignore_eos": True, "priority": -5}
    got = asyncio.run(_flood_then(small_queue.base_url, small_queue.registry, urgent))
    # The fifth low-priority request finds the version full...
    assert got["refused"].status_code == 429, got["refused"].text
    assert "priority 10 or ahead of it" in got["refused"].json()["error"]["message"]
    # ...while the urgent one is admitted, preempts a running low-priority
    # sequence, and finishes first; the low-priority ones still complete.
    assert got["answer"].status_code == 200, got["answer"].text
    assert got["finished"][0] == "urgent"
    assert all(r.status_code == 200 for r in got["lows"])
    assert all(len(r.json()["choices"][0]["text"]) > 0 for r in got["lows"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "priority": -1},
        ),
        ("/v1/infer", {"text": "hello", "task": "generate", "priority": -1}),
    ],
)
def test_chat_and_the_task_api_take_priority_too(small_queue, path: str, body: dict) -> None:
    got = asyncio.run(_flood_then(small_queue.base_url, small_queue.registry, body, path))
    assert got["answer"].status_code == 200, got["answer"].text
    assert got["finished"][0] == "urgent"


def test_a_bad_priority_is_a_400_naming_it(small_queue) -> None:
    for path, body in [
        ("/v1/completions", {"prompt": "x", "priority": 2**40}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "priority": "a"}),
        ("/v1/infer", {"text": "x", "priority": 1.5}),
    ]:
        r = httpx.post(small_queue.base_url + path, json={"model": MODEL, **body}, timeout=30)
        assert r.status_code == 400, (path, r.text)
        assert "priority" in r.text


def test_a_batch_priority_goes_to_each_request_that_sets_none(small_queue) -> None:
    base = small_queue.base_url

    def job(prompt: str, **extra: int) -> dict:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 2, **extra}
        return {"custom_id": prompt, "url": "/v1/completions", "body": body}

    requests = [job("batch-own", priority=3), job("batch-default")]
    r = httpx.post(base + "/v1/batch", json={"requests": requests, "priority": 7}, timeout=30)
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{base}/v1/batch/{batch_id}", timeout=10).json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # The request log is written behind the responses: read it until both are there.
    while True:
        records = httpx.get(f"{base}/v1/requests", params={"limit": 50}, timeout=10).json()["data"]
        priority_of = {
            rec["prompt"]: rec["parameters"].get("priority")
            for rec in records
            if rec.get("prompt") in ("batch-own", "batch-default")
        }
        if len(priority_of) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert priority_of == {"batch-own": 3, "batch-default": 7}, records[:3]
    bad = httpx.post(
        base + "/v1/batch", json={"requests": requests, "priority": "high"}, timeout=30
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "priority"
    both = httpx.post(
        base + "/v1/batch?priority=1", json={"requests": requests, "priority": 2}, timeout=30
    )
    assert both.status_code == 400 and "give one" in both.text
