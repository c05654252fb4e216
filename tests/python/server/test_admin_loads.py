"""Admin loads in the background, against a real server: serving and /ready
go on while the default model loads (one load at a time, no unloading a
version mid-load), /ready turns 503 when a name the server started with has
no version left, and --allow-open-admin: on loopback only, for local
clients only, and ``modelbench serve`` refuses it on any other address."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
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

ENGINE = {"max_model_len": MAX_MODEL_LEN, "kv_cache_memory": KV_CACHE_MEMORY}
COMPLETION = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}


def open_admin_settings(tiny_llama_path: Path, tmp_path: Path, *model_dirs: Path) -> Settings:
    """No keys, admin routes opened on loopback (as --allow-open-admin does);
    loads from the tiny model's folder and ``model_dirs``."""
    return Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        port=free_port(),
        keys_file=tmp_path / "keys.json",
        allow_open_admin=True,
        model_dirs=[tiny_llama_path.parent, *model_dirs],
        **ENGINE,
    )


@pytest.fixture
def open_admin(tiny_llama_path: Path, tmp_path: Path) -> Iterator[RunningServer]:
    with run_server(open_admin_settings(tiny_llama_path, tmp_path), tiny_llama_path) as running:
        yield running


def test_serving_and_ready_go_on_while_a_model_loads(open_admin: RunningServer) -> None:
    """The default model (6 s to load here) loads in a worker thread while the
    tiny model serves and /ready stays 200."""
    with httpx.Client(base_url=open_admin.base_url, timeout=60) as http:
        r = http.post("/v1/admin/models", json={"name": "smollm2", **ENGINE})
        assert r.status_code == 202, r.text
        url = r.json()["status_url"]
        latencies, readies, states = [], set(), set()
        second = http.post("/v1/admin/models", json={"name": "other", **ENGINE})
        assert second.status_code == 409 and second.json()["error"]["code"] == "load_in_progress"
        assert "smollm2:1" in second.json()["error"]["message"]
        early = http.delete("/v1/admin/models/smollm2:1")
        assert early.status_code == 409 and early.json()["error"]["code"] == "model_loading"
        while (state := http.get(url).json()["state"]) == "loading":
            states.add(state)
            readies.add(http.get("/ready").status_code)
            started = time.perf_counter()
            r = http.post("/v1/completions", json=COMPLETION)
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
            listed = {m["id"]: m["state"] for m in http.get("/v1/models").json()["data"]}
            assert listed.get("smollm2:1") in ("loading", "ready")
        assert state == "ready", http.get(url).text
        assert readies == {200} and len(latencies) >= 5, (readies, latencies)
        # served throughout: no request waited on the load (which takes 6-15 s
        # here); the worst one met the loader's thread holding the GIL (0.9 s)
        assert sorted(latencies)[len(latencies) // 2] < 0.25 and max(latencies) < 5.0, latencies
        r = http.post("/v1/completions", json={**COMPLETION, "model": "smollm2"})
        assert r.status_code == 200 and r.json()["model"] == "smollm2:1"
        assert http.delete("/v1/admin/models/smollm2:1").status_code == 200


def test_ready_is_503_while_a_started_name_has_no_version(
    open_admin: RunningServer, tiny_llama_path: Path
) -> None:
    with httpx.Client(base_url=open_admin.base_url, timeout=60) as http:
        assert http.get("/ready").status_code == 200
        assert http.delete(f"/v1/admin/models/{MODEL_NAME}:1").status_code == 200
        r = http.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "unavailable", r.text
        assert MODEL_NAME in r.json()["errors"] and "POST /v1/admin/models" in r.text
        assert http.post("/v1/completions", json=COMPLETION).status_code == 404
        # another name loaded meanwhile does not stand in for it
        r = http.post("/v1/admin/models", json={"name": "other", "path": "llama", **ENGINE})
        assert r.status_code == 202, r.text
        assert http.get("/ready").status_code == 503
        body = {"name": MODEL_NAME, "version": "2", "path": str(tiny_llama_path), **ENGINE}
        deadline = time.monotonic() + 60
        while (r := http.post("/v1/admin/models", json=body)).status_code == 409:
            assert r.json()["error"]["code"] == "load_in_progress" and time.monotonic() < deadline
            time.sleep(0.05)
        assert r.status_code == 202, r.text
        while http.get(r.json()["status_url"]).json()["state"] == "loading":
            time.sleep(0.05)
        ready = http.get("/ready")
        assert ready.status_code == 200, ready.text
        assert http.post("/v1/completions", json=COMPLETION).json()["model"] == f"{MODEL_NAME}:2"


def test_open_admin_serves_local_clients_only(open_admin: RunningServer) -> None:
    async def ask(client: tuple[str, int]) -> httpx.Response:
        transport = httpx.ASGITransport(app=open_admin.app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as http:
            return await http.get(f"/v1/admin/models/{MODEL_NAME}:1")

    remote = asyncio.run(ask(("10.0.0.7", 40000)))
    assert remote.status_code == 403 and remote.json()["error"]["code"] == "admin_disabled"
    local = asyncio.run(ask(("127.0.0.1", 40000)))
    assert local.status_code == 200 and local.json()["state"] == "ready"


def modelbench(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelbench", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--host", "0.0.0.0", "--allow-open-admin"], {}),
        (["--host", "::"], {"MODELBENCH_ALLOW_OPEN_ADMIN": "true"}),
    ],
)
def test_serve_refuses_open_admin_off_loopback(args: list[str], env: dict[str, str]) -> None:
    port = free_port()
    process = modelbench("serve", "--port", str(port), *args, env=env)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "refusing to start" in err and "--allow-open-admin" in err, err
    assert args[1] in err and "modelbench keys create --name NAME --admin" in err


