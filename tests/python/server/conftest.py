"""A real modelbench server (uvicorn, in a background thread, on a free port)
over a tiny random-weight Llama, shared by the module's tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from modelbench.config import Settings
from modelbench.server import create_app
from modelbench.server.registry import ModelRegistry

from ..tiny_models import build_tiny_model

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

MAX_MODEL_LEN = 256
KV_CACHE_MEMORY = 32 * 1024 * 1024
MODEL_NAME = "tiny-llama"


@dataclass
class RunningServer:
    app: FastAPI
    base_url: str
    model_path: Path

    @property
    def registry(self):
        return self.app.state.registry

    @property
    def handle(self):
        """The tiny model's one version."""
        return self.registry.resolve(MODEL_NAME)

    @property
    def engine(self):
        return self.handle.engine


def serve_args(model_path: Path, port: int, *extra: str) -> list[str]:
    """``modelbench serve`` of the tiny model with this module's settings, then ``extra``."""
    return [
        "serve",
        "--model",
        str(model_path),
        "--served-model-name",
        MODEL_NAME,
        "--port",
        str(port),
        "--kv-cache-memory",
        str(KV_CACHE_MEMORY),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        *extra,
    ]


def tiny_settings(model_path: Path, root: Path, **extra: object) -> Settings:
    """Settings serving the tiny model on a free port, with its keys file and
    SQLite store under ``root``; ``extra`` overrides any of them."""
    values: dict[str, object] = {
        "model": str(model_path),
        "served_model_name": MODEL_NAME,
        "port": free_port(),
        "max_model_len": MAX_MODEL_LEN,
        "kv_cache_memory": KV_CACHE_MEMORY,
        "keys_file": root / "keys.json",
        "database_url": f"sqlite:///{root / 'store.db'}",
        **extra,
    }
    return Settings(**values)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama_gqa", tmp_path_factory.mktemp("server") / "llama")


@contextmanager
def run_server(
    settings: Settings,
    model_path: Path,
    registry: ModelRegistry | None = None,
    ready_store: bool = True,
    tracer_provider: TracerProvider | None = None,
) -> Iterator[RunningServer]:
    """Serve ``create_app(settings, registry)`` with uvicorn in a thread until
    ready (its store too, unless ``ready_store`` is False: a store meant to be
    down); stop it on exit. ``settings.port`` must be free."""
    app = create_app(settings, registry, tracer_provider)
    port = settings.port
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:  # up, then ready (the models load after startup)
        try:
            ready = httpx.get(f"{base_url}/ready", timeout=2)
            if ready.status_code == 200 and (
                not ready_store or ready.json().get("store") == "ready"
            ):
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            uv.should_exit = True
            raise RuntimeError(
                f"the server did not become ready: {httpx.get(base_url + '/ready').text}"
            )
        time.sleep(0.05)
    try:
        yield RunningServer(app, base_url, model_path)
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def wait_for_load(http: httpx.Client, accepted: httpx.Response) -> dict:
    """An admin load's status once it is no longer loading (``accepted``:
    the 202 of POST /v1/admin/models), asserted ready."""
    assert accepted.status_code == 202, accepted.text
    while (status := http.get(accepted.json()["status_url"]).json())["state"] == "loading":
        time.sleep(0.05)
    assert status["state"] == "ready", status
    return status


@pytest.fixture(scope="session")
def server(tiny_llama_path: Path) -> Iterator[RunningServer]:
    settings = Settings(
        model=str(tiny_llama_path),
        port=free_port(),
        served_model_name=MODEL_NAME,
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY,
    )
    with run_server(settings, tiny_llama_path) as running:
        yield running
