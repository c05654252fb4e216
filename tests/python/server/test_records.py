"""Every inference request on record, on SQLite and PostgreSQL: each
endpoint (completions and chat, streamed and not; embeddings; the task API
and its batch; a /v1/batch job), errors included, listed and filtered through
/v1/requests with pagination; and the option to keep no text."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from modelbench.config import Settings
from modelbench.db.writer import storable

from .conftest import (
    KV_CACHE_MEMORY,
    MAX_MODEL_LEN,
    MODEL_NAME,
    RunningServer,
    free_port,
    run_server,
)


def as_stored(text: str) -> str:
    """A response's text as the store keeps it: a random-weight model may
    generate NUL, which PostgreSQL's text refuses; records hold U+FFFD there."""
    return storable({"text": text})["text"]


def make_server(tiny_llama_path: Path, url: str, **extra: object):
    settings = Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        port=free_port(),
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY,
        database_url=url,
        **extra,
    )
    return run_server(settings, tiny_llama_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def recorded(
    request: pytest.FixtureRequest, tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    if request.param == "sqlite":
        url, cleanup = f"sqlite:///{tmp_path_factory.mktemp('records') / 'store.db'}", None
    else:
        from ..postgres import create_database, drop_database

        url, name = create_database()
        cleanup = lambda: drop_database(name)  # noqa: E731
    try:
        with make_server(tiny_llama_path, url) as running:
            yield running
    finally:
        if cleanup:
            cleanup()


def flush(server: RunningServer) -> None:
    assert server.app.state.store.writer.flush(timeout_s=30)


def record_of(server: RunningServer, response: httpx.Response, headers: dict | None = None) -> dict:
    """The response's row. Rows are submitted as the response ends and written
    in the background: wait for it."""
    record_id = response.headers["x-modelbench-record-id"]
    deadline = time.monotonic() + 30
    while True:
        flush(server)
        r = httpx.get(f"{server.base_url}/v1/requests/{record_id}", headers=headers)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert r.status_code == 200, r.text
    return r.json()


def test_each_endpoint_is_recorded(recorded: RunningServer) -> None:
    base = recorded.base_url
    with httpx.Client(base_url=base, timeout=30) as http:
        plain = http.post(
            "/v1/completions",
            json={
                "model": MODEL_NAME,
                "prompt": "once upon",
                "max_tokens": 5,
                "temperature": 0.0,
                "ignore_eos": True,
            },
            headers={"X-Request-ID": "rec-1"},
        )
        rec = record_of(recorded, plain)
        body = plain.json()
        assert rec["http_request_id"] == "rec-1" and rec["endpoint"] == "/v1/completions"
        assert (rec["model_name"], rec["model_version"], rec["task"]) == (
            MODEL_NAME,
            "1",
            "generate",
        )
        assert rec["prompt"] == "once upon" and rec["output_text"] == as_stored(
            body["choices"][0]["text"]
        )
        assert rec["status"] == "succeeded" and rec["http_status"] == 200 and rec["stream"] is False
        assert rec["finish_reason"] == "length" and rec["completion_tokens"] == 5
        assert rec["prompt_tokens"] == body["usage"]["prompt_tokens"]
        assert rec["parameters"]["max_tokens"] == 5 and rec["parameters"]["temperature"] == 0.0
        assert 0 < rec["ttft_ms"] <= rec["latency_ms"] and rec["queue_time_ms"] is not None

        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": MODEL_NAME,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "stream": True,
                "ignore_eos": True,
            },
        ) as streamed:
            text = "".join(streamed.iter_text())
        rec = record_of(recorded, streamed)
        assert rec["stream"] is True and rec["messages"] == [{"role": "user", "content": "hi"}]
        assert rec["completion_tokens"] == 4 and rec["status"] == "succeeded" and "[DONE]" in text

        with http.stream(
            "POST",
            "/v1/completions",
            json={
                "model": MODEL_NAME,
                "prompt": "the sea",
                "max_tokens": 3,
                "stream": True,
                "stream_options": {"include_usage": True},
                "ignore_eos": True,
            },
        ) as streamed:
            chunks = [
                json.loads(line[5:])
                for line in streamed.iter_lines()
                if line.startswith("data:") and line != "data: [DONE]"
            ]
        rec = record_of(recorded, streamed)
        assert (rec["endpoint"], rec["stream"], rec["prompt"]) == (
            "/v1/completions",
            True,
            "the sea",
        )
        assert rec["output_text"] == as_stored(
            "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        )
        assert rec["completion_tokens"] == chunks[-1]["usage"]["completion_tokens"] == 3
        assert rec["status"] == "succeeded" and rec["finish_reason"] == "length"
        assert 0 < rec["ttft_ms"] <= rec["latency_ms"]

        chat = http.post(
            "/v1/chat/completions",
            json={
                "model": MODEL_NAME,
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 3,
                "ignore_eos": True,
            },
        )
        rec = record_of(recorded, chat)
        assert (rec["endpoint"], rec["stream"], rec["task"]) == (
            "/v1/chat/completions",
            False,
            "generate",
        )
        assert rec["messages"] == [{"role": "user", "content": "hello"}]
        assert rec["output_text"] == as_stored(chat.json()["choices"][0]["message"]["content"])
        assert rec["completion_tokens"] == 3 and rec["status"] == "succeeded"

        embedded = http.post(
            "/v1/embeddings", json={"model": MODEL_NAME, "input": ["one", "two words"]}
        )
        assert embedded.status_code == 200, embedded.text
        rec = record_of(recorded, embedded)
        assert (rec["endpoint"], rec["task"], rec["status"]) == (
            "/v1/embeddings",
            "embed",
            "succeeded",
        )
        assert rec["model_name"] == MODEL_NAME and rec["http_status"] == 200
        assert rec["prompt_tokens"] == embedded.json()["usage"]["prompt_tokens"]
        assert rec["output_text"].startswith("2 embeddings of")

        infer = http.post(
            "/v1/infer", json={"text": "great film", "task": "sentiment", "model": MODEL_NAME}
        )
        rec = record_of(recorded, infer)
        assert rec["endpoint"] == "/v1/infer" and rec["task"] == "sentiment"
        assert (
            infer.json()["result"]["label"] in rec["output_text"] and rec["status"] == "succeeded"
        )

        bad = http.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "x", "top_p": 7})
        rec = record_of(recorded, bad)
        assert rec["status"] == "failed" and rec["http_status"] == 400 and "top_p" in rec["error"]
        missing = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]},
        )
        rec = record_of(recorded, missing)
        assert rec["http_status"] == 404 and rec["model_name"] is None and "gpt-9" in rec["error"]

        batch = http.post(
            "/v1/infer/batch",
            headers={"X-Request-ID": "b-1"},
            json={
                "requests": [
                    {"text": "a", "model": MODEL_NAME, "parameters": {"max_tokens": 2}},
                    {"text": "b", "task": "dance"},
                ]
            },
        )
        assert batch.status_code == 200
        flush(recorded)
        items = http.get("/v1/requests", params={"limit": 10}).json()["data"]
        by_id = {r["http_request_id"]: r for r in items}
        assert (
            by_id["b-1-0"]["status"] == "succeeded"
            and by_id["b-1-0"]["endpoint"] == "/v1/infer/batch"
        )
        assert by_id["b-1-1"]["status"] == "failed" and by_id["b-1-1"]["http_status"] == 400

        # A batch job runs through the app in process: recorded like HTTP, with its batch.
        batch_id = http.post(
            "/v1/batch",
            json=[
                {
                    "custom_id": "job-a",
                    "method": "POST",
                    "url": "/v1/completions",
                    "body": {
                        "model": MODEL_NAME,
                        "prompt": "in a batch",
                        "max_tokens": 2,
                        "ignore_eos": True,
                    },
                }
            ],
        ).json()["id"]
        deadline = time.monotonic() + 60
        while (batch := http.get(f"/v1/batch/{batch_id}").json())["status"] != "completed":
            assert time.monotonic() < deadline, batch
            time.sleep(0.05)
        result = json.loads(http.get(f"/v1/batch/{batch_id}/results").text.splitlines()[0])
        deadline = time.monotonic() + 30
        while not (
            mine := [
                r
                for r in http.get("/v1/requests", params={"limit": 100}).json()["data"]
                if r["batch_id"] == batch_id
            ]
        ):
            assert time.monotonic() < deadline
            flush(recorded)
        assert len(mine) == 1
        rec = mine[0]
        assert (rec["endpoint"], rec["prompt"], rec["status"]) == (
            "/v1/completions",
            "in a batch",
            "succeeded",
        )
        assert rec["completion_tokens"] == 2 and rec["http_request_id"] == result["id"]
        assert rec["output_text"] == as_stored(result["response"]["body"]["choices"][0]["text"])


