"""``modelbench worker`` refuses an SQLite store, before loading any model:
on SQLite the server's one in-process worker runs the jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelbench.cli.main import main
from modelbench.cli.worker import refuse_sqlite


def test_an_sqlite_url_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with pytest.raises(SystemExit) as exc:
        main(["worker", "--database-url", url, "--model", str(tmp_path / "never-loaded")])
    message = str(exc.value.code)
    assert message.startswith("modelbench worker: the store is SQLite") and url in message
    assert "one in-process worker" in message and "postgresql+psycopg://" in message
    assert not (tmp_path / "store.db").exists()  # refused before anything opened it


def test_the_default_store_is_sqlite_and_refused_too() -> None:
    # MODELBENCH_DATABASE_URL is a throwaway SQLite file in tests (conftest.py).
    out = subprocess.run(
        [sys.executable, "-m", "modelbench", "worker"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1 and "the store is SQLite" in out.stderr
    assert "Traceback" not in out.stderr


def test_postgresql_passes() -> None:
    refuse_sqlite("postgresql+psycopg://postgres@127.0.0.1:5432/jobs")
