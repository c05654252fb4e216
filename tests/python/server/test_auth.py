"""API keys end to end: 401 without or with a bad key, 403 on admin routes
for a plain key, revocation through the CLI taking effect while the server
runs, probes open, per-key rate limits (429 with Retry-After, then
recovery), per-key text storage, batch jobs running for their owner, and the
keys command itself."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from modelbench.config import Settings
from modelbench.server.keys import KeyStore

from .conftest import (
    KV_CACHE_MEMORY,
    MAX_MODEL_LEN,
    MODEL_NAME,
    RunningServer,
    free_port,
    run_server,
)
from .test_batch import wait_done
from .test_records import record_of


class Keys:
    def __init__(self, path: Path) -> None:
        store = KeyStore(path)
        self.path = path
        self.admin_id, self.admin = self._make(store, "ops", admin=True)
        self.user_id, self.user = self._make(store, "app")
        self.rpm_id, self.rpm = self._make(store, "slow", rpm=30)
        self.tpm_id, self.tpm = self._make(store, "thrifty", tpm=40)
        self.quiet_id, self.quiet = self._make(store, "private", store_text=False)
        self.doomed_id, self.doomed = self._make(store, "doomed")

    @staticmethod
    def _make(store: KeyStore, name: str, **kwargs: object) -> tuple[str, str]:
        key, secret = store.create(name, **kwargs)  # type: ignore[arg-type]
        return key.id, secret


@pytest.fixture(scope="module")
def keyed(
    tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Keys]]:
    root = tmp_path_factory.mktemp("auth")
    keys = Keys(root / "keys.json")
    settings = Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        port=free_port(),
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY,
        keys_file=keys.path,
        database_url=f"sqlite:///{root / 'store.db'}",
        max_body_bytes=4096,
        # every test here calls from 127.0.0.1, many with wrong keys on purpose;
        # the slowing down of failures is test_security.py's
        auth_max_failures=1000,
    )
    with run_server(settings, tiny_llama_path) as running:
        yield running, keys


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


BODY = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}


def test_keys_are_required(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for headers in ({}, bearer("mb-wrong"), {"Authorization": "Basic abc"}):
            r = http.post("/v1/completions", json=BODY, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["type"] == "authentication_error"
        assert "Bearer" in http.post("/v1/completions", json=BODY).json()["error"]["message"]
        for path in ("/v1/models", "/v1/requests", "/v1/batch/batch_x"):
            assert http.get(path).status_code == 401
        assert (
            http.post("/v1/completions", json=BODY, headers={"X-API-Key": keys.user}).status_code
            == 200
        )
        for path in ("/health", "/ready", "/metrics"):  # probes and scrapes stay open
            assert http.get(path).status_code == 200
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=keys.user, max_retries=0)
    assert (
        client.completions.create(
            model=MODEL_NAME, prompt="hi", max_tokens=2
        ).usage.completion_tokens
        <= 2
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{server.base_url}/v1", api_key="mb-nope", max_retries=0
        ).models.list()


def test_admin_routes_need_an_admin_key(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        r = http.delete("/v1/admin/models/nope:1", headers=bearer(keys.user))
        assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
        assert http.delete("/v1/admin/models/nope:1").status_code == 401
        assert http.delete("/v1/admin/models/nope:1", headers=bearer(keys.admin)).status_code == 404


def test_revoking_through_the_cli_takes_effect_at_once(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    url = server.base_url + "/v1/models"
    assert httpx.get(url, headers=bearer(keys.doomed)).status_code == 200
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelbench",
            "keys",
            "revoke",
            keys.doomed_id,
            "--keys-file",
            str(keys.path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and keys.doomed_id in out.stdout
    deadline = time.monotonic() + 10
    while httpx.get(url, headers=bearer(keys.doomed)).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)
    assert httpx.get(url, headers=bearer(keys.user)).status_code == 200


def test_requests_per_minute(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    with httpx.Client(base_url=server.base_url, timeout=30, headers=bearer(keys.rpm)) as http:
        statuses = [http.get("/v1/models").status_code for _ in range(31)]
        assert statuses[:30] == [200] * 30 and statuses[30] == 429
        refused = http.get("/v1/models")
        assert (
            refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        )
        retry_after = int(refused.headers["retry-after"])
        assert (
            1 <= retry_after <= 2 and "30 requests per minute" in refused.json()["error"]["message"]
        )
        assert (
            httpx.get(server.base_url + "/v1/models", headers=bearer(keys.user)).status_code == 200
        )
        time.sleep(retry_after + 0.1)
        assert http.get("/v1/models").status_code == 200  # refilled


def test_tokens_per_minute(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    body = {**BODY, "max_tokens": 30, "ignore_eos": True}
    with httpx.Client(base_url=server.base_url, timeout=30, headers=bearer(keys.tpm)) as http:
        assert http.post("/v1/completions", json=body).status_code == 200  # ~32 of 40 tokens used
        assert (
            http.post("/v1/completions", json=body).status_code == 200
        )  # still some left: in debt now
        time.sleep(0.2)  # the charge lands when the response has ended
        r = http.post("/v1/completions", json=body)
        assert r.status_code == 429 and "tokens per minute" in r.json()["error"]["message"]
        assert int(r.headers["retry-after"]) >= 1


def test_a_key_can_keep_its_text_out_of_the_log(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    r = httpx.post(
        server.base_url + "/v1/completions", json=BODY, headers=bearer(keys.quiet), timeout=30
    )
    rec = record_of(server, r, bearer(keys.quiet))  # type: ignore[arg-type]
    assert (
        rec["api_key_id"] == keys.quiet_id and rec["prompt"] is None and rec["output_text"] is None
    )
    r = httpx.post(
        server.base_url + "/v1/completions", json=BODY, headers=bearer(keys.user), timeout=30
    )
    assert record_of(server, r, bearer(keys.admin))["prompt"] == "hi"  # type: ignore[arg-type]
    # A plain key sees its own requests only; an admin key sees everyone's.
    mine = httpx.get(server.base_url + "/v1/requests", headers=bearer(keys.quiet)).json()["data"]
    assert mine and {row["api_key_id"] for row in mine} == {keys.quiet_id}
    other = r.headers["x-modelbench-record-id"]
    assert (
        httpx.get(f"{server.base_url}/v1/requests/{other}", headers=bearer(keys.quiet)).status_code
        == 404
    )
    assert (
        httpx.get(
            server.base_url + "/v1/requests",
            params={"api_key_id": keys.user_id},
            headers=bearer(keys.quiet),
        ).status_code
        == 403
    )


def test_batch_jobs_run_for_their_owner(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    with httpx.Client(base_url=server.base_url, timeout=30, headers=bearer(keys.user)) as http:
        created = http.post("/v1/batch", json=[{"url": "/v1/completions", "body": BODY}] * 2).json()
        assert wait_done(http, created["id"])["request_counts"]["succeeded"] == 2
        server.app.state.store.writer.flush()
        time.sleep(0.2)
        server.app.state.store.writer.flush()
        rows = http.get("/v1/requests", params={"batch_id": created["id"]}).json()["data"]
        assert len(rows) == 2 and {r["api_key_id"] for r in rows} == {keys.user_id}
        # Another plain key does not see the batch; an admin key does.
        assert http.get(f"/v1/batch/{created['id']}", headers=bearer(keys.quiet)).status_code == 404
        assert http.get(f"/v1/batch/{created['id']}", headers=bearer(keys.admin)).status_code == 200

        # Listed to its owner and an admin, not to another plain key, which may
        # not page from it either.
        def ids(key: str) -> list[str]:
            return [b["id"] for b in http.get("/v1/batch", headers=bearer(key)).json()["data"]]

        assert created["id"] in ids(keys.user) and created["id"] in ids(keys.admin)
        assert created["id"] not in ids(keys.quiet)
        r = http.get("/v1/batch", params={"after": created["id"]}, headers=bearer(keys.quiet))
        assert r.status_code == 400 and r.json()["error"]["param"] == "after"


def test_body_size_limit(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    big = {**BODY, "prompt": "x" * 5000}
    with httpx.Client(base_url=server.base_url, timeout=30, headers=bearer(keys.user)) as http:
        r = http.post("/v1/completions", json=big)
        assert r.status_code == 413 and "MODELBENCH_MAX_BODY_BYTES" in r.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
            data = json.dumps(big).encode()
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]

        r = http.post(
            "/v1/completions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413


def test_keys_command(tmp_path: Path) -> None:
    path = tmp_path / "k" / "keys.json"

    def keys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "modelbench", "keys", *args, "--keys-file", str(path)],
            capture_output=True,
            text=True,
        )

    created = keys("create", "--name", "ci", "--admin", "--rpm", "10")
    assert created.returncode == 0, created.stderr
    secret = next(
        line.split(": ", 1)[1] for line in created.stdout.splitlines() if line.startswith("key: ")
    )
    assert secret.startswith("mb-") and len(secret) > 40
    stored = path.read_text()
    assert secret not in stored and json.loads(stored)["keys"][0]["admin"] is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key_id = json.loads(stored)["keys"][0]["id"]
    listed = keys("list")
    assert key_id in listed.stdout and secret not in listed.stdout and "10" in listed.stdout
    assert keys("revoke", key_id).returncode == 0
    assert json.loads(path.read_text())["keys"][0]["revoked_at"] is not None
    bad = keys("revoke", "key_nope")
    assert bad.returncode != 0 and "no key 'key_nope'" in bad.stderr
    assert keys("create", "--name", "x", "--rpm", "0").returncode != 0


def test_an_open_server_binds_to_loopback_only(tiny_llama_path: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelbench",
            "serve",
            "--model",
            str(tiny_llama_path),
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MODELBENCH_KEYS_FILE": str(tmp_path / "none.json")},
    )
    assert out.returncode != 0 and "refusing to serve on 0.0.0.0 with no API key" in out.stderr


def test_metrics_can_require_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from modelbench.server import create_app

    store = KeyStore(tmp_path / "keys.json")
    _, secret = store.create("scraper")
    monkeypatch.setenv(
        "MODELBENCH_METRICS_REQUIRE_KEY", "true"
    )  # the variable, as an operator sets it
    settings = Settings(keys_file=store.path, database_url=f"sqlite:///{tmp_path / 'store.db'}")
    assert settings.metrics_require_key is True
    # No lifespan: /metrics and the probes need no model loaded.
    http = TestClient(create_app(settings))
    r = http.get("/metrics")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert http.get("/metrics", headers=bearer("mb-wrong")).status_code == 401
    r = http.get("/metrics", headers=bearer(secret))
    assert r.status_code == 200 and "modelbench:" in r.text
    assert http.get("/metrics", headers={"X-API-Key": secret}).status_code == 200
    assert http.get("/health").status_code == 200  # the probes stay open
    monkeypatch.delenv("MODELBENCH_METRICS_REQUIRE_KEY")
    assert (
        TestClient(create_app(Settings(keys_file=store.path, database_url=settings.database_url)))
        .get("/metrics")
        .status_code
        == 200
    )  # by default scrapes need no key


def test_bench_takes_its_key_from_the_environment_and_says_which_is_missing(
    keyed: tuple[RunningServer, Keys], tiny_llama_path: Path
) -> None:
    import os
    import subprocess
    import sys

    server, keys = keyed
    command = [
        sys.executable,
        "-m",
        "modelbench",
        "bench",
        "--backend",
        "openai",
        "--base-url",
        server.base_url,
        "--model",
        MODEL_NAME,
        "--tokenizer",
        str(tiny_llama_path),
        "--dataset",
        "random",
        "--num-prompts",
        "2",
        "--random-input-len",
        "8",
        "--random-output-len",
        "2",
        "--no-progress",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("MODELBENCH_API_KEY", "OPENAI_API_KEY")}
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "HTTP 401" in refused.stderr and "MODELBENCH_API_KEY" in refused.stderr
    served = subprocess.run(
        command,
        env={**env, "OPENAI_API_KEY": keys.user},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert served.returncode == 0, served.stderr
    assert (
        "Successful requests:" in served.stdout
        and "Failed requests:                         0" in served.stdout
    )
