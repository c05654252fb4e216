"""The admin routes locked down, against a real server: an admin key always
(403 with no keys unless --allow-open-admin on loopback), models only from
MODELBENCH_MODEL_DIRS (or the default model), every field checked before a
weight is read, a load that would not fit refused with the numbers, loads in
the background (202, then poll), and /ready honest about what serves."""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelbench.config import Settings
from modelbench.server.keys import KeyStore

from .conftest import (
    KV_CACHE_MEMORY,
    MAX_MODEL_LEN,
    MODEL_NAME,
    RunningServer,
    free_port,
    run_server,
)

ENGINE = {"max_model_len": MAX_MODEL_LEN, "kv_cache_memory": KV_CACHE_MEMORY}


class Keys:
    def __init__(self, path: Path) -> None:
        store = KeyStore(path)
        self.admin = store.create("ops", admin=True)[1]
        self.user = store.create("app")[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_path: Path) -> Path:
    """The one folder admin loads may take models from, holding a copy of the
    tiny model as ``llama``."""
    root = tmp_path_factory.mktemp("model_dir")
    (root / "llama").mkdir()
    for file in tiny_llama_path.iterdir():
        (root / "llama" / file.name).write_bytes(file.read_bytes())
    return root


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama_path: Path, model_dir: Path
) -> Iterator[tuple[RunningServer, Keys]]:
    root = tmp_path_factory.mktemp("admin_keyed")
    keys = Keys(root / "keys.json")
    settings = Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        port=free_port(),
        keys_file=root / "keys.json",
        model_dirs=[model_dir],
        database_url=f"sqlite:///{root / 'store.db'}",
        **ENGINE,
    )
    with run_server(settings, tiny_llama_path) as running:
        yield running, keys


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def load_body(**fields: object) -> dict[str, object]:
    return {"name": "extra", **ENGINE, **fields}


