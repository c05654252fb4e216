"""modelbench on Ray Serve (modelbench/deploy/ray_app.py), on a real local
Ray cluster started by the test: two replicas of the server behind Ray
Serve's proxy both answer, a replica killed is replaced while requests keep
being answered, and every request is on record in the one PostgreSQL store
the replicas share. Bounded: a tiny model, 2 CPUs, a few dozen requests."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from modelbench.db.tables import RequestRecord

from ..server.conftest import MAX_MODEL_LEN, free_port
from .conftest import module

ray: Any = None  # the modules, imported by the fixture (missing: skipped, or failed in CI)
serve: Any = None


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A local Ray cluster with Serve's proxy on a free port; torn down after."""
    global ray, serve
    # On two busy cores the proxy's workers take longer to start than Ray's
    # 5 s readiness check, which then kills it over and over.
    monkeypatch.setenv("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "120")
    monkeypatch.setenv("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
    ray, serve = module("ray", "modelbench[ray]"), module("ray.serve", "modelbench[ray]")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's sockets live there
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp,
        runtime_env={"env_vars": {"MODELBENCH_REGISTRY": "file"}},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def replica_actors() -> list[str]:
    names = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in names if a["name"].startswith("SERVE_REPLICA::modelbench#")]


def ask(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/completions",
        json={"model": "tiny", "prompt": "hello", "max_tokens": 2},
        timeout=60,
    )


def test_replicas_serve_are_replaced_and_share_the_store(
    cluster: int,
    tiny_model_path: Callable[[str], Path],
    postgresql_url: str,
    tmp_path: Path,
) -> None:
    from modelbench.deploy.ray_app import REPLICA_HEADER, deployment

    app = deployment(
        num_replicas=2,
        num_cpus=0.5,
        model=str(tiny_model_path("llama_gqa")),
        served_model_name="tiny",
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=8 << 20,
        database_url=postgresql_url,
        keys_file=str(tmp_path / "keys.json"),
        embedding_model="none",
    )
    serve.run(app, name="modelbench", route_prefix="/")
    url = f"http://127.0.0.1:{cluster}"
    header = REPLICA_HEADER.decode()
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 120
    while len(seen) < 2:  # the proxy spreads requests over both replicas
        r = ask(url)
        assert r.status_code == 200, r.text
        seen[r.headers[header]] += 1
        assert time.monotonic() < deadline, seen
    assert len(replica_actors()) == 2

    victim = replica_actors()[0]
    victim_id = victim.rsplit("#", 1)[1]  # SERVE_REPLICA::app#deployment#<replica id>
    assert victim_id in seen, (victim, seen)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    answered, failed = 0, 0
    deadline = time.monotonic() + 180
    while True:  # requests go on while Serve replaces the replica
        r = ask(url)
        if r.status_code == 200:
            answered += 1
            seen[r.headers[header]] += 1
        else:
            failed += 1
        replaced = victim not in replica_actors() and len(replica_actors()) == 2
        if replaced and len(seen) >= 3 and answered >= 10:
            break  # a new replica (a third id) has answered too
        assert time.monotonic() < deadline, (seen, answered, failed, replica_actors())
        time.sleep(0.05)
    assert failed <= 1, f"{failed} requests failed while the replica was replaced"

    engine = create_engine(postgresql_url)
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + 30
            while True:  # each replica's writer flushes within a second
                rows = connection.execute(select(func.count()).select_from(RequestRecord))
                # A replica killed hard loses what its writer had not written yet
                # (up to 0.2 s of records); every other answer is on record.
                if rows.scalar_one() >= sum(seen.values()) - seen[victim_id]:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        engine.dispose()
