"""The cache through a real ``modelbench serve`` process (HTTP, keys, the
store): hit, miss and bypass headers, a hit streamed, hits recorded with the
request they came from, the admin clear, tenancy with keys, a revoked key,
and semantic mode refusing to start without its embedding model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelbench.server.keys import KeyStore

from ..tiny_models import build_tiny_model
from .served import MODEL, Served

GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama_gqa", tmp_path_factory.mktemp("cache") / "llama")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyStore, dict[str, str]]:
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.json")
    secrets = {}
    for name, options in {
        "a": {},
        "b": {},
        "sharer": {"share_cache": True},
        "admin": {"admin": True},
    }.items():
        key, secret = store.create(name, **options)
        secrets[name] = secret
        secrets[name + "_id"] = key.id
    return store, secrets


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory, keys) -> Iterator[Served]:
    store, _ = keys
    served = Served(
        model_path,
        tmp_path_factory.mktemp("serve"),
        ["--cache", "semantic", "--cache-embedding-model", MODEL, "--cache-threshold", "0.9"],
        store.path,
    )
    yield served
    served.stop()


def events(response: httpx.Response) -> list[dict]:
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_repeat_is_a_hit_recorded_with_its_source(server: Served, keys) -> None:
    _, k = keys
    body = {"prompt": "The quick brown fox", **GREEDY}
    miss = server.post("/v1/completions", body, k["a"])
    assert miss.status_code == 200, miss.text
    assert miss.headers["x-modelbench-cache"] == "miss"
    hit = server.post("/v1/completions", body, k["a"])
    assert hit.status_code == 200
    assert hit.headers["x-modelbench-cache"] == "hit-exact"
    assert hit.json()["choices"][0]["text"] == miss.json()["choices"][0]["text"]
    assert hit.json()["object"] == miss.json()["object"] == "text_completion"
    assert hit.json()["usage"]["completion_tokens"] == miss.json()["usage"]["completion_tokens"]
    missed = server.record(miss.headers["x-modelbench-record-id"])
    served = server.record(hit.headers["x-modelbench-record-id"])
    assert missed["cache_result"] == "miss" and missed["cache_source_id"] is None
    assert served["cache_result"] == "hit-exact"
    assert served["cache_source_id"] == missed["id"]
    assert served["status"] == "succeeded"
    assert served["output_text"] == miss.json()["choices"][0]["text"]
    assert served["api_key_id"] == k["a_id"]


def test_a_streamed_request_is_served_a_hit_as_a_stream(server: Served, keys) -> None:
    _, k = keys
    body = {"messages": [{"role": "user", "content": "Name three colors."}], **GREEDY}
    miss = server.post("/v1/chat/completions", body, k["a"])
    assert miss.headers["x-modelbench-cache"] == "miss"
    text = miss.json()["choices"][0]["message"]["content"]
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    hit = server.post("/v1/chat/completions", stream, k["a"])
    assert hit.headers["x-modelbench-cache"] == "hit-exact"
    assert hit.headers["content-type"].startswith("text/event-stream")
    chunks = events(hit)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == text
    assert chunks[-1]["usage"]["completion_tokens"] == miss.json()["usage"]["completion_tokens"]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == miss.json()["choices"][0]["finish_reason"]


def test_a_streamed_miss_is_kept_for_the_next_request(server: Served, keys) -> None:
    _, k = keys
    body = {"prompt": "Once upon a time", **GREEDY}
    miss = server.post("/v1/completions", {**body, "stream": True}, k["a"])
    assert miss.headers["x-modelbench-cache"] == "miss"
    text = "".join(c["choices"][0]["text"] for c in events(miss) if c["choices"])
    hit = server.post("/v1/completions", body, k["a"])
    assert hit.headers["x-modelbench-cache"] == "hit-exact"
    assert hit.json()["choices"][0]["text"] == text


def test_a_close_paraphrase_is_a_semantic_hit(server: Served, keys) -> None:
    _, k = keys
    first = server.post("/v1/completions", {"prompt": "Tell me about the sea.", **GREEDY}, k["a"])
    assert first.headers["x-modelbench-cache"] == "miss"
    later = server.post(
        "/v1/completions", {"prompt": "Tell me about the sea, please.", **GREEDY}, k["a"]
    )
    assert later.headers["x-modelbench-cache"] == "hit-semantic"
    assert later.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
    other = server.post(
        "/v1/completions", {"prompt": "Tell me about the 2 seas.", **GREEDY}, k["a"]
    )
    assert other.headers["x-modelbench-cache"] == "miss"  # a number: the guard refuses


def test_cache_control_and_sampling_bypass(server: Served, keys) -> None:
    _, k = keys
    body = {"prompt": "Bypass me", **GREEDY}
    kept_out = server.post("/v1/completions", body, k["a"], {"Cache-Control": "no-store"})
    assert kept_out.headers["x-modelbench-cache"] == "miss"
    assert server.post("/v1/completions", body, k["a"]).headers["x-modelbench-cache"] == "miss"
    skipped = server.post("/v1/completions", body, k["a"], {"Cache-Control": "no-cache"})
    assert skipped.headers["x-modelbench-cache"] == "bypass"
    sampled = {"prompt": "Bypass me", "temperature": 0.8, "max_tokens": 4}
    assert server.post("/v1/completions", sampled, k["a"]).headers["x-modelbench-cache"] == "bypass"
    seeded = {**sampled, "seed": 7}
    assert server.post("/v1/completions", seeded, k["a"]).headers["x-modelbench-cache"] == "miss"
    assert server.post("/v1/completions", seeded, k["a"]).headers["x-modelbench-cache"] == (
        "hit-exact"
    )
    logprobs = {**body, "logprobs": 2}
    assert server.post("/v1/completions", logprobs, k["a"]).headers["x-modelbench-cache"] == (
        "bypass"
    )


def test_tenants_do_not_share_unless_a_key_shares_and_a_revoked_key_stops_serving(
    server: Served, keys
) -> None:
    store, k = keys
    body = {"prompt": "A secret of tenant a", **GREEDY}
    assert server.post("/v1/completions", body, k["a"]).headers["x-modelbench-cache"] == "miss"
    assert server.post("/v1/completions", body, k["b"]).headers["x-modelbench-cache"] == "miss"
    shared = {"prompt": "Something everyone may reuse", **GREEDY}
    assert server.post("/v1/completions", shared, k["sharer"]).headers["x-modelbench-cache"] == (
        "miss"
    )
    assert server.post("/v1/completions", shared, k["b"]).headers["x-modelbench-cache"] == (
        "hit-exact"
    )
    store.revoke(k["sharer_id"])
    time.sleep(1.2)  # the server re-reads the keys file at most once a second
    assert server.post("/v1/completions", shared, k["b"]).headers["x-modelbench-cache"] == "miss"


def test_the_admin_clears_by_key_by_model_and_all(server: Served, keys) -> None:
    _, k = keys
    body = {"prompt": "Clear me", **GREEDY}
    server.post("/v1/completions", body, k["a"])
    server.post("/v1/completions", body, k["b"])
    url = server.url + "/v1/admin/cache"
    refused = httpx.delete(url, headers={"Authorization": f"Bearer {k['a']}"})
    assert refused.status_code == 403
    admin = {"Authorization": f"Bearer {k['admin']}"}
    cleared = httpx.delete(url, params={"key": k["b_id"]}, headers=admin)
    assert cleared.status_code == 200 and cleared.json()["removed"] >= 1
    assert server.post("/v1/completions", body, k["b"]).headers["x-modelbench-cache"] == "miss"
    assert server.post("/v1/completions", body, k["a"]).headers["x-modelbench-cache"] == (
        "hit-exact"
    )
    assert httpx.delete(url, params={"model": "nobody"}, headers=admin).json()["removed"] == 0
    assert httpx.delete(url, params={"model": MODEL}, headers=admin).json()["removed"] >= 2
    assert server.post("/v1/completions", body, k["a"]).headers["x-modelbench-cache"] == "miss"
    assert httpx.delete(url, headers=admin).json()["removed"] >= 1
    assert server.metric("modelbench:cache_entries") == 0


def test_metrics_count_every_result(server: Served, keys) -> None:
    _, k = keys
    body = {"prompt": "Count me", **GREEDY}
    server.post("/v1/completions", body, k["a"])
    server.post("/v1/completions", body, k["a"])
    for result in ("miss", "hit-exact", "bypass"):
        value = server.metric(f'modelbench:cache_queries_total{{result="{result}"}}')
        assert value is not None and value >= 1, result
    assert server.metric("modelbench:cache_lookup_seconds_count") >= 2
    assert server.metric("modelbench:cache_available") == 1


def test_semantic_mode_without_its_embedding_model_refuses_to_start(model_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelbench",
            "serve",
            "--model",
            str(model_path),
            "--served-model-name",
            MODEL,
            "--cache",
            "semantic",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode != 0
    assert "'all-MiniLM-L6-v2' (--cache-embedding-model)" in done.stderr
    assert "--cache exact" in done.stderr
