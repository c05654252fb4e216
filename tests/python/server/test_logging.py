"""The access log: one JSON line per request, written when the response ends,
with the request id the client sent (or one made for it, and returned)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from modelbench.config import Settings
from modelbench.server.log import JsonFormatter, log_config

from .conftest import MODEL_NAME, RunningServer


class Lines(logging.Handler):
    """What a log shipper would read: formatted lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def entries(self, **match: object) -> list[dict]:
        parsed = [json.loads(line) for line in self.lines]
        return [e for e in parsed if all(e.get(k) == v for k, v in match.items())]

    def wait_for(self, count: int = 1, **match: object) -> list[dict]:
        """The access line is written after the last byte is sent."""
        deadline = time.monotonic() + 10
        while len(found := self.entries(**match)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return found


@pytest.fixture
def access_log() -> Iterator[Lines]:
    logger = logging.getLogger("modelbench.access")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_one_json_line_per_request(server: RunningServer, access_log: Lines) -> None:
    url = server.base_url
    body = {"model": MODEL_NAME, "prompt": "hello", "max_tokens": 4, "ignore_eos": True}
    response = httpx.post(f"{url}/v1/completions", json=body, headers={"X-Request-ID": "req-abc-1"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "req-abc-1"
    (entry,) = access_log.wait_for(request_id="req-abc-1")
    assert entry["logger"] == "modelbench.access" and entry["level"] == "info"
    assert (entry["method"], entry["route"], entry["path"]) == (
        "POST",
        "/v1/completions",
        "/v1/completions",
    )
    assert (entry["model"], entry["status"], entry["client"]) == (
        f"{MODEL_NAME}:1",
        200,
        "127.0.0.1",
    )
    assert entry["latency_ms"] > 0 and entry["time"].endswith("+00:00")
    assert "req-abc-1" in entry["message"] and "200" in entry["message"]

    stream_body = {**body, "max_tokens": 32, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=stream_body) as streamed:
        made_id = streamed.headers["x-request-id"]
        lines = (line for line in streamed.iter_lines() if line)
        chunks = [next(lines)]
        first_at = time.monotonic()
        chunks += list(lines)
        last_at = time.monotonic()
    assert chunks[-1] == "data: [DONE]" and len(made_id) == 32
    (entry,) = access_log.wait_for(request_id=made_id)
    assert entry["status"] == 200 and entry["model"] == f"{MODEL_NAME}:1"
    # Logged when the body ended: the latency spans at least first to last chunk.
    assert entry["latency_ms"] >= (last_at - first_at) * 1000


def test_errors_and_unknown_paths_are_logged(server: RunningServer, access_log: Lines) -> None:
    url = server.base_url
    bad = httpx.post(
        f"{url}/v1/completions",
        json={"model": MODEL_NAME, "prompt": "hi", "n": 0},
        headers={"X-Request-ID": "bad-1"},
    )
    assert bad.status_code == 400
    (entry,) = access_log.wait_for(request_id="bad-1")
    assert entry["status"] == 400 and entry["route"] == "/v1/completions"

    missing = httpx.get(f"{url}/v1/jobs/nope-123", headers={"X-Request-ID": "job-1"})
    assert missing.status_code == 404
    (entry,) = access_log.wait_for(request_id="job-1")
    assert entry["route"] == "/v1/jobs/{job_id}" and entry["path"] == "/v1/jobs/nope-123"

    assert httpx.get(f"{url}/not/a/route", headers={"X-Request-ID": "nf-1"}).status_code == 404
    (entry,) = access_log.wait_for(request_id="nf-1")
    assert entry["route"] == "unmatched" and entry["model"] is None and entry["status"] == 404

    # Probes and scrapes come every few seconds: DEBUG, not INFO.
    assert httpx.get(f"{url}/health", headers={"X-Request-ID": "probe-1"}).status_code == 200
    httpx.get(f"{url}/v1/models", headers={"X-Request-ID": "after-probe"})
    access_log.wait_for(request_id="after-probe")
    assert not access_log.entries(request_id="probe-1")


def test_json_formatter_keeps_extra_fields_and_exceptions() -> None:
    record = logging.LogRecord(
        "modelbench.server", logging.ERROR, __file__, 1, "loading %s failed", ("m:1",), None
    )
    record.model = "m:1"
    try:
        raise ValueError("bad weights")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "loading m:1 failed" and entry["level"] == "error"
    assert entry["model"] == "m:1" and "ValueError: bad weights" in entry["exception"]
    assert "args" not in entry and "msg" not in entry


def test_log_config_follows_settings() -> None:
    config = log_config(Settings(log_format="text", log_level="warning"))
    assert "format" in config["formatters"]["default"]
    assert config["loggers"]["modelbench"]["level"] == "WARNING"
    assert config["loggers"]["uvicorn.access"]["handlers"] == []  # ours replaces it
    assert log_config(Settings())["formatters"]["default"]["()"] is JsonFormatter
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")


def test_log_and_drain_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelbench.cli.main import build_parser, settings_from_args

    assert (Settings().log_format, Settings().log_level, Settings().drain_timeout_s) == (
        "json",
        "info",
        30.0,
    )
    monkeypatch.setenv("MODELBENCH_LOG_FORMAT", "text")
    monkeypatch.setenv("MODELBENCH_DRAIN_TIMEOUT_S", "5")
    assert (Settings().log_format, Settings().drain_timeout_s) == ("text", 5.0)
    args = build_parser().parse_args(
        ["serve", "--log-format", "json", "--log-level", "debug", "--drain-timeout", "2.5"]
    )
    settings = settings_from_args(args)
    assert (settings.log_format, settings.log_level, settings.drain_timeout_s) == (
        "json",
        "debug",
        2.5,
    )
    monkeypatch.setenv("MODELBENCH_DRAIN_TIMEOUT_S", "-1")
    with pytest.raises(ValueError, match="drain_timeout_s"):
        Settings()