def wait_loaded(http: httpx.Client, url: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = http.get(url).json()
        if status["state"] != "loading" or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def rss_bytes() -> int:
    """This process's resident memory: the server runs in it, in a thread."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_no_keys_disables_admin_routes(tiny_llama_path: Path, tmp_path: Path) -> None:
    settings = Settings(
        model=str(tiny_llama_path),
        served_model_name=MODEL_NAME,
        port=free_port(),
        keys_file=tmp_path / "keys.json",
        model_dirs=[tiny_llama_path.parent],
        **ENGINE,
    )
    with run_server(settings, tiny_llama_path) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            for method, path, body in (
                ("POST", "/v1/admin/models", load_body(path=str(tiny_llama_path))),
                ("DELETE", f"/v1/admin/models/{MODEL_NAME}:1", None),
                ("GET", f"/v1/admin/models/{MODEL_NAME}:1", None),
            ):
                r = http.request(method, path, json=body)
                error = r.json()["error"]
                assert r.status_code == 403 and error["code"] == "admin_disabled", r.text
                assert "modelbench keys create" in error["message"]
                assert "--admin" in error["message"] and "--allow-open-admin" in error["message"]
            ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
            assert ids == [MODEL_NAME, f"{MODEL_NAME}:1"]  # nothing loaded, nothing unloaded
            assert http.get("/ready").status_code == 200
            r = http.post(
                "/v1/completions", json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 1}
            )
            assert r.status_code == 200


def test_a_plain_key_is_refused(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        r = http.post("/v1/admin/models", json=load_body(path="llama"), headers=bearer(keys.user))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert "not an admin key" in r.json()["error"]["message"]
        assert http.post("/v1/admin/models", json=load_body(path="llama")).status_code == 401
        assert server.registry.get("extra:1") is None


def test_admin_load_answers_202_then_serves(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    admin = bearer(keys.admin)
    with httpx.Client(base_url=server.base_url, timeout=60, headers=admin) as http:
        r = http.post("/v1/admin/models", json=load_body(path="llama", routing="least_outstanding"))
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["id"] == "extra:1" and body["state"] == "loading"
        assert body["status_url"] == "/v1/admin/models/extra:1"
        assert r.headers["location"] == body["status_url"] and body["declared"] is False
        memory = body["memory"]
        assert memory["num_parameters"] > 0 and memory["kv_cache_bytes"] == KV_CACHE_MEMORY
        assert memory["peak_bytes"] <= memory["available_bytes"]

        status = wait_loaded(http, body["status_url"])
        assert status["state"] == "ready" and status["error"] is None, status
        assert status["model"]["id"] == "extra:1" and status["load_seconds"] > 0
        r = http.post("/v1/completions", json={"model": "extra", "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["model"] == "extra:1"
        assert http.get("/ready").status_code == 200

        # the same version again is a 409; the declared version's status is there too
        r = http.post("/v1/admin/models", json=load_body(path="llama"))
        assert r.status_code == 409 and r.json()["error"]["code"] == "model_exists"
        declared = http.get(f"/v1/admin/models/{MODEL_NAME}:1").json()
        assert declared["state"] == "ready" and declared["declared"] is True
        assert http.get("/v1/admin/models/nope:1").status_code == 404
        r = http.get("/v1/admin/models/no-version")  # a name: its versions, of which none
        assert r.status_code == 404 and r.json()["error"]["param"] == "model_id"
        r = http.get(f"/v1/admin/models/{MODEL_NAME}")
        assert [v["id"] for v in r.json()["data"]] == [f"{MODEL_NAME}:1", "extra:1"][:1]
        r = http.get("/v1/admin/models/bad name!")
        assert r.status_code == 400 and r.json()["error"]["param"] == "model_id"

        r = http.delete("/v1/admin/models/extra:1")
        assert r.status_code == 200 and r.json()["id"] == "extra:1"
        assert http.get("/v1/admin/models/extra:1").status_code == 404


def test_a_failed_load_says_why_and_can_be_retried(
    keyed: tuple[RunningServer, Keys], model_dir: Path
) -> None:
    server, keys = keyed
    broken = model_dir / "broken"
    broken.mkdir()
    for file in (model_dir / "llama").iterdir():
        if file.name != "model.safetensors":
            (broken / file.name).write_bytes(file.read_bytes())
    # a header that promises a tensor the file does not hold: the estimate
    # passes, the load itself fails
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    (broken / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with httpx.Client(base_url=server.base_url, timeout=60, headers=bearer(keys.admin)) as http:
        r = http.post("/v1/admin/models", json=load_body(name="broken", path="broken"))
        assert r.status_code == 202, r.text
        status = wait_loaded(http, r.json()["status_url"])
        assert status["state"] == "failed" and "model.safetensors" in status["error"], status
        assert http.get("/ready").status_code == 200  # an admin's failed load leaves it serving
        r = http.post("/v1/admin/models", json=load_body(name="broken", path="llama"))
        assert r.status_code == 202, r.text  # the failed version may be loaded again
        assert wait_loaded(http, r.json()["status_url"])["state"] == "ready"
        assert http.delete("/v1/admin/models/broken:1").status_code == 200


def test_paths_outside_the_model_dirs_are_refused_unread(
    keyed: tuple[RunningServer, Keys], model_dir: Path, tmp_path: Path
) -> None:
    """Outside paths get the same 403 whether they exist or not, and the
    server never opens them: their weights are FIFOs, which a read would wait
    on forever (the client's 10 s timeout would then fail the test)."""
    server, keys = keyed
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        os.mkfifo(outside / name)
    (model_dir / "escape").symlink_to(outside)
    refused = {
        str(outside): "path",
        "/etc": "path",
        "/no/such/folder": "path",
        f"{model_dir}/../{outside.parent.name}/outside": "path",
        "../../../../etc": "path",
        "escape": "path",  # inside by name, outside once the symlink is followed
        f"{model_dir}/escape/config.json": "path",
    }
    messages = set()
    with httpx.Client(base_url=server.base_url, timeout=10, headers=bearer(keys.admin)) as http:
        for path, param in refused.items():
            r = http.post("/v1/admin/models", json=load_body(path=path))
            error = r.json()["error"]
            assert r.status_code == 403 and error["param"] == param, (path, r.text)
            assert error["code"] == "path_not_allowed" and str(model_dir) in error["message"]
            messages.add(error["message"].replace(repr(path), "PATH"))
        r = http.post(
            "/v1/admin/models", json=load_body(path="llama", generation_config=str(outside))
        )
        assert r.status_code == 403 and r.json()["error"]["param"] == "generation_config"
        # inside the folder, a path that holds no model is a 400 naming it
        r = http.post("/v1/admin/models", json=load_body(path="nothing-here"))
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_load_failed"
        assert str(model_dir / "nothing-here") in r.json()["error"]["message"]
        r = http.post("/v1/admin/models", json=load_body(path="llama", generation_config="nothing"))
        error = r.json()["error"]
        assert r.status_code == 400 and error["code"] == "model_load_failed", r.text
        assert error["param"] == "generation_config" and "is not a folder" in error["message"]
    assert len(messages) == 1, messages  # nothing tells an existing path from a missing one
    assert server.registry.get("extra:1") is None


JUNK = [
    ({"name": "x y"}, "name"),
    ({"name": "évil"}, "name"),
    ({"name": "a:b"}, "name"),
    ({"name": "../etc"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 600}, "name"),
    ({"name": "ok", "version": "1 2"}, "version"),
    ({"name": "ok", "max_num_seqs": "4"}, "max_num_seqs"),
    ({"name": "ok", "max_model_len": 0}, "max_model_len"),
    ({"name": "ok", "kv_cache_memory": 1.5}, "kv_cache_memory"),
    ({"name": "ok", "tasks": ["generate", "generate"]}, "tasks"),
    ({"name": "ok", "tasks": ["juggle"]}, "tasks"),
    ({"name": "ok", "dtype": "int4"}, "dtype"),
    ({"name": "ok", "dtype": "float16"}, "dtype"),  # CUDA's; admin loads run on the CPU
    ({"name": "ok", "kv_cache_dtype": "float32"}, "kv_cache_dtype"),
    ({"name": "ok", "routing": "random"}, "routing"),
    ({"name": "ok", "colour": "blue"}, "colour"),
    ({"name": "ok", "path": "a\u0000b"}, "path"),
    (
        {"name": "ok", "override_generation_config": {"temperature": -1}},
        "override_generation_config",
    ),
    ({"name": "ok", "override_generation_config": {"colour": 1}}, "override_generation_config"),
]


def test_junk_is_a_400_before_any_load(keyed: tuple[RunningServer, Keys]) -> None:
    """Each body would load the default model (no path) if it got that far:
    6 s and 1 GB here. They are all refused in milliseconds, and the
    process's memory does not move."""
    server, keys = keyed
    before = rss_bytes()
    with httpx.Client(base_url=server.base_url, timeout=30, headers=bearer(keys.admin)) as http:
        for body, param in JUNK:
            started = time.perf_counter()
            r = http.post("/v1/admin/models", json=body)
            took = time.perf_counter() - started
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["param"] == param, (body, r.json())
            assert took < 1.0, (body, took)
        r = http.post(
            "/v1/admin/models",
            content=b'{"name": "ok", "weight": NaN}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "weight"
    assert server.registry.loading() == [] and len(server.registry.handles()) == 1
    assert rss_bytes() - before < 200 * 2**20


def test_a_model_that_would_not_fit_is_a_409_with_the_numbers(
    keyed: tuple[RunningServer, Keys], model_dir: Path
) -> None:
    server, keys = keyed
    # weights: a safetensors header of 10^11 float32 parameters (400 GB), read
    # as the estimate reads it; the data is never there to read
    huge = model_dir / "huge"
    huge.mkdir()
    (huge / "config.json").write_bytes((model_dir / "llama" / "config.json").read_bytes())
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [100_000, 1_000_000], "data_offsets": [0, 4 * 10**11]}}
    ).encode()
    (huge / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    available = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
    with httpx.Client(base_url=server.base_url, timeout=30, headers=bearer(keys.admin)) as http:
        for fields, what in (
            ({"path": "huge"}, "100,000,000,000 parameters"),
            ({"path": "llama", "kv_cache_memory": 1 << 50}, f"{(1 << 50) / 2**20:,.0f} MiB of KV"),
        ):
            r = http.post("/v1/admin/models", json=load_body(**fields))
            error = r.json()["error"]
            assert r.status_code == 409 and error["code"] == "insufficient_memory", r.text
            assert what in error["message"], error["message"]
            said = int(
                re.search(r"and ([\d,]+) MiB is available", error["message"])[1].replace(",", "")
            )
            assert abs(said - available / 1024) < 0.2 * available / 1024, (said, available)
    assert server.registry.get("extra:1") is None
