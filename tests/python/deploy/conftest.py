"""What the tests of deploy/ share: where the files are, the linters and
renderers they run (installed by scripts/setup.sh from the test extra;
missing, a test skips, or fails under CI=true), and one real server whose
/metrics the dashboard and the autoscaler's metric are checked against."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..server.conftest import MODEL_NAME, free_port, run_server, tiny_settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
UPSTREAM_NAME = "remote"  # the served model again, through the gateway's upstream path


def missing(message: str) -> None:
    """Skip, or under CI=true fail: CI installs every tool these tests use."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def tool(name: str, package: str) -> str:
    """The executable ``name`` (beside this Python first, then on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        missing(f"{name} is not installed: pip install {package} (scripts/setup.sh does)")
    assert found is not None
    return found


def module(name: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"{name} is not installed: pip install {package} (scripts/setup.sh does)")
        raise


@dataclass
class Exported:
    """What a server's GET /metrics holds: each sample name (``x_bucket``,
    ``x_total``, a gauge's own name) with the label names its series carry."""

    base_url: str
    labels: dict[str, set[str]]


def scrape(base_url: str) -> dict[str, set[str]]:
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


@pytest.fixture(scope="session")
def exported(
    tiny_model_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exported]:
    """A tiny-model server that is also a gateway (an upstream pointing at
    itself, so the upstream metrics exist), after a completion each way: a
    family with labels appears only once it has been observed."""
    path = tiny_model_path("llama_gqa")
    port = free_port()
    settings = tiny_settings(
        path,
        tmp_path_factory.mktemp("deploy_server"),
        port=port,
        registry="file",
        upstream=[f"{UPSTREAM_NAME}=http://127.0.0.1:{port}/v1#{MODEL_NAME}"],
    )
    with run_server(settings, path) as server:
        for model in (MODEL_NAME, UPSTREAM_NAME):
            response = httpx.post(
                f"{server.base_url}/v1/completions",
                json={"model": model, "prompt": "hello", "max_tokens": 3},
                timeout=30,
            )
            assert response.status_code == 200, response.text
        yield Exported(server.base_url, scrape(server.base_url))
