"""No prompt or output text in the logs, at any level, unless asked
(``log_text``). Requests whose prompts (and, through ``echo``, outputs) carry
a marker go to every route that takes text, streamed and not, a bad one, and
a batch job; the marker must appear nowhere in what a real ``modelbench
serve --log-level debug`` writes, nor in what the process's loggers emit
with modelbench's and uvicorn's at DEBUG. With ``log_text`` on, it does appear:
the capture works."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert

from modelbench.config import Settings
from modelbench.db.connection import make_engine
from modelbench.db.tables import Base, RequestRecord

from .. import serve_process
from .conftest import (
    KV_CACHE_MEMORY,
    MAX_MODEL_LEN,
    MODEL_NAME,
    RunningServer,
    free_port,
    run_server,
    serve_args,
)
from .test_batch import wait_done

MARKER = "zebraquokka7c1e"


def send_marked_requests(base_url: str, marker: str = MARKER) -> list[str]:
    """Every kind of request that carries text; the request ids sent."""
    prompt = f"Tell me about {marker} please"
    chat = [{"role": "user", "content": prompt}]
    calls: list[tuple[str, dict]] = [
        ("/v1/completions", {"prompt": prompt, "max_tokens": 4, "echo": True}),
        ("/v1/completions", {"prompt": prompt, "max_tokens": 4, "echo": True, "stream": True}),
        ("/v1/chat/completions", {"messages": chat, "max_tokens": 4}),
        ("/v1/chat/completions", {"messages": chat, "max_tokens": 4, "stream": True}),
        ("/v1/responses", {"input": prompt, "max_output_tokens": 4}),
        ("/v1/embeddings", {"input": [prompt]}),
        ("/v1/infer", {"text": prompt, "task": "generate", "parameters": {"max_tokens": 4}}),
        ("/v1/infer", {"text": prompt, "task": "sentiment"}),
        ("/tokenize", {"prompt": prompt}),
        ("/v1/completions", {"prompt": prompt, "max_tokens": -1}),  # a 400 that echoes input
        ("/v1/completions", {"prompt": prompt, "max_tokens": 4, "bogus": prompt}),  # another
    ]
    ids = []
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for i, (path, body) in enumerate(calls):
            request_id = f"privacy-{i}"
            r = http.post(
                path, json={"model": MODEL_NAME, **body}, headers={"X-Request-ID": request_id}
            )
            assert r.status_code < 500, r.text
            ids.append(request_id)
        line = (
            '{"custom_id": "one", "method": "POST", "url": "/v1/completions", "body": '
            f'{{"model": "{MODEL_NAME}", "prompt": "{prompt}", "max_tokens": 4, "echo": true}}}}\n'
        )
        batch = http.post("/v1/batch", content=line, headers={"content-type": "application/jsonl"})
        assert batch.status_code == 202, batch.text
        done = wait_done(http, batch.json()["id"])
        assert done["status"] == "completed", done
        results = http.get(f"/v1/batch/{batch.json()['id']}/results").text
        assert marker in results  # the output did carry the marker (echo)
    return ids


# ---- a real modelbench serve at debug level ------------------------------------------


@pytest.fixture
def served_at_debug(tiny_llama_path: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MODELBENCH_LOG_TEXT", None)
    proc = serve_process.start(
        serve_args(
            tiny_llama_path,
            port,
            "--log-level",
            "debug",
            "--database-url",
            f"sqlite:///{tmp_path / 'store.db'}",
        ),
        env,
        log_path,
        with_stdout=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        serve_process.wait_ready(proc, base_url, log_path)
        yield base_url, log_path
    finally:
        serve_process.stop(proc, grace_s=60)


def test_modelbench_serve_at_debug_logs_no_text(served_at_debug: tuple[str, Path]) -> None:
    base_url, log_path = served_at_debug
    ids = send_marked_requests(base_url)
    deadline = time.monotonic() + 10
    while not all(f'"request_id": "{i}"' in log_path.read_text() for i in ids):
        assert time.monotonic() < deadline, "an access line is missing"
        time.sleep(0.05)
    logged = log_path.read_text()
    assert '"level": "debug"' in logged  # the level really is debug (probes log there)
    assert MARKER not in logged


# ---- every logger of the process at DEBUG ---------------------------------------------


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not any(r is record for r in self.records[-20:]):  # met again on the way to the root
            self.records.append(record)

    def text(self) -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(r) + " " + repr(vars(r)) for r in self.records)


@pytest.fixture
def every_logger() -> Iterator[Everything]:
    """What a debug-level server emits: modelbench's and uvicorn's loggers
    (uvicorn's access log included) at DEBUG, every other library's at the
    level it has (the root's WARNING, as ``modelbench serve`` leaves them:
    SQLAlchemy logs result rows at DEBUG when asked to, which a server
    operator would have to configure)."""
    handler = Everything()
    ours = [logging.getLogger(name) for name in ("modelbench", "uvicorn", "uvicorn.access")]
    root = logging.getLogger()
    saved = [(lg, lg.level) for lg in ours]
    for lg in ours:
        lg.setLevel(logging.DEBUG)
    for lg in (*ours, root):
        lg.addHandler(handler)
    yield handler
    for lg, level in saved:
        lg.setLevel(level)
    for lg in (*ours, root):
        lg.removeHandler(handler)


def test_no_logger_sees_text_at_debug(server: RunningServer, every_logger: Everything) -> None:
    ids = send_marked_requests(server.base_url)
    time.sleep(0.5)  # access lines are written as responses end
    logged = every_logger.text()
    assert all(i in logged for i in ids)  # the capture saw the requests
    assert MARKER not in logged


def test_store_errors_log_no_parameters(tmp_path: Path, every_logger: Everything) -> None:
    """A statement the database refuses raises an error that the writer and
    the worker log: it names the statement, not its values (a prompt)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(engine)
    row = {"id": "req_1", "endpoint": "/v1/completions", "task": "generate", "status": "ok"}
    with engine.begin() as connection:
        connection.execute(insert(RequestRecord), [{**row, "prompt": "first"}])
    with pytest.raises(Exception) as refused, engine.begin() as connection:
        connection.execute(insert(RequestRecord), [{**row, "prompt": MARKER}])
    assert "UNIQUE" in str(refused.value) and MARKER not in str(refused.value)
    logging.getLogger("modelbench.store").error("the store refused: %s", refused.value)
    assert MARKER not in every_logger.text()


# ---- asked for ----------------------------------------------------------------------------


def test_log_text_puts_text_in_the_log(tiny_llama_path: Path, every_logger: Everything) -> None:
    settings = Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        port=free_port(),
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_CACHE_MEMORY,
        log_text=True,
    )
    with run_server(settings, tiny_llama_path) as running:
        body = {"model": MODEL_NAME, "prompt": f"about {MARKER}", "max_tokens": 4}
        r = httpx.post(f"{running.base_url}/v1/completions", json=body, timeout=60)
        assert r.status_code == 200
        time.sleep(0.5)
    lines = [r for r in every_logger.records if r.name == "modelbench.text"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    message = lines[0].getMessage()
    assert MARKER in message and repr(r.json()["choices"][0]["text"]) in message
