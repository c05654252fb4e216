"""Migrations up and down on SQLite and PostgreSQL, and the schema they build
equals the tables the code declares."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from modelbench.db import current_revision, downgrade, head_revision, make_engine, upgrade
from modelbench.db.tables import Base

TABLES = {
    "requests",
    "batches",
    "jobs",
    "bench_runs",
    "bench_requests",
    "eval_runs",
    "eval_results",
    "model_versions",
    "admin_audit",
}


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_up_down_up(database_url: str) -> None:
    assert current_revision(database_url) is None
    upgrade(database_url)
    assert current_revision(database_url) == head_revision()
    assert table_names(database_url) == TABLES
    downgrade(database_url, "base")
    assert current_revision(database_url) is None and table_names(database_url) == set()
    upgrade(database_url)
    upgrade(database_url)  # a second upgrade is a no-op
    assert current_revision(database_url) == head_revision()


def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], (
        "the tables changed without a migration: add one under db/migrations/versions"
    )


def test_cli(sqlite_url: str) -> None:
    def db(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "modelbench", "db", *args, "--url", sqlite_url],
            capture_output=True,
            text=True,
        )

    out = db("upgrade")
    assert out.returncode == 0 and f"at revision {head_revision()}" in out.stdout
    out = db("downgrade", "base")
    assert out.returncode == 0 and "none (empty)" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "modelbench", "db", "upgrade", "--url", "mysql://h/d"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "postgresql+psycopg" in bad.stderr


@pytest.mark.parametrize(
    "url, message",
    [
        ("nonsense", "not a database URL"),
        ("oracle://h/d", "oracle is not supported"),
        ("postgresql+asyncpg://h/d", "psycopg driver"),
    ],
)
def test_bad_urls_say_how_to_fix(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        upgrade(url)
