"""A real modelbench server (uvicorn, in a background thread, on a free port)
over a tiny random-weight Llama, shared by the module's tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from modelbench.config import Settings
from modelbench.server import create_app

from ..tiny_models import build_tiny_model

MAX_MODEL_LEN = 256
KV_CACHE_MEMORY = 32 * 1024 * 1024
MODEL_NAME = "tiny-llama"


@dataclass
class RunningServer:
    app: FastAPI
    base_url: str
    model_path: Path

    @property
    def registry(self):  # noqa: ANN201
        return self.app.state.registry

    @property
    def handle(self):  # noqa: ANN201
        """The tiny model's one version."""
        return self.registry.resolve(MODEL_NAME)

    @property
    def engine(self):  # noqa: ANN201
        return self.handle.engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama_gqa", tmp_path_factory.mktemp("server") / "llama")


@pytest.fixture(scope="session")
def server(tiny_llama_path: Path) -> Iterator[RunningServer]:
    port = free_port()
    settings = Settings(
        model=str(tiny_llama_path), port=port, served_model_name=MODEL_NAME,
        max_model_len=MAX_MODEL_LEN, kv_cache_memory=KV_CACHE_MEMORY,
    )
    app = create_app(settings)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # up, then ready (the model loads after startup)
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            uv.should_exit = True
            raise RuntimeError(f"the server did not become ready: {httpx.get(base_url + '/ready').text}")
        time.sleep(0.05)
    yield RunningServer(app, base_url, tiny_llama_path)
    uv.should_exit = True
    thread.join(timeout=30)
