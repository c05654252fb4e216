"""Fixtures every test package may use: an empty database on each backend,
tiny random-weight Hugging Face folders built once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .postgres import create_database, drop_database
from .redis_server import redis_server  # noqa: F401  (a fixture: a throwaway redis-server)
from .tiny_models import build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from tests


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    url, name = create_database()
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database, once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session", autouse=True)
def store_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers the tests start (in process or as subprocesses) keep their
    records in a throwaway SQLite file and read keys from a throwaway keys
    file (none: open), never the user's data directory. Their admin loads are
    not kept in that shared file (``--registry file``), or each server after
    would load what earlier tests loaded; tests/python/server/test_registry_store.py
    runs the registry in the store on databases of its own."""
    import os

    root = tmp_path_factory.mktemp("store")
    values = {
        "MODELBENCH_DATABASE_URL": f"sqlite:///{root / 'modelbench.db'}",
        "MODELBENCH_KEYS_FILE": str(root / "keys.json"),
        "MODELBENCH_REGISTRY": "file",
    }
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_model_path(kind)``: a tiny HF folder of ``kind``, built on first use; read-only."""
    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            built[kind] = build_tiny_model(kind, root / kind)
        return built[kind]

    return get


@pytest.fixture
def tiny_model_copy(
    tiny_model_path: Callable[[str], Path], tmp_path: Path
) -> Callable[[str], Path]:
    """``tiny_model_copy(kind)``: a private copy of a tiny HF folder that a test may break."""

    def copy(kind: str) -> Path:
        return Path(shutil.copytree(tiny_model_path(kind), tmp_path / kind))

    return copy
