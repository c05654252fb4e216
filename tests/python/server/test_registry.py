"""Several models and versions in one server: the models file, routing
(pinned, canary, least outstanding), the admission bound, and loading and
unloading versions while traffic runs."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelbench.config import ModelConfig, Settings
from modelbench.server.errors import APIError
from modelbench.server.registry import ModelRegistry, ModelState

from ..tiny_models import build_tiny_model
from .conftest import (
    KV_CACHE_MEMORY,
    MAX_MODEL_LEN,
    RunningServer,
    free_port,
    run_server,
    wait_for_load,
)


@pytest.fixture(scope="module")
def gpt2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("gpt2", tmp_path_factory.mktemp("registry") / "gpt2")


@pytest.fixture(scope="module")
def multi(
    tiny_llama_path: Path, gpt2_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    engine = f"max_model_len = {MAX_MODEL_LEN}\nkv_cache_memory = {KV_CACHE_MEMORY}\n"
    models = tmp_path_factory.mktemp("registry") / "models.toml"
    models.write_text(f"""
[[models]]
name = "chat"
version = "1"
path = "{tiny_llama_path}"
default = true
weight = 90
{engine}
[[models]]
name = "chat"
version = "2"
path = "{tiny_llama_path}"
weight = 10
{engine}
[[models]]
name = "gpt"
path = "{gpt2_path}"
tasks = ["generate"]
{engine}
[routing]
chat = "canary"
""")
    # Seeded canary routing: the split below is the same on every run.
    registry = ModelRegistry(rng=random.Random(20240601))
    settings = Settings(
        models_file=models,
        port=free_port(),
        allow_open_admin=True,  # no keys here: admin routes from loopback (test_admin_lockdown)
        model_dirs=[tiny_llama_path.parent],
    )
    with run_server(settings, tiny_llama_path, registry) as running:
        yield running


def complete(http: httpx.Client, model: str, **extra: object) -> httpx.Response:
    return http.post(
        "/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 1, **extra}
    )


def test_models_lists_names_then_versions(multi: RunningServer) -> None:
    data = httpx.get(multi.base_url + "/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["chat", "gpt", "chat:1", "chat:2", "gpt:1"]
    by_id = {m["id"]: m for m in data}
    assert by_id["chat"]["routing"] == "canary" and by_id["gpt"]["tasks"] == ["generate"]
    assert by_id["chat:1"]["default"] is True and by_id["chat:2"]["weight"] == 10
    assert by_id["gpt:1"]["state"] == "ready" and by_id["gpt:1"]["max_model_len"] == MAX_MODEL_LEN


def test_canary_split_over_1000_requests(multi: RunningServer) -> None:
    with httpx.Client(base_url=multi.base_url, timeout=30) as http:
        used = Counter(complete(http, "chat").json()["model"] for _ in range(1000))
    assert set(used) == {"chat:1", "chat:2"}
    # 90/10 over 1000: chat:2 serves 100 on average with a standard deviation
    # of sqrt(1000 * 0.1 * 0.9) = 9.5; +-38 is 4 of them (routing is seeded, so
    # the count is also the same on every run).
    assert abs(used["chat:2"] - 100) <= 38, used


def test_a_version_pins_and_names_route_independently(multi: RunningServer) -> None:
    with httpx.Client(base_url=multi.base_url, timeout=30) as http:
        assert {complete(http, "chat:2").json()["model"] for _ in range(20)} == {"chat:2"}
        assert complete(http, "gpt").json()["model"] == "gpt:1"
        r = complete(http, "chat:7")
        assert r.status_code == 404 and "chat:1" in r.json()["error"]["message"]


def test_load_and_unload_while_traffic_runs(multi: RunningServer, tiny_llama_path: Path) -> None:
    failures: list[str] = []
    served = Counter()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=multi.base_url, timeout=60) as http:
            while not stop.is_set():
                for model in ("gpt", "chat:1"):
                    r = complete(http, model)
                    served[model] += 1
                    if r.status_code != 200:
                        failures.append(f"{model}: {r.status_code} {r.text}")

    threads = [threading.Thread(target=traffic) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=multi.base_url, timeout=120) as http:
            r = http.post(
                "/v1/admin/models",
                json={
                    "name": "chat",
                    "version": "3",
                    "path": str(tiny_llama_path),
                    "weight": 0,
                    "max_model_len": MAX_MODEL_LEN,
                    "kv_cache_memory": KV_CACHE_MEMORY,
                },
            )
            assert r.status_code == 202, r.text
            assert r.json()["id"] == "chat:3" and r.json()["state"] == "loading"
            wait_for_load(http, r)
            assert complete(http, "chat:3").json()["model"] == "chat:3"
            # weight 0: the canary never picks it for the bare name
            assert {complete(http, "chat").json()["model"] for _ in range(50)} <= {
                "chat:1",
                "chat:2",
            }

            # unloading waits for the version's stream in flight, which ends normally
            body = {
                "model": "chat:3",
                "prompt": "hi",
                "max_tokens": 120,
                "stream": True,
                "ignore_eos": True,
            }
            with http.stream("POST", "/v1/completions", json=body) as stream:
                lines = stream.iter_lines()
                next(line for line in lines if line.startswith("data: "))
                unloading = threading.Thread(
                    target=lambda: (
                        failures.append("unload")
                        if httpx.delete(
                            multi.base_url + "/v1/admin/models/chat:3", timeout=60
                        ).status_code
                        != 200
                        else None
                    )
                )
                unloading.start()
                rest = list(lines)
            unloading.join()
            assert rest[-2:] == ["data: [DONE]", ""] or "data: [DONE]" in rest
            assert '"finish_reason":"length"' in "".join(rest)
            assert complete(http, "chat:3").status_code == 404

            r = http.delete("/v1/admin/models/chat:2")
            assert r.status_code == 200 and r.json()["id"] == "chat:2"
            assert {complete(http, "chat").json()["model"] for _ in range(30)} == {"chat:1"}
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and served["gpt"] > 0 and served["chat:1"] > 0


def test_admin_errors(multi: RunningServer, tiny_llama_path: Path) -> None:
    with httpx.Client(base_url=multi.base_url, timeout=60) as http:
        r = http.post(
            "/v1/admin/models", json={"name": "chat", "version": "1", "path": str(tiny_llama_path)}
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "model_exists"
        r = http.post(
            "/v1/admin/models",
            json={
                "name": "x",
                "path": str(tiny_llama_path.parent / "nowhere"),
                "kv_cache_memory": KV_CACHE_MEMORY,
            },
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "path"
        assert "nowhere" in r.json()["error"]["message"]
        assert "x:1" not in [m["id"] for m in http.get("/v1/models").json()["data"]]
        r = http.post("/v1/admin/models", json={"name": "x", "colour": "blue"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "colour"
        r = http.post("/v1/admin/models", json={"name": "x", "tasks": ["juggle"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tasks"
        r = http.delete("/v1/admin/models/no such!")
        assert r.status_code == 400 and "name a model" in r.json()["error"]["message"]
        r = http.delete("/v1/admin/models/nope")  # a name none of whose versions is here
        assert r.status_code == 404
        r = http.delete("/v1/admin/models/nope:1")
        assert r.status_code == 404


# ---- routing policies and admission, without engines ----------------------


def ready_registry(*configs: ModelConfig, **kwargs: object) -> ModelRegistry:
    registry = ModelRegistry(**kwargs)  # type: ignore[arg-type]
    for config in configs:
        registry.add(config).state = ModelState.READY
    return registry


def test_pinned_goes_to_the_default_version() -> None:
    registry = ready_registry(
        ModelConfig(name="m", version="1"), ModelConfig(name="m", version="2", default=True)
    )
    assert {registry.resolve("m").id for _ in range(20)} == {"m:2"}
    registry = ready_registry(
        ModelConfig(name="m", version="1"), ModelConfig(name="m", version="2")
    )
    assert registry.resolve("m").id == "m:1"  # no default declared: the first loaded


def test_least_outstanding() -> None:
    registry = ready_registry(
        ModelConfig(name="m", version="1"), ModelConfig(name="m", version="2")
    )
    registry.set_policy("m", "least_outstanding")
    first = registry.resolve("m")
    registry.admit(first)
    second = registry.resolve("m")
    assert second is not first
    registry.admit(second)
    registry.admit(second)
    assert registry.resolve("m") is first
    first.end()
    second.end()
    second.end()


def test_canary_weights_are_shares() -> None:
    registry = ready_registry(
        ModelConfig(name="m", version="a", weight=3),
        ModelConfig(name="m", version="b", weight=1),
        rng=random.Random(0),
    )
    registry.set_policy("m", "canary")
    used = Counter(registry.resolve("m").version for _ in range(4000))
    assert abs(used["b"] - 1000) < 150, used


def test_tasks_limit_the_candidates() -> None:
    registry = ready_registry(
        ModelConfig(name="m", version="1", tasks=["generate"]),
        ModelConfig(name="m", version="2", tasks=["embed"]),
    )
    assert registry.resolve("m", "embed").id == "m:2"
    assert registry.resolve("m", "generate").id == "m:1"
    with pytest.raises(APIError) as err:
        registry.resolve("m:1", "embed")
    assert (
        err.value.status_code == 400 and "embed" in err.value.message and err.value.param == "task"
    )


def test_admission_is_bounded() -> None:
    registry = ready_registry(ModelConfig(name="m", max_num_seqs=2), max_queue=3)
    handle = registry.resolve("m")
    for _ in range(5):
        registry.admit(handle)
    with pytest.raises(APIError) as err:
        registry.admit(handle)
    assert err.value.status_code == 429 and err.value.headers == {"Retry-After": "1"}
    handle.end()
    registry.admit(handle)  # room again
