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
import pytest

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
            ("load", f"{MODEL_NAME}:1", "models-file"),  # the models file seeded it
        ]
        assert trail.json()["data"][-2]["detail"]["path"] == str(tiny_llama_path)
        assert trail.json()["data"][-3]["detail"] == {"routing": "canary"}
        plain = httpx.get(f"{c.base_url}/v1/admin/audit", headers=bearer(app_secret), timeout=10)
        assert plain.status_code == 403
    with run_server(settings_for(tiny_llama_path, tmp_path, database_url), tiny_llama_path) as d:
        time.sleep(1.0)  # five polls: an unloaded version stays unloaded
        assert state_of(d.base_url, "extra:2", ops_secret) == "not_loaded"


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


def complete(url: str, body: dict[str, object], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=30)


def audit_of(url: str, admin: str) -> list[tuple[str, str, str | None]]:
    r = httpx.get(f"{url}/v1/admin/audit", headers=bearer(admin), timeout=10)
    assert r.status_code == 200, r.text
    return [(e["action"], e["model_id"], e["actor"]) for e in r.json()["data"]]


def test_the_models_file_seeds_the_registry_and_an_unload_holds_across_restarts(
    tiny_llama_path: Path, tmp_path: Path, database_url: str
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    ops, ops_secret = keys.create("ops", admin=True)
    admin = bearer(ops_secret)
    declared = f"{MODEL_NAME}:1"
    with run_server(settings_for(tiny_llama_path, tmp_path, database_url), tiny_llama_path) as a:
        one = httpx.get(f"{a.base_url}/v1/admin/models/{declared}", headers=admin).json()
        assert one["state"] == "ready" and one["declared"] is True, one
        assert one["stored"]["state"] == "active" and one["stored"]["created_by"] == "models-file"
        assert audit_of(a.base_url, ops_secret) == [("load", declared, "models-file")]
        by_name = httpx.get(f"{a.base_url}/v1/admin/models/{MODEL_NAME}", headers=admin).json()
        assert by_name["name"] == MODEL_NAME and by_name["routing"] == "pinned"
        assert [v["id"] for v in by_name["data"]] == [declared]
        for target, status in [("no-such", 404), ("no-such:1", 404), ("bad name!", 400)]:
            r = httpx.get(f"{a.base_url}/v1/admin/models/{target}", headers=admin)
            assert r.status_code == status, (target, r.text)
        gone = httpx.delete(f"{a.base_url}/v1/admin/models/{declared}", headers=admin, timeout=60)
        assert gone.status_code == 200, gone.text
        assert httpx.get(f"{a.base_url}/ready").status_code == 200  # the registry dropped it
    # Restarted with the same models file: the store's unload holds.
    with run_server(settings_for(tiny_llama_path, tmp_path, database_url), tiny_llama_path) as b:
        status = httpx.get(f"{b.base_url}/v1/admin/models/{declared}", headers=admin).json()
        assert status["state"] == "not_loaded" and status["stored"]["state"] == "unloaded"
        done = httpx.post(
            f"{b.base_url}/v1/completions",
            json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2},
            headers=admin,
            timeout=30,
        )
        assert done.status_code == 404, done.text
        load = {"name": MODEL_NAME, "path": str(tiny_llama_path), **ENGINE}
        r = httpx.post(f"{b.base_url}/v1/admin/models", json=load, headers=admin, timeout=30)
        assert r.status_code == 202, r.text
        wait_for(b.base_url, declared, ops_secret, "ready")
        row = httpx.get(f"{b.base_url}/v1/admin/models/{declared}", headers=admin).json()
        assert row["stored"]["state"] == "active" and row["stored"]["created_by"] == "models-file"
        assert audit_of(b.base_url, ops_secret) == [
            ("load", declared, ops.id),
            ("unload", declared, ops.id),
            ("load", declared, "models-file"),
        ]


