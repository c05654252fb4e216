"""Tensor models under the registry like any version: two versions of a
classifier from a models file with canary routing (the split, pinning by
"name:version" and by the body's "version"), a third version loaded hot
through the admin API while predict traffic runs, answered by its own
network, then unloaded under traffic with no request lost."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from modelbench.config import Settings
from modelbench.server.registry import ModelRegistry

from ..predict.test_predict_engine import train
from .conftest import RunningServer, free_port, run_server, wait_for_load

X = torch.randn(8, 4, generator=torch.Generator().manual_seed(11)) * 2


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("predict_versions")
    modules = {}
    for version in ("1", "2", "3"):
        (root / version).mkdir()
        modules[version] = train(root / version / "clusters.pt", seed=int(version))
    return root, modules


@pytest.fixture(scope="module")
def served(versions: tuple[Path, dict[str, torch.nn.Module]]) -> Iterator[RunningServer]:
    root, _ = versions
    models = root / "models.toml"
    models.write_text(f"""
[[models]]
name = "clf"
version = "1"
path = "{root / "1" / "clusters.pt"}"
default = true
weight = 75

[[models]]
name = "clf"
version = "2"
path = "{root / "2" / "clusters.pt"}"
weight = 25

[routing]
clf = "canary"
""")
    settings = Settings(
        models_file=models,
        port=free_port(),
        allow_open_admin=True,  # admin routes from loopback, no keys (test_admin_lockdown)
        model_dirs=[root],
        database_url=f"sqlite:///{root / 'store.db'}",
    )
    # Seeded canary routing: the split below is the same on every run.
    with run_server(settings, root / "1", ModelRegistry(rng=random.Random(26))) as running:
        yield running


def predict(http: httpx.Client, **body: object) -> httpx.Response:
    return http.post("/v1/predict", json={"inputs": {"features": X.tolist()}, **body})


def outputs(r: httpx.Response) -> torch.Tensor:
    assert r.status_code == 200, r.text
    return torch.tensor(r.json()["outputs"]["probabilities"])


def expected(module: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return module(X)


def test_models_lists_both_versions(served: RunningServer) -> None:
    data = httpx.get(served.base_url + "/v1/models", timeout=30).json()["data"]
    by_id = {m["id"]: m for m in data}
    assert by_id["clf"]["routing"] == "canary" and by_id["clf"]["tasks"] == ["predict"]
    assert by_id["clf:1"]["default"] is True and by_id["clf:2"]["weight"] == 25
    for version in ("clf:1", "clf:2"):
        assert by_id[version]["tasks"] == ["predict"] and by_id[version]["state"] == "ready"
        assert by_id[version]["inputs"][0]["shape"] == [-1, 4]


def test_canary_split_and_each_version_answers_with_its_own_network(
    served: RunningServer, versions: tuple[Path, dict[str, torch.nn.Module]]
) -> None:
    _, modules = versions
    want = {f"clf:{v}": expected(m) for v, m in modules.items()}
    # The versions are different networks: an answer tells which one ran.
    assert not torch.allclose(want["clf:1"], want["clf:2"], atol=1e-3)
    used: Counter[str] = Counter()
    with httpx.Client(base_url=served.base_url, timeout=30) as http:
        for _ in range(400):
            r = predict(http, model="clf")
            used[r.json()["model"]] += 1
            assert torch.allclose(outputs(r), want[r.json()["model"]], atol=1e-5)
        # 75/25 over 400: clf:2 serves 100 on average, standard deviation
        # sqrt(400 * 0.25 * 0.75) = 8.7; +-35 is 4 of them (and routing is seeded).
        assert set(used) == {"clf:1", "clf:2"} and abs(used["clf:2"] - 100) <= 35, used
        pinned = predict(http, model="clf:2")
        assert pinned.json()["model"] == "clf:2"
        assert torch.allclose(outputs(pinned), want["clf:2"], atol=1e-5)
        by_field = predict(http, model="clf", version="2")
        assert by_field.json()["model"] == "clf:2"
        missing = predict(http, model="clf:9")
        assert missing.status_code == 404 and "clf:1" in missing.json()["error"]["message"]


def test_hot_load_and_unload_under_traffic(
    served: RunningServer, versions: tuple[Path, dict[str, torch.nn.Module]]
) -> None:
    root, modules = versions
    failures: list[str] = []
    answered: Counter[str] = Counter()
    stop = threading.Event()
    want1 = expected(modules["1"])

    def traffic() -> None:
        with httpx.Client(base_url=served.base_url, timeout=60) as http:
            while not stop.is_set():
                r = predict(http, model="clf:1")
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                elif not torch.allclose(outputs(r), want1, atol=1e-5):
                    failures.append("clf:1 answered with another network")
                answered["clf:1"] += 1

    threads = [threading.Thread(target=traffic) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=served.base_url, timeout=120) as http:
            r = http.post(
                "/v1/admin/models",
                json={"name": "clf", "version": "3", "path": "3/clusters.pt", "weight": 0},
            )
            assert r.status_code == 202, r.text
            assert r.json()["id"] == "clf:3"
            wait_for_load(http, r)
            card = next(m for m in http.get("/v1/models").json()["data"] if m["id"] == "clf:3")
            assert card["tasks"] == ["predict"] and card["inputs"][0]["name"] == "features"
            three = predict(http, model="clf:3")
            assert torch.allclose(outputs(three), expected(modules["3"]), atol=1e-5)
            # weight 0: the canary never picks it for the bare name
            assert {predict(http, model="clf").json()["model"] for _ in range(40)} <= {
                "clf:1",
                "clf:2",
            }

            # Unload it while its own requests are in flight: each of them is
            # answered by clf:3 or refused with 404 once it is gone, never lost.
            results: list[int] = []

            def calls() -> None:
                with httpx.Client(base_url=served.base_url, timeout=60) as client:
                    for _ in range(30):
                        results.append(predict(client, model="clf:3").status_code)

            callers = [threading.Thread(target=calls) for _ in range(2)]
            for t in callers:
                t.start()
            time.sleep(0.05)
            gone = http.delete("/v1/admin/models/clf:3")
            for t in callers:
                t.join()
            assert gone.status_code == 200 and gone.json()["id"] == "clf:3", gone.text
            assert set(results) <= {200, 404} and len(results) == 60, Counter(results)
            assert predict(http, model="clf:3").status_code == 404
            assert all(m["id"] != "clf:3" for m in http.get("/v1/models").json()["data"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and answered["clf:1"] > 0
