"""A real ``modelbench serve --grpc-port`` process for the gRPC tests: the
default model (SmolLM2-135M-Instruct, served as "smol": slow enough on a CPU
that a stream is still running when a client cancels it) and the example
digit classifier (``modelbench.predict.example``), with API keys, a store,
and a grpcio channel to it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from modelbench.models.default_model import default_model_path
from modelbench.predict.example import train_digits
from modelbench.server.keys import KeyStore

from ... import serve_process
from ..conftest import free_port

LLM_NAME = "smol"
DIGITS_NAME = "digits"
RATE_LIMIT_RPM = 3  # the limited key's requests per minute
JWT_SECRET = "grpc-test-secret-" + "s" * 32  # bearer JWTs (HS256) beside the keys


@dataclass
class GrpcServed:
    proc: object
    base_url: str
    target: str  # host:port of the gRPC server
    root: Path
    log_path: Path
    admin_key: str
    plain_key: str
    limited_key: str  # RATE_LIMIT_RPM requests a minute

    def http(self, key: str | None = None) -> httpx.Client:
        key = self.admin_key if key is None else key
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    def metadata(self, key: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_key if key is None else key}"),)


@pytest.fixture(scope="package")
def digits_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("digits") / "digits.pt"
    train_digits(path, epochs=10)
    return path


def start_served(root: Path, digits: Path, *extra: str, env: dict | None = None) -> GrpcServed:
    """``modelbench serve`` of smol and digits with HTTP and gRPC, ready."""
    keys = KeyStore(root / "keys.json")
    _, admin_key = keys.create("admin", admin=True)
    _, plain_key = keys.create("plain")
    _, limited_key = keys.create("limited", rpm=RATE_LIMIT_RPM)
    port, grpc_port = free_port(), free_port()
    log_path = root / "serve.log"
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "MODELBENCH_RUN_WORKER": "false",
        "MODELBENCH_KEYS_FILE": str(root / "keys.json"),
        "MODELBENCH_DATABASE_URL": f"sqlite:///{root / 'store.db'}",
        "MODELBENCH_LOG_FORMAT": "text",
        **(env or {}),
    }
    args = [
        "serve",
        "--model",
        str(default_model_path()),
        "--model",
        str(digits),
        "--served-model-name",
        LLM_NAME,
        "--served-model-name",
        DIGITS_NAME,
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--max-model-len",
        "512",
        "--kv-cache-memory",
        str(64 * 1024 * 1024),
        *extra,
    ]
    proc = serve_process.start(args, environ, log_path)
    base_url = f"http://127.0.0.1:{port}"
    serve_process.wait_ready(proc, base_url, log_path)
    return GrpcServed(
        proc, base_url, f"127.0.0.1:{grpc_port}", root, log_path, admin_key, plain_key, limited_key
    )


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory, digits_path: Path) -> Iterator[GrpcServed]:
    root = tmp_path_factory.mktemp("grpc_served")
    # Failed authentications are part of the tests: never the address's lockout.
    env = {"MODELBENCH_AUTH_MAX_FAILURES": "1000", "MODELBENCH_JWT_SECRET": JWT_SECRET}
    running = start_served(root, digits_path, env=env)
    try:
        yield running
    finally:
        serve_process.stop(running.proc, grace_s=10)  # type: ignore[arg-type]


@pytest.fixture(scope="package")
def channel(served: GrpcServed) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.target) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch
