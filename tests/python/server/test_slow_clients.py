"""Slow and greedy clients are bounded: the app served as ``modelbench
serve`` serves it (server/uvicorn_runner.py's config, with
server/http_protocol.py's protocol), probed over raw sockets. A head past
``max_header_bytes`` gets 431 however it arrives; a head or body dribbled
(slowloris), or a connection that sends nothing, is closed once its timeout
passes; a kept-alive connection idle between requests is not."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from modelbench.config import Settings
from modelbench.server import create_app
from modelbench.server.uvicorn_runner import uvicorn_config

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, MODEL_NAME, free_port

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 4096


@dataclass
class Served:
    app: FastAPI
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def serve_with_runner(settings: Settings, connect_host: str = "127.0.0.1") -> Iterator[Served]:
    """``create_app(settings)`` under ``uvicorn_config`` (what ``modelbench
    serve`` runs), in a thread, until its models are ready."""
    app = create_app(settings)
    # uvicorn_config's dictConfig takes over these loggers (no propagation to the
    # root, where pytest's caplog listens): put them back as they were after.
    names = ("modelbench", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = [
        (lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled)
        for lg in map(logging.getLogger, names)
    ]
    server = uvicorn.Server(uvicorn_config(app, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    served = Served(app, connect_host, settings.port)
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{served.base_url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield served
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for logger, handlers, level, propagate, disabled in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


def tiny_settings(tiny_llama_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model": str(tiny_llama_path),
        "served_model_name": MODEL_NAME,
        "port": free_port(),
        "max_model_len": MAX_MODEL_LEN,
        "kv_cache_memory": KV_CACHE_MEMORY,
        "run_worker": False,
        "log_level": "warning",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bounded(tiny_llama_path: Path) -> Iterator[Served]:
    settings = tiny_settings(
        tiny_llama_path,
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        max_header_bytes=MAX_HEADER_BYTES,
    )
    with serve_with_runner(settings) as served:
        yield served


def connect(served: Served) -> socket.socket:
    sock = socket.create_connection((served.host, served.port), timeout=10)
    sock.settimeout(10)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def closed_after(sock: socket.socket, dribble: bytes, every_s: float, limit_s: float) -> float:
    """Send ``dribble`` a byte every ``every_s`` until the server closes the
    connection; the seconds that took (``limit_s`` if it never did)."""
    started = time.monotonic()
    sock.settimeout(every_s)
    for i in range(len(dribble)):
        try:
            sock.sendall(dribble[i : i + 1])
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass  # still open
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        if time.monotonic() - started > limit_s:
            break
    return limit_s


def test_a_huge_head_in_one_write_is_431(bounded: Served) -> None:
    with connect(bounded) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        sock.sendall(head)
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # httpx sees the same, with OpenAI's error body; a head under the bound is served
    huge = httpx.get(f"{bounded.base_url}/health", headers={"X-Big": "a" * 8000})
    assert huge.status_code == 431
    error = huge.json()["error"]
    assert error["code"] == "request_header_fields_too_large"
    assert f"over {MAX_HEADER_BYTES} bytes" in error["message"]
    fine = httpx.get(f"{bounded.base_url}/health", headers={"X-Big": "a" * 2000})
    assert fine.status_code == 200


def test_a_head_that_never_ends_is_cut_at_the_bound(bounded: Served) -> None:
    """Header lines in many writes with no end: refused once the bound is
    passed, without the server buffering what follows."""
    with connect(bounded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        try:
            for i in range(1000):  # 1 MB if nothing stopped it
                sock.sendall(f"X-H{i}: {'v' * 1000}\r\n".encode())
                sent += 1010
                time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert sent < 1_000_000  # the server closed the connection before it was all sent


def test_slowloris_head_is_disconnected(bounded: Served) -> None:
    with connect(bounded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        took = closed_after(sock, b"X-Slow: " + b"a" * 200, every_s=0.1, limit_s=6)
    assert HEADER_TIMEOUT_S * 0.8 < took < HEADER_TIMEOUT_S + 2, took


def test_a_silent_connection_is_closed(bounded: Served) -> None:
    with connect(bounded) as sock:
        started = time.monotonic()
        assert read_response(sock) == b""
        took = time.monotonic() - started
    assert HEADER_TIMEOUT_S * 0.8 < took < HEADER_TIMEOUT_S + 2, took


def test_slow_body_is_disconnected(bounded: Served) -> None:
    with connect(bounded) as sock:
        sock.sendall(
            b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
        took = closed_after(sock, b"{" + b" " * 500, every_s=0.1, limit_s=6)
    assert BODY_TIMEOUT_S * 0.8 < took < BODY_TIMEOUT_S + 2, took


def test_kept_alive_and_slowish_requests_are_served(bounded: Served) -> None:
    """The bounds leave honest clients alone: a body in pieces within the
    body timeout is served, and a kept-alive connection idle for longer than
    the head timeout between requests serves the next one."""
    body = b'{"model": "%s", "prompt": "hello"}' % MODEL_NAME.encode()
    with connect(bounded) as sock:
        sock.sendall(
            b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        for part in (body[:10], body[10:20], body[20:]):
            time.sleep(0.2)
            sock.sendall(part)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ") and b'"tokens"' in first, first[:300]
        time.sleep(HEADER_TIMEOUT_S * 1.5)  # idle, under uvicorn's keep-alive (5 s)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_unparseable_request_is_a_400_with_an_error_body(bounded: Served) -> None:
    with connect(bounded) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head
    assert json.loads(body)["error"]["code"] == "invalid_http_request"
