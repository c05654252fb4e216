"""The gateway against real processes: `modelbench gateway` started as a
command in front of upstream server processes (tests/python/gateway/
faulty_upstream.py) that answer, fail with 500, answer 429 with
Retry-After, hang, drop the connection mid-stream, or die.

What it shows: no non-streamed request that could be retried fails; a
stream that breaks off ends with an error event; the breaker opens and
closes; fallbacks serve and say so; a client that goes away cancels the
upstream request; bad configuration is reported by name."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Upstream:
    """One faulty_upstream process."""

    def __init__(self, mode: str = "ok", text: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.python.gateway.faulty_upstream",
                "--port",
                str(self.port),
                "--mode",
                mode,
                *(["--text", text] if text is not None else []),
            ],
            cwd=ROOT,
        )
        wait_until(
            lambda: httpx.get(self.url + "/stats", timeout=1).status_code == 200,
            30,
            f"upstream on {self.port}",
        )

    @property
    def base(self) -> str:
        return self.url + "/v1"

    def mode(self, mode: str) -> None:
        httpx.post(self.url + "/mode", json={"mode": mode}, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(self.url + "/stats", timeout=5).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


class Gateway:
    """A `modelbench gateway` process."""

    def __init__(self, args: list[str], config: str | None = None, tmp: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "modelbench",
            "gateway",
            "--port",
            str(self.port),
            "--log-format",
            "text",
            *args,
        ]
        if config is not None:
            assert tmp is not None
            path = tmp / f"gateway-{self.port}.toml"
            path.write_text(config)
            command += ["--config", str(path)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=dict(os.environ), stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(
                lambda: httpx.get(self.url + "/health", timeout=1).status_code == 200,
                60,
                "the gateway",
            )
        except AssertionError:
            self.process.kill()
            raise AssertionError(
                f"the gateway did not start: {self.process.stderr.read()}"
            ) from None

    def chat(
        self, model: str, stream: bool = False, timeout: float = 30, **extra: object
    ) -> httpx.Response:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8,
            "stream": stream,
            **extra,
        }
        return httpx.post(self.url + "/v1/chat/completions", json=body, timeout=timeout)

    def upstreams(self) -> dict[str, dict]:
        data = httpx.get(self.url + "/v1/upstreams", timeout=5).json()["data"]
        return {pool["name"]: pool for pool in data}

    def event_loop_tasks(self) -> float:
        for line in httpx.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith("modelbench:event_loop_tasks "):
                return float(line.split()[1])
        raise AssertionError("no modelbench:event_loop_tasks on /metrics")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


# Small breaker and timeout numbers so the tests run in seconds.
FAST = """
[gateway]
first_byte_timeout_s = 1.0
health_interval_s = 0.5
health_timeout_s = 0.5
unhealthy_after = 1
breaker_failure_threshold = 2
breaker_cooldown_s = 1.0
backoff_base_s = 0.01
max_attempts = 4
"""


@pytest.fixture
def upstreams() -> Iterator[Callable[..., Upstream]]:
    started: list[Upstream] = []

    def start(mode: str = "ok") -> Upstream:
        upstream = Upstream(mode)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.stop()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(*args: str, config: str | None = FAST) -> Gateway:
        gateway = Gateway(list(args), config, tmp_path)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def served_by(response: httpx.Response) -> str:
    return response.headers["x-modelbench-served-by"]


def test_replicas_share_the_load_round_robin(upstreams, gateways) -> None:
    a, b = upstreams(), upstreams()
    gw = gateways("--upstream", f"m={a.base}", "--upstream", f"m={b.base}")
    answers = [gw.chat("m") for _ in range(10)]
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    texts = [r.json()["choices"][0]["message"]["content"] for r in answers]
    assert texts.count(f"answered by {a.port}") == 5 and texts.count(f"answered by {b.port}") == 5
    assert answers[0].json()["model"] == "m"
    assert {served_by(r) for r in answers} == {f"m@{a.base}", f"m@{b.base}"}
    models = httpx.get(gw.url + "/v1/models", timeout=5).json()["data"]
    assert [m["id"] for m in models] == ["m"] and models[0]["owned_by"] == "upstream"


def test_failing_replica_is_retried_elsewhere_and_its_breaker_opens_then_closes(
    upstreams, gateways
) -> None:
    good, bad = upstreams(), upstreams("error500")
    gw = gateways("--upstream", f"m={bad.base}", "--upstream", f"m={good.base}")
    answers = [gw.chat("m") for _ in range(12)]
    assert [r.status_code for r in answers] == [200] * 12  # none failed: each was retried
    assert all(f"answered by {good.port}" in r.text for r in answers)
    bad_card = gw.upstreams()["m"]["replicas"][0]
    assert bad_card["breaker"]["state"] == "open"
    assert bad.stats()["requests"] == 2  # the breaker stopped sending it more
    metrics = httpx.get(gw.url + "/metrics", timeout=5).text
    assert (
        f'modelbench:upstream_breaker_state{{model_name="m",upstream="{bad.base}"}} 2.0' in metrics
    )
    bad.mode("ok")
    time.sleep(1.2)  # the cooldown: the next request is the half-open probe
    wait_until(lambda: gw.upstreams()["m"]["replicas"][0]["healthy"], 10, "the health check")
    for _ in range(4):
        assert gw.chat("m").status_code == 200
    assert gw.upstreams()["m"]["replicas"][0]["breaker"]["state"] == "closed"
    assert bad.stats()["requests"] > 2


def test_a_hanging_replica_times_out_and_the_request_is_retried(upstreams, gateways) -> None:
    good, hung = upstreams(), upstreams()
    gw = gateways("--upstream", f"m={hung.base}", "--upstream", f"m={good.base}")
    hung.mode("hang")
    started = time.monotonic()
    answers = [gw.chat("m") for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    assert (
        time.monotonic() - started < 10
    )  # first_byte_timeout_s is 1 s, and once open it is skipped
    hung_card = gw.upstreams()["m"]["replicas"][0]
    assert hung.stats()["requests"] >= 1  # it was tried, timed out, and left alone since
    assert not hung_card["available"]  # its health checks hang too, or its breaker opened


def test_every_replica_busy_is_a_429_with_retry_after_and_a_fallback_serves_instead(
    upstreams, gateways
) -> None:
    busy, other = upstreams("busy"), upstreams()
    gw = gateways("--upstream", f"m={busy.base}", "--upstream", f"alt={other.base}")
    r = gw.chat("m")
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"
    assert (
        r.json()["error"]["type"] == "rate_limit_error"
        and "m#0: http_429" in r.json()["error"]["message"]
    )

    fb = gateways(
        "--upstream", f"m={busy.base}", "--upstream", f"alt={other.base}", "--fallback", "m=alt"
    )
    r = fb.chat("m")
    assert r.status_code == 200, r.text
    assert served_by(r) == f"alt@{other.base}" and r.json()["model"] == "alt"


def test_a_stream_that_breaks_off_ends_with_an_error_event_and_is_not_replayed(
    upstreams, gateways
) -> None:
    dropping = upstreams("drop")
    gw = gateways("--upstream", f"m={dropping.base}")
    r = gw.chat("m", stream=True)
    assert r.status_code == 200
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "upstream_stream_broken"
    assert len(events) == 3  # two upstream events, then the error: nothing replayed
    assert dropping.stats()["requests"] == 1


def test_a_non_streamed_request_survives_a_dropped_connection_and_a_dead_replica(
    upstreams, gateways
) -> None:
    good, dropping, dying = upstreams(), upstreams("drop"), upstreams("die")
    gw = gateways(
        "--upstream",
        f"m={dropping.base}",
        "--upstream",
        f"m={dying.base}",
        "--upstream",
        f"m={good.base}",
    )
    answers = [gw.chat("m") for _ in range(9)]
    assert [r.status_code for r in answers] == [200] * 9
    assert dying.process.wait(5) != 0  # it died on its first request
    wait_until(lambda: not gw.upstreams()["m"]["replicas"][1]["healthy"], 10, "the dead replica")
    assert httpx.get(gw.url + "/ready", timeout=5).status_code == 200  # one replica is enough


def test_ready_names_the_model_with_no_healthy_upstream(upstreams, gateways) -> None:
    ok = upstreams()
    dead_port = free_port()
    gw = gateways(
        "--upstream", f"m={ok.base}", "--upstream", f"gone=http://127.0.0.1:{dead_port}/v1"
    )
    wait_until(lambda: httpx.get(gw.url + "/ready", timeout=5).status_code == 503, 10, "/ready")
    ready = httpx.get(gw.url + "/ready", timeout=5).json()
    assert ready["upstreams"] == {"m": True, "gone": False}
    assert "gone" in ready["errors"]
    r = gw.chat("gone")
    assert r.status_code in (502, 503) and "gone" in r.json()["error"]["message"]


def test_a_client_that_goes_away_cancels_the_upstream_request(upstreams, gateways) -> None:
    slow = upstreams("slow")
    gw = gateways("--upstream", f"m={slow.base}")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()  # kept: closing the iterator would close the connection
        assert next(line for line in lines if line.startswith("data: "))
        assert slow.stats()["open"] == 1  # streaming, 10 s to go
    # The client has gone: the gateway closes its upstream request.
    wait_until(lambda: slow.stats()["open"] == 0, 5, "the upstream to see the request go")
    wait_until(lambda: gw.upstreams()["m"]["replicas"][0]["outstanding"] == 0, 5, "outstanding")


def test_nothing_leaks_over_many_requests(upstreams, gateways) -> None:
    a, b = upstreams(), upstreams()
    gw = gateways("--upstream", f"m={a.base}", "--upstream", f"m={b.base}")
    for _ in range(20):
        gw.chat("m")
        gw.chat("m", stream=True)
    before, tasks_before = gw.open_fds(), gw.event_loop_tasks()
    for _ in range(100):
        assert gw.chat("m").status_code == 200
        assert gw.chat("m", stream=True).status_code == 200
    assert gw.open_fds() <= before + 4  # keep-alive connections, not one per request
    assert gw.event_loop_tasks() <= tasks_before + 2  # no task left behind per request
    assert all(r["outstanding"] == 0 for r in gw.upstreams()["m"]["replicas"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--upstream", "m=ftp://x"], "url 'ftp://x' is not an http(s) base URL"),
        (["--upstream", "m"], "--upstream takes NAME=VALUE, got 'm'"),
        (
            ["--upstream", "m=http://127.0.0.1:1/v1", "--fallback", "m=nope"],
            "names 'nope', which is not served",
        ),
        (
            ["--upstream", "m=http://127.0.0.1:1/v1", "--policy", "x=round-robin"],
            "policy names 'x'",
        ),
        (["--upstream", "m=http://127.0.0.1:1/v1", "--policy", "m=fastest"], "m=fastest"),
        ([], "give at least one --upstream NAME=URL or a --config"),
    ],
)
def test_bad_configuration_is_refused_naming_it(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelbench", "gateway", "--port", str(free_port()), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_every_request_is_recorded_with_its_upstream_and_attempts(upstreams, gateways) -> None:
    good, bad = upstreams(), upstreams("error500")
    gw = gateways("--upstream", f"m={bad.base}", "--upstream", f"m={good.base}")
    r = gw.chat("m")
    assert r.status_code == 200
    request_id = r.headers["x-request-id"]

    def recorded() -> bool:
        rows = httpx.get(gw.url + "/v1/requests", timeout=5).json()["data"]
        return any(row.get("http_request_id") == request_id for row in rows)

    wait_until(recorded, 10, "the record")
    rows = httpx.get(gw.url + "/v1/requests", timeout=5).json()["data"]
    row = next(row for row in rows if row.get("http_request_id") == request_id)
    assert row["upstream"] == good.base and row["model_name"] == "m"
    assert [a["outcome"] for a in row["attempts"]] == ["http_500", "ok"]
    assert (
        row["attempts"][0]["breaker"] == "closed"
        and row["output_text"] == f"answered by {good.port}"
    )


def test_an_upstream_gets_the_model_name_it_knows(upstreams, gateways) -> None:
    """`--upstream NAME=URL#MODEL`: clients send NAME, the upstream gets MODEL
    (streamed events come as the upstream wrote them)."""
    up = upstreams()
    gw = gateways("--upstream", f"m={up.base}#their-name")
    r = gw.chat("m", stream=True)
    first = json.loads(next(line[6:] for line in r.text.splitlines() if line.startswith("data: ")))
    assert first["model"] == "their-name"
    assert gw.chat("m").json()["model"] == "m"  # a whole answer names what the client asked
    assert gw.upstreams()["m"]["replicas"][0]["model"] == "their-name"
