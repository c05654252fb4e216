"""Asynchronous batch jobs end to end, on SQLite and PostgreSQL: submit
(JSON, JSONL body, JSONL upload), follow, read results in order, cancel;
a malformed line fails alone; and the error paths."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
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


def completion(i: int, max_tokens: int = 4) -> dict:
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/completions",
        "body": {
            "model": MODEL_NAME,
            "prompt": f"count {i}",
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,
        },
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def batch_server(
    request: pytest.FixtureRequest, tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('batch') / 'store.db'}"
        cleanup = None
    else:
        from ..postgres import create_database, drop_database

        url, name = create_database()
        cleanup = lambda: drop_database(name)  # noqa: E731
    settings = Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        port=free_port(),
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY,
        database_url=url,
        max_batch_jobs=100,
        worker_concurrency=4,
    )
    try:
        with run_server(settings, tiny_llama_path) as running:
            yield running
    finally:
        if cleanup:
            cleanup()


def wait_done(http: httpx.Client, batch_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = http.get(f"/v1/batch/{batch_id}").json()
        if batch["status"] in ("completed", "cancelled"):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)


def results(http: httpx.Client, batch_id: str) -> list[dict]:
    r = http.get(f"/v1/batch/{batch_id}/results")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/jsonl")
    return [json.loads(line) for line in r.text.splitlines()]


def test_json_batch_runs_in_order(batch_server: RunningServer) -> None:
    with httpx.Client(base_url=batch_server.base_url, timeout=30) as http:
        r = http.post(
            "/v1/batch",
            json={"requests": [completion(i) for i in range(12)], "metadata": {"owner": "tests"}},
        )
        assert r.status_code == 202, r.text
        created = r.json()
        assert created["id"].startswith("batch_") and created["request_counts"]["total"] == 12
        batch = wait_done(http, created["id"])
        assert batch["request_counts"]["succeeded"] == 12 and batch["metadata"] == {
            "owner": "tests"
        }
        lines = results(http, created["id"])
        assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(12)]
        first = lines[0]
        assert first["status"] == "succeeded" and first["response"]["status_code"] == 200
        assert first["response"]["body"]["object"] == "text_completion"
        assert first["response"]["body"]["usage"]["completion_tokens"] == 4
        job = http.get(f"/v1/jobs/{first['id']}").json()
        assert job["batch_id"] == created["id"] and job["attempts"] == 1 and job["error"] is None


def test_batches_are_listed_newest_first_a_page_at_a_time(batch_server: RunningServer) -> None:
    with httpx.Client(base_url=batch_server.base_url, timeout=30) as http:
        made = []
        for i in range(3):
            r = http.post("/v1/batch", json=[completion(i)])
            assert r.status_code == 202, r.text
            made.append(r.json()["id"])
            time.sleep(0.01)  # distinct creation times
        first = http.get("/v1/batch", params={"limit": 2}).json()
        assert first["object"] == "list" and [b["id"] for b in first["data"]] == made[::-1][:2]
        assert first["has_more"] and first["first_id"] == made[2] and first["last_id"] == made[1]
        assert first["data"][0]["request_counts"]["total"] == 1
        rest = http.get("/v1/batch", params={"limit": 100, "after": first["last_id"]}).json()
        assert rest["data"][0]["id"] == made[0] and made[1] not in [b["id"] for b in rest["data"]]
        for params, param in (
            ({"limit": 0}, "limit"),
            ({"limit": 101}, "limit"),
            ({"after": "batch_nope"}, "after"),
        ):
            r = http.get("/v1/batch", params=params)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        for batch_id in made:
            wait_done(http, batch_id)


def test_jsonl_with_a_malformed_line(batch_server: RunningServer) -> None:
    lines = [
        json.dumps(completion(0)),
        '{"custom_id": "broken", "url": ',
        json.dumps(completion(2)),
        json.dumps({**completion(3), "url": "/v1/files"}),
        json.dumps({**completion(4), "body": {"model": "nope", "prompt": "x"}}),
    ]
    jsonl = "\n".join(lines) + "\n"
    with httpx.Client(base_url=batch_server.base_url, timeout=30) as http:
        upload = http.post("/v1/batch", files={"file": ("batch.jsonl", jsonl, "application/jsonl")})
        raw = http.post("/v1/batch", content=jsonl, headers={"content-type": "application/jsonl"})
        for r in (upload, raw):
            assert r.status_code == 202, r.text
            wait_done(http, r.json()["id"])
            out = results(http, r.json()["id"])
            assert [o["status"] for o in out] == [
                "succeeded",
                "failed",
                "succeeded",
                "failed",
                "failed",
            ]
            assert out[1]["error"]["message"].startswith("line 2: not valid JSON")
            assert "url must be one of" in out[3]["error"]["message"]
            assert out[4]["response"]["status_code"] == 404 and "nope" in out[4]["error"]["message"]


def test_cancel(batch_server: RunningServer) -> None:
    with httpx.Client(base_url=batch_server.base_url, timeout=30) as http:
        created = http.post(
            "/v1/batch", json=[completion(i, max_tokens=100) for i in range(60)]
        ).json()
        cancelled = http.post(f"/v1/batch/{created['id']}/cancel").json()
        assert cancelled["status"] in ("cancelling", "cancelled")
        batch = wait_done(http, created["id"])
        counts = batch["request_counts"]
        assert batch["status"] == "cancelled" and counts["cancelled"] > 0
        assert counts["cancelled"] + counts["succeeded"] == 60 and counts["queued"] == 0


@pytest.mark.parametrize(
    "kwargs, param, message",
    [
        ({"json": []}, "requests", "no requests"),
        ({"json": {"requests": "all of them"}}, "requests", "JSON list"),
        ({"json": [completion(i) for i in range(101)]}, "requests", "at most 100"),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            "body",
            "not valid JSON",
        ),
        ({"json": {"requests": [completion(0)], "metadata": [1]}}, "metadata", "JSON object"),
        ({"files": {"other": ("a.jsonl", b"{}")}}, "file", "multipart field 'file'"),
    ],
)
def test_bad_batches_are_400(
    batch_server: RunningServer, kwargs: dict, param: str, message: str
) -> None:
    r = httpx.post(batch_server.base_url + "/v1/batch", timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and message in r.json()["error"]["message"]


def test_unknown_ids_are_404(batch_server: RunningServer) -> None:
    with httpx.Client(base_url=batch_server.base_url, timeout=30) as http:
        for path in ("/v1/batch/batch_nope", "/v1/batch/batch_nope/results", "/v1/jobs/job_nope"):
            r = http.get(path)
            assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
        assert http.post("/v1/batch/batch_nope/cancel").status_code == 404


def test_batches_wait_for_the_store(batch_server: RunningServer) -> None:
    store = batch_server.app.state.store
    store.is_migrated = False  # as while migrations run at start, or the database is unreachable
    try:
        r = httpx.post(batch_server.base_url + "/v1/batch", json=[completion(0)], timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_not_ready"
        assert r.headers["retry-after"] == "2"
        assert httpx.get(batch_server.base_url + "/ready").json()["store"] == "migrating"
        # inference does not wait for the store
        body = completion(0)["body"]
        assert (
            httpx.post(batch_server.base_url + "/v1/completions", json=body, timeout=30).status_code
            == 200
        )
    finally:
        store.is_migrated = True