def test_serve_opens_admin_on_loopback(tiny_llama_path: Path) -> None:
    port = free_port()
    process = modelbench(
        "serve",
        "--model",
        str(tiny_llama_path),
        "--served-model-name",
        MODEL_NAME,
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--kv-cache-memory",
        str(KV_CACHE_MEMORY),
        "--allow-open-admin",
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        r = httpx.get(f"http://127.0.0.1:{port}/v1/admin/models/{MODEL_NAME}:1")
        assert r.status_code == 200 and r.json()["state"] == "ready", r.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_an_embedding_model_loads_through_the_admin_route(
    tiny_llama_path: Path, tmp_path: Path
) -> None:
    """A BERT encoder's version serves "embed" alone: loaded without tasks it
    gets ["embed"], with other tasks it is refused (400) before any load."""
    from modelbench.models.encoder_loader import default_embedding_model_path

    minilm = default_embedding_model_path()
    settings = open_admin_settings(tiny_llama_path, tmp_path, minilm.parent)
    with (
        run_server(settings, tiny_llama_path) as running,
        httpx.Client(base_url=running.base_url, timeout=60) as http,
    ):
        wrong = http.post(
            "/v1/admin/models", json={"name": "minilm", "path": str(minilm), "tasks": ["generate"]}
        )
        assert wrong.status_code == 400, wrong.text
        assert "is an embedding model: its tasks can only be" in wrong.json()["error"]["message"]
        r = http.post("/v1/admin/models", json={"name": "minilm", "path": str(minilm)})
        assert r.status_code == 202, r.text
        while (state := http.get(r.json()["status_url"]).json()["state"]) == "loading":
            time.sleep(0.05)
        assert state == "ready", http.get(r.json()["status_url"]).text
        e = http.post("/v1/embeddings", json={"model": "minilm", "input": ["a cat", "a dog"]})
        assert e.status_code == 200, e.text
        vectors = [d["embedding"] for d in e.json()["data"]]
        assert len(vectors) == 2 and len(vectors[0]) == 384
        c = http.post("/v1/completions", json={**COMPLETION, "model": "minilm"})
        assert c.status_code == 400 and "embed" in c.text, c.text
        # A path relative to the model directories is the same model (its
        # kind is known once the path is resolved: refused the same way).
        body = {"name": "minilm", "version": "2", "path": minilm.name}
        wrong = http.post("/v1/admin/models", json={**body, "tasks": ["embed", "generate"]})
        assert wrong.status_code == 400, wrong.text
        message = wrong.json()["error"]["message"]
        assert message.startswith("model minilm:2 (") and "can only be" in message, message
        r = http.post("/v1/admin/models", json=body)
        assert r.status_code == 202, r.text
        while (state := http.get(r.json()["status_url"]).json()["state"]) == "loading":
            time.sleep(0.05)
        assert state == "ready", http.get(r.json()["status_url"]).text
        e = http.post("/v1/embeddings", json={"model": "minilm:2", "input": "a cat"})
        assert e.status_code == 200 and e.json()["data"][0]["embedding"] == vectors[0], e.text
