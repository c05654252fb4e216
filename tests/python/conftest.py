"""Fixtures every test package may use: an empty database on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .postgres import create_database, drop_database


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
    file (none: open), never the user's data directory."""
    import os

    root = tmp_path_factory.mktemp("store")
    values = {"MODELBENCH_DATABASE_URL": f"sqlite:///{root / 'modelbench.db'}",
              "MODELBENCH_KEYS_FILE": str(root / "keys.json")}
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