def test_a_failed_admin_load_is_marked_failed_and_not_tried_again(
    tiny_llama_path: Path, tmp_path: Path, database_url: str
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    ops, ops_secret = keys.create("ops", admin=True)
    admin = bearer(ops_secret)
    broken = tiny_llama_path.parent / f"broken-{tmp_path.name}"
    broken.mkdir()
    for item in tiny_llama_path.iterdir():  # its config and tokenizer; its weights cut short
        if item.is_file():
            data = item.read_bytes()
            if item.name.endswith(".safetensors"):  # the header whole, which the checks read
                data = data[: 8 + int.from_bytes(data[:8], "little") + 16]
            (broken / item.name).write_bytes(data)
    load = {"name": "broken", "path": str(broken), **ENGINE}
    with run_server(settings_for(tiny_llama_path, tmp_path, database_url), tiny_llama_path) as a:
        r = httpx.post(f"{a.base_url}/v1/admin/models", json=load, headers=admin, timeout=30)
        assert r.status_code == 202, r.text
        wait_for(a.base_url, "broken:1", ops_secret, "failed")
        deadline = time.monotonic() + 10
        while (entries := audit_of(a.base_url, ops_secret))[0][0] != "fail":
            assert time.monotonic() < deadline, entries
            time.sleep(0.1)
        assert entries[0] == ("fail", "broken:1", ops.id)
    with run_server(settings_for(tiny_llama_path, tmp_path, database_url), tiny_llama_path) as b:
        time.sleep(1.0)  # five polls: a failed load is not tried again at start
        status = httpx.get(f"{b.base_url}/v1/admin/models/broken:1", headers=admin).json()
        assert status["state"] == "not_loaded" and status["stored"]["state"] == "failed"


def test_upstreams_in_the_registry_reach_every_gateway(
    tiny_llama_path: Path, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    ops, ops_secret = keys.create("ops", admin=True)
    _, app_secret = keys.create("app")
    monkeypatch.setenv("MODELBENCH_TEST_UPSTREAM_KEY", app_secret)  # what the gateway sends
    admin = bearer(ops_secret)
    server = settings_for(tiny_llama_path, tmp_path, database_url)
    gateway_only = {"model": None, "served_model_name": None, "serve_default_model": False}
    gateway = settings_for(
        tiny_llama_path, tmp_path, database_url, registry_models=False, **gateway_only
    )
    with run_server(server, tiny_llama_path) as a, run_server(gateway, tiny_llama_path) as g:
        listed = httpx.get(f"{g.base_url}/v1/admin/models", headers=admin).json()["data"]
        assert [(v["id"], v["state"]) for v in listed] == [(f"{MODEL_NAME}:1", "not_loaded")]
        entry = {
            "name": "remote",
            "url": f"{a.base_url}/v1",
            "model": MODEL_NAME,
            "api_key_env": "MODELBENCH_TEST_UPSTREAM_KEY",
        }
        for body, status in [
            ({**entry, "colour": "red"}, 400),
            ({**entry, "url": "ftp://x/v1"}, 400),
            ({**entry, "api_key_env": "MODELBENCH_TEST_UNSET_KEY"}, 409),
            ({**entry, "name": MODEL_NAME}, 409),  # a local model on the server
        ]:
            r = httpx.post(f"{a.base_url}/v1/admin/upstreams", json=body, headers=admin)
            assert r.status_code == status, (body, r.text)
        r = httpx.post(f"{a.base_url}/v1/admin/upstreams", json=entry, headers=admin, timeout=10)
        assert r.status_code == 201 and r.json()["state"] == "healthy", r.text
        again = httpx.post(f"{a.base_url}/v1/admin/upstreams", json=entry, headers=admin)
        assert again.status_code == 409, again.text
        local = {"name": "remote", "path": str(tiny_llama_path), **ENGINE}
        clash = httpx.post(f"{a.base_url}/v1/admin/models", json=local, headers=admin)
        assert clash.status_code == 409 and "upstreams" in clash.text, clash.text
        ask = {"model": "remote", "prompt": "hi", "max_tokens": 2}
        deadline = time.monotonic() + 15  # the gateway adds it from the store
        while (
            done := httpx.post(f"{g.base_url}/v1/completions", json=ask, headers=admin)
        ).status_code != 200:
            assert time.monotonic() < deadline, done.text
            time.sleep(0.1)
        mine = httpx.get(f"{g.base_url}/v1/admin/upstreams", headers=admin).json()["data"]
        assert [(u["name"], u["state"], u["stored"]["created_by"]) for u in mine] == [
            ("remote", "healthy", ops.id)
        ]
        r = httpx.delete(f"{g.base_url}/v1/admin/upstreams/remote", headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 15  # the server that added it drops it too
        while (
            httpx.post(f"{a.base_url}/v1/completions", json=ask, headers=admin).status_code != 404
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert (
            httpx.delete(f"{g.base_url}/v1/admin/upstreams/remote", headers=admin).status_code
            == 404
        )
        assert [e[:2] for e in audit_of(g.base_url, ops_secret)[:2]] == [
            ("unload", r.json()["id"]),
            ("load", r.json()["id"]),
        ]
        # The gateway holds no version, yet removes one from the registry: the server drops it.
        gone = httpx.delete(f"{g.base_url}/v1/admin/models/{MODEL_NAME}", headers=admin)
        assert gone.status_code == 200, gone.text
        assert [u["id"] for u in gone.json()["data"]] == [f"{MODEL_NAME}:1"]
        wait_for(a.base_url, f"{MODEL_NAME}:1", ops_secret, "not_loaded")
        assert httpx.get(f"{a.base_url}/ready").status_code == 200
        twice = httpx.delete(f"{g.base_url}/v1/admin/models/{MODEL_NAME}", headers=admin)
        assert twice.status_code == 404, twice.text