def test_list_filters_and_pages(recorded: RunningServer) -> None:
    with httpx.Client(base_url=recorded.base_url, timeout=30) as http:
        for i in range(7):
            last = http.post(
                "/v1/completions",
                json={"model": MODEL_NAME, "prompt": f"p{i}", "max_tokens": 1},
                headers={"X-Request-ID": f"page-{i}"},
            )
        record_of(recorded, last)  # the last is written, so all are
        seen, cursor = [], None
        while True:
            params = {"limit": 3, "model": MODEL_NAME, "status": "succeeded", "task": "generate"}
            page = http.get(
                "/v1/requests", params={**params, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [r["http_request_id"] for r in page["data"]]
            assert all(r["status"] == "succeeded" and r["task"] == "generate" for r in page["data"])
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        assert len(seen) == len(set(seen))
        mine = [s for s in seen if s and s.startswith("page-")]
        assert mine == [f"page-{i}" for i in reversed(range(7))]  # newest first
        assert http.get("/v1/requests", params={"model": "nope"}).json()["data"] == []
        assert (
            http.get("/v1/requests", params={"status": "failed", "limit": 1000}).status_code == 200
        )
        future = http.get("/v1/requests", params={"since": "2999-01-01T00:00:00Z"}).json()
        assert future["data"] == [] and future["has_more"] is False
        for params, param in [
            ({"since": "yesterday"}, "since"),
            ({"cursor": "zzz"}, "cursor"),
            ({"since": "200", "until": "100"}, "since"),
            ({"limit": 0}, "limit"),
        ]:
            r = http.get("/v1/requests", params=params)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert http.get("/v1/requests/req_nope").status_code == 404


def test_store_text_off_keeps_metadata_only(tiny_llama_path: Path, tmp_path: Path) -> None:
    with make_server(tiny_llama_path, f"sqlite:///{tmp_path / 's.db'}", store_text=False) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        # ignore_eos: a random-weight model may sample its EOS at the default temperature.
        raw = client.completions.with_raw_response.create(
            model=MODEL_NAME, prompt="secret", max_tokens=3, extra_body={"ignore_eos": True}
        )
        rec = record_of(server, raw.http_response)  # type: ignore[arg-type]
        assert rec["prompt"] is None and rec["output_text"] is None and rec["messages"] is None
        assert rec["completion_tokens"] == 3 and rec["status"] == "succeeded"


def test_a_store_outage_fails_no_inference_and_loses_no_record(tiny_llama_path: Path) -> None:
    from ..postgres import create_database, drop_database, set_connections

    url, name = create_database()
    try:
        with (
            make_server(tiny_llama_path, url) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            flush(server)
            set_connections(name, False)  # the store goes away under traffic
            try:
                statuses = [
                    http.post(
                        "/v1/completions",
                        headers={"X-Request-ID": f"out-{i}"},
                        json={"model": MODEL_NAME, "prompt": f"p{i}", "max_tokens": 2},
                    ).status_code
                    for i in range(30)
                ]
                assert statuses == [200] * 30
                writer = server.app.state.store.writer
                deadline = time.monotonic() + 10  # the last rows are handed over as responses end
                while writer.num_buffered < 30 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert not writer.flush(timeout_s=1.0) and writer.num_buffered == 30
                metrics = http.get("/metrics").text
                assert "modelbench:store_up 0.0" in metrics
                assert "modelbench:request_records_buffered 30.0" in metrics
            finally:
                set_connections(name, True)
            flush(server)
            page = http.get("/v1/requests", params={"limit": 100}).json()["data"]
            assert {f"out-{i}" for i in range(30)} <= {r["http_request_id"] for r in page}
            metrics = http.get("/metrics").text
            assert "modelbench:request_records_dropped_total 0.0" in metrics
            assert "modelbench:store_up 1.0" in metrics
    finally:
        drop_database(name)
