"""The admin registry kept in the store (server/registry_store.py), on SQLite
and PostgreSQL: a version loaded through the admin API is loaded by a second
server on the same database within seconds and again after a restart,
an unload reaches the others the same way, the audit trail names who did
what, a change with the store down is refused (503), and ``--registry
file`` keeps the old behaviour."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from modelbench.config import Settings
from modelbench.server.keys import KeyStore

from .conftest import KV_CACHE_MEMORY, MAX_MODEL_LEN, MODEL_NAME, run_server, tiny_settings

ENGINE = {"max_model_len": MAX_MODEL_LEN, "kv_cache_memory": KV_CACHE_MEMORY}


def settings_for(tiny: Path, root: Path, database_url: str, **extra: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "model_dirs": [tiny.parent],
        "registry": "store",
        "registry_poll_s": 0.2,
        "auth_max_failures": 1000,
    }
    return tiny_settings(tiny, root, **{**values, **extra})


def state_of(url: str, model_id: str, admin: str) -> str | None:
    r = httpx.get(f"{url}/v1/admin/models/{model_id}", headers=bearer(admin), timeout=10)
    return r.json()["state"] if r.status_code == 200 else None


def wait_for(url: str, model_id: str, admin: str, wanted: str | None, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while (state := state_of(url, model_id, admin)) != wanted:
        assert time.monotonic() < deadline, f"{model_id} on {url}: {state}, not {wanted}"
        time.sleep(0.1)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_admin_loads_survive_restarts_and_reach_every_server(
    tiny_llama_path: Path, tmp_path: Path, database_url: str
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    ops, ops_secret = keys.create("ops", admin=True)
    _, app_secret = keys.create("app")
    load = {"name": "extra", "version": "2", "path": str(tiny_llama_path), **ENGINE}
    one = settings_for(tiny_llama_path, tmp_path, database_url)
    two = settings_for(tiny_llama_path, tmp_path, database_url)
    with run_server(one, tiny_llama_path) as a, run_server(two, tiny_llama_path) as b:
        r = httpx.post(
            f"{a.base_url}/v1/admin/models", json=load, headers=bearer(ops_secret), timeout=30
        )
        assert r.status_code == 202, r.text
        wait_for(a.base_url, "extra:2", ops_secret, "ready")
        wait_for(b.base_url, "extra:2", ops_secret, "ready")  # the other server picked it up
        listed = httpx.get(f"{b.base_url}/v1/admin/models", headers=bearer(ops_secret)).json()
        assert {(v["id"], v["declared"]) for v in listed["data"]} == {
            (f"{MODEL_NAME}:1", True),
            ("extra:2", False),
        }
        admin = bearer(ops_secret)
        patch = f"{a.base_url}/v1/admin/models"
        r = httpx.patch(f"{patch}/extra", json={"routing": "canary"}, headers=admin, timeout=10)
        assert r.status_code == 200 and r.json()["routing"] == "canary", r.text
        r = httpx.patch(f"{patch}/extra:2", json={"weight": 0.5}, headers=admin, timeout=10)
        assert r.status_code == 200 and r.json()["weights"] == {"extra:2": 0.5}, r.text
        for target, body, status in [
            ("extra", {"routing": "sideways"}, 400),
            ("extra", {"routing": "canary", "colour": "red"}, 400),
            ("extra:2", {"weight": -1}, 400),
            ("nothing", {"routing": "canary"}, 404),
            ("extra:9", {"weight": 1}, 404),
            ("extra", {}, 200),  # nothing to change: not audited
        ]:
            r = httpx.patch(f"{patch}/{target}", json=body, headers=admin, timeout=10)
            assert r.status_code == status, (target, body, r.text)
        deadline = time.monotonic() + 10  # the other server takes the routing and the weight
        while True:
            seen = httpx.patch(f"{b.base_url}/v1/admin/models/extra", json={}, headers=admin).json()
            if seen["routing"] == "canary" and seen["weights"] == {"extra:2": 0.5}:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
        done = httpx.post(
            f"{b.base_url}/v1/completions",
            json={"model": "extra", "prompt": "hi", "max_tokens": 2},
            headers=bearer(app_secret),
            timeout=60,
        )
        assert done.status_code == 200 and done.json()["model"] == "extra:2", done.text
    with run_server(settings_for(tiny_llama_path, tmp_path, database_url), tiny_llama_path) as c:
        wait_for(c.base_url, "extra:2", ops_secret, "ready")  # loaded again after a restart
        again = httpx.patch(
            f"{c.base_url}/v1/admin/models/extra:2",
            json={"weight": 0.5},
            headers=bearer(ops_secret),
        )
        assert again.json()["routing"] == "canary"  # the routing came back with it
        gone = httpx.delete(
            f"{c.base_url}/v1/admin/models/extra:2", headers=bearer(ops_secret), timeout=60
        )
        assert gone.status_code == 200, gone.text
        trail = httpx.get(f"{c.base_url}/v1/admin/audit", headers=bearer(ops_secret), timeout=10)
        assert trail.status_code == 200, trail.text
        entries = [(e["action"], e["model_id"], e["actor"]) for e in trail.json()["data"]]
        assert entries == [
            ("unload", "extra:2", ops.id),
            ("route", "extra:2", ops.id),
            ("route", "extra:2", ops.id),
            ("route", "extra", ops.id),
            ("load", "extra:2", ops.id),
        ]
        assert trail.json()["data"][-1]["detail"]["path"] == str(tiny_llama_path)
        assert trail.json()["data"][-2]["detail"] == {"routing": "canary"}
        plain = httpx.get(f"{c.base_url}/v1/admin/audit", headers=bearer(app_secret), timeout=10)
        assert plain.status_code == 403
    with run_server(settings_for(tiny_llama_path, tmp_path, database_url), tiny_llama_path) as d:
        time.sleep(1.0)  # five polls: an unloaded version stays unloaded
        assert state_of(d.base_url, "extra:2", ops_secret) is None


def test_an_admin_change_with_the_store_down_is_refused(
    tiny_llama_path: Path, tmp_path: Path
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    _, ops_secret = keys.create("ops", admin=True)
    down = "postgresql+psycopg://modelbench@127.0.0.1:1/nowhere"  # nothing listens there
    settings = settings_for(tiny_llama_path, tmp_path, down)
    with run_server(settings, tiny_llama_path, ready_store=False) as running:
        load = {"name": "extra", "path": str(tiny_llama_path), **ENGINE}
        r = httpx.post(
            f"{running.base_url}/v1/admin/models", json=load, headers=bearer(ops_secret), timeout=30
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
        assert "would not survive a restart" in r.json()["error"]["message"]
        assert state_of(running.base_url, "extra:1", ops_secret) is None  # nothing started


def test_registry_file_keeps_loads_in_the_process(
    tiny_llama_path: Path, tmp_path: Path, sqlite_url: str
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    _, ops_secret = keys.create("ops", admin=True)
    settings = settings_for(tiny_llama_path, tmp_path, sqlite_url, registry="file")
    with run_server(settings, tiny_llama_path) as running:
        r = httpx.get(f"{running.base_url}/v1/admin/audit", headers=bearer(ops_secret), timeout=10)
        assert r.status_code == 409 and "--registry file" in r.json()["error"]["message"]
