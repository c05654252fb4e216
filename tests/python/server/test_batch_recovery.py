"""Batches survive what happens to processes: a worker killed with SIGKILL
mid-batch (its jobs finish on another worker, PostgreSQL), and a server
killed and restarted mid-batch (the batch completes, SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, MODEL_NAME, free_port
from .test_batch import completion, wait_done

LEASE_S = "1.5"


def common_flags(model: Path, database_url: str) -> list[str]:
    return [
        "--model",
        str(model),
        "--served-model-name",
        MODEL_NAME,
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--kv-cache-memory",
        str(KV_CACHE_MEMORY),
        "--database-url",
        database_url,
    ]


def start_server(model: Path, database_url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "MODELBENCH_JOB_LEASE_S": LEASE_S, "MODELBENCH_WORKER_CONCURRENCY": "4"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelbench",
            "serve",
            "--port",
            str(port),
            *common_flags(model, database_url),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def sync_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def test_sigkill_of_a_worker_mid_batch(
    tiny_llama_path: Path, postgresql_url: str, tmp_path: Path, processes: list[subprocess.Popen]
) -> None:
    port = free_port()
    processes.append(server := start_server(tiny_llama_path, postgresql_url, port))
    log = tmp_path / "victim.log"
    with log.open("w") as out:
        victim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelbench",
                "worker",
                "--worker-id",
                "victim",
                "--lease-s",
                LEASE_S,
                "--concurrency",
                "8",
                *common_flags(tiny_llama_path, postgresql_url),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.append(victim)
    deadline = time.monotonic() + 120
    while "running batch jobs" not in log.read_text():  # wait until it is claiming
        assert victim.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    base = f"http://127.0.0.1:{port}"
    with (
        httpx.Client(base_url=base, timeout=30) as http,
        psycopg.connect(sync_url(postgresql_url), autocommit=True) as db,
    ):
        batch_id = http.post(
            "/v1/batch", json=[completion(i, max_tokens=150) for i in range(40)]
        ).json()["id"]
        deadline = time.monotonic() + 60
        while not db.execute(
            "SELECT count(*) FROM jobs WHERE starts_with(lease_owner, 'victim/') "
            "AND status = 'running'"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, f"the victim never claimed a job: {log.read_text()}"
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        batch = wait_done(http, batch_id, timeout_s=120)
        assert batch["request_counts"]["succeeded"] == 40, batch
        retried = db.execute(
            "SELECT count(*) FROM jobs WHERE batch_id = %s AND attempts > 1", (batch_id,)
        ).fetchone()[0]
        assert retried >= 1  # what the victim held ran again, on the server's worker
    assert server.poll() is None


def test_server_killed_and_restarted_mid_batch(
    tiny_llama_path: Path, database_url: str, processes: list[subprocess.Popen]
) -> None:
    url = database_url  # once on SQLite, once on PostgreSQL
    port = free_port()
    processes.append(first := start_server(tiny_llama_path, url, port))
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        batch_id = http.post(
            "/v1/batch", json=[completion(i, max_tokens=120) for i in range(30)]
        ).json()["id"]
        deadline = time.monotonic() + 60
        while http.get(f"/v1/batch/{batch_id}").json()["request_counts"]["succeeded"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    processes.append(start_server(tiny_llama_path, url, port))
    with httpx.Client(base_url=base, timeout=30) as http:
        batch = wait_done(http, batch_id, timeout_s=120)
        assert batch["request_counts"]["succeeded"] == 30, batch
        lines = http.get(f"/v1/batch/{batch_id}/results").text.splitlines()
        assert len(lines) == 30
