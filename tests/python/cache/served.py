"""A real ``modelbench serve`` process over a tiny random-weight Llama, with
the cache's flags, its own keys file and store, for the cache's end-to-end
tests."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from .. import serve_process
from ..redis_server import free_port

MODEL = "tiny-llama"


class Served:
    def __init__(
        self, model_path: Path, tmp: Path, flags: list[str], keys_file: Path, wait: bool = True
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        self.database = tmp / f"store-{self.port}.db"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "MODELBENCH_RUN_WORKER": "false",
            "MODELBENCH_KEYS_FILE": str(keys_file),
            "MODELBENCH_DATABASE_URL": f"sqlite:///{self.database}",
        }
        self.proc = serve_process.start(
            [
                "serve",
                "--model",
                str(model_path),
                "--served-model-name",
                MODEL,
                "--port",
                str(self.port),
                "--kv-cache-memory",
                str(32 * 1024 * 1024),
                "--max-model-len",
                "256",
                "--log-format",
                "text",
                *flags,
            ],
            env,
            self.log_path,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        serve_process.wait_ready(self.proc, self.url, self.log_path)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        serve_process.stop(self.proc, grace_s=0)

    def post(
        self, path: str, body: dict, key: str | None = None, headers: dict | None = None
    ) -> httpx.Response:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        return httpx.post(self.url + path, json={"model": MODEL, **body}, headers=sent, timeout=60)

    def record(self, record_id: str) -> dict:
        """The request's row in the store, once the writer has put it there."""
        engine = sa.create_engine(f"sqlite:///{self.database}")
        try:
            deadline = time.monotonic() + 10
            while True:
                with engine.connect() as c:
                    row = (
                        c.execute(
                            sa.text("SELECT * FROM requests WHERE id = :id"), {"id": record_id}
                        )
                        .mappings()
                        .first()
                    )
                if row is not None:
                    return dict(row)
                assert time.monotonic() < deadline, f"no record {record_id} in the store"
                time.sleep(0.05)
        finally:
            engine.dispose()

    def metric(self, name: str) -> float | None:
        for line in httpx.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None
