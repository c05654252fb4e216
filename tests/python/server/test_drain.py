"""SIGTERM drains a real ``modelbench serve`` process: new requests get 503
while the stream in flight runs to [DONE], then the process exits 0. Its
stderr is the JSON log, one object per line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .. import serve_process
from .conftest import MODEL_NAME, free_port, serve_args

DRAIN_TIMEOUT_S = 60
MAX_TOKENS = 240  # nearly the whole context: each stream runs a while


class Served:
    def __init__(self, proc: subprocess.Popen, base_url: str, log_path: Path) -> None:
        self.proc, self.base_url, self.log_path = proc, base_url, log_path

    def log(self) -> list[dict]:
        lines = [line for line in self.log_path.read_text().splitlines() if line.strip()]
        return [json.loads(line) for line in lines]  # every line is one JSON object


@pytest.fixture
def served(
    tiny_llama_path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Served]:
    drain_timeout_s = getattr(request, "param", DRAIN_TIMEOUT_S)
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MODELBENCH_RUN_WORKER": "false"}
    env.pop("MODELBENCH_LOG_FORMAT", None)  # the default: JSON
    proc = serve_process.start(
        serve_args(
            tiny_llama_path, port, "--drain-timeout", str(drain_timeout_s), "--max-num-seqs", "1"
        ),
        env,
        log_path,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        serve_process.wait_ready(proc, base_url, log_path)
        yield Served(proc, base_url, log_path)
    finally:
        serve_process.stop(proc, grace_s=0)


def in_engine(url: str) -> float:
    """Requests running or waiting in the engine, from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("modelbench:num_requests_running{", "modelbench:num_requests_waiting{"))
    )


class Streams:
    """Long streamed completions in threads, each near the whole context. The
    server runs one sequence at a time (--max-num-seqs 1), so when the first
    stream has started the others wait behind it: they are in flight when the
    signal lands however fast the model is (the tiny one runs 240 tokens in a
    few ms)."""

    def __init__(self, url: str, num_streams: int = 8) -> None:
        body = {
            "model": MODEL_NAME,
            "prompt": "hello",
            "max_tokens": MAX_TOKENS,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": True,
        }
        self.results: list[list[str]] = [[] for _ in range(num_streams)]
        self.done_at = [0.0] * num_streams
        started = [threading.Event() for _ in range(num_streams)]

        def stream(i: int) -> None:
            try:
                with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as r:
                    for line in r.iter_lines():
                        if line:
                            self.results[i].append(line)
                            started[i].set()
            except httpx.TransportError:
                pass  # cut off by a shutdown that did not wait
            self.done_at[i] = time.monotonic()

        self.threads = [threading.Thread(target=stream, args=(i,)) for i in range(num_streams)]
        for thread in self.threads:
            thread.start()
        assert started[0].wait(60), "the first stream never started"
        # Every request admitted (running or waiting in the engine) before
        # the caller sends a signal.
        deadline = time.monotonic() + 60
        while in_engine(url) + sum(1 for t in self.done_at if t) < num_streams:
            assert time.monotonic() < deadline, "the streams never all reached the engine"
            time.sleep(0.005)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(60)


def test_sigterm_drains_then_exits_zero(served: Served) -> None:
    url = served.base_url
    streams = Streams(url)
    num_streams, results, done_at = len(streams.threads), streams.results, streams.done_at
    body = {"model": MODEL_NAME, "prompt": "hello", "max_tokens": 8}

    served.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while (ready := httpx.get(f"{url}/ready")).status_code != 503:
        assert time.monotonic() < deadline, "/ready never turned 503"
        time.sleep(0.01)
    assert ready.json()["status"] == "draining"
    refused = httpx.post(f"{url}/v1/completions", json=body, headers={"X-Request-ID": "late-1"})
    refused_at = time.monotonic()
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit() and refused.headers["x-request-id"] == "late-1"
    error = refused.json()["error"]
    assert error["code"] == "server_draining" and error["type"] == "service_unavailable"
    assert "shutting down" in error["message"]
    assert httpx.get(f"{url}/health").status_code == 200
    assert b"modelbench:num_requests_running" in httpx.get(f"{url}/metrics").content

    streams.join()
    for lines in results:
        assert lines[-1] == "data: [DONE]"
        assert (
            sum(1 for line in lines if line.startswith("data: {")) == MAX_TOKENS
        )  # one token each
        assert json.loads(lines[-2][len("data: ") :])["choices"][0]["finish_reason"] == "length"
    # At least one stream was still running when the late request was refused.
    assert max(done_at) > refused_at
    assert served.proc.wait(timeout=30) == 0

    log = served.log()
    access = [e for e in log if e["logger"] == "modelbench.access"]
    assert (
        sum(1 for e in access if e["route"] == "/v1/completions" and e["status"] == 200)
        == num_streams
    )
    (late,) = [e for e in access if e.get("request_id") == "late-1"]
    assert late["status"] == 503 and late["route"] == "/v1/completions"
    assert any("draining" in e["message"] for e in log if e["logger"] == "modelbench.server")
    assert any(e["message"].startswith("drained") for e in log)
    assert not any(e["logger"] == "uvicorn.access" for e in log)


@pytest.mark.parametrize("served", [0], indirect=True)  # drain timeout 0 s
def test_drain_timeout_cuts_off_and_still_exits_zero(served: Served) -> None:
    streams = Streams(served.base_url)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0
    streams.join()
    warnings = [e for e in served.log() if e["message"].startswith("drain timeout")]
    assert warnings and warnings[0]["level"] == "warning"


def test_second_signal_exits_at_once(served: Served) -> None:
    streams = Streams(served.base_url)
    served.proc.send_signal(signal.SIGTERM)
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(timeout=15) == 0
    streams.join()
    assert not any(e["message"].startswith("drained") for e in served.log())
