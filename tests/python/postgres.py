"""A PostgreSQL for tests: the machine's server on 127.0.0.1:5432 (started
with pg_ctlcluster when it is installed but down), or ``MODELBENCH_TEST_PG_URL``.
Each test session gets a database of its own, dropped at the end.

Under ``CI=true`` a missing PostgreSQL fails the tests instead of skipping them."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

ADMIN_URL = os.environ.get("MODELBENCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _connect() -> psycopg.Connection | None:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        return None


def _start_cluster() -> None:
    """Start the Debian cluster if one is installed (what scripts/test.sh does too)."""
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    for version in versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version.name, "main", "start"],
                       capture_output=True, check=False)


def admin_connection() -> psycopg.Connection:
    conn = _connect()
    if conn is None:
        _start_cluster()
        deadline = time.monotonic() + 30
        while conn is None and time.monotonic() < deadline:
            time.sleep(0.5)
            conn = _connect()
    if conn is None:
        message = f"no PostgreSQL at {ADMIN_URL} (start one, or set MODELBENCH_TEST_PG_URL)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return conn


def create_database() -> tuple[str, str]:
    """A new empty database; returns (its SQLAlchemy URL, its name)."""
    name = f"modelbench_test_{uuid.uuid4().hex[:12]}"
    with admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", name


def drop_database(name: str) -> None:
    with admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_connections(dbname: str, allowed: bool) -> None:
    """Take a database away from its clients (the store is down) or give it back."""
    with admin_connection() as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                         (dbname,))
