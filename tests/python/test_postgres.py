"""The tests' PostgreSQL (postgres.py): a throwaway cluster starts, answers
and is gone after ``stop()``; and when nothing answers at the admin URL and
no Debian cluster starts, the session's databases live in a throwaway one."""

from __future__ import annotations

import psycopg
import pytest

from . import postgres

needs_binaries = pytest.mark.skipif(
    postgres.postgres_bin_dir() is None, reason="no initdb/pg_ctl on this machine"
)


@needs_binaries
def test_a_throwaway_cluster_starts_answers_and_is_removed() -> None:
    cluster = postgres.start_throwaway_cluster()
    try:
        assert cluster.port != 5432 and (cluster.root / "data" / "PG_VERSION").exists()
        with psycopg.connect(cluster.url, autocommit=True, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            socket_dir = conn.execute("SHOW unix_socket_directories").fetchone()[0]
            assert socket_dir == str(cluster.root)
            conn.execute("CREATE DATABASE scratch")
    finally:
        cluster.stop()
    assert not cluster.root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.url, connect_timeout=3)


@needs_binaries
def test_sessions_fall_back_to_a_throwaway_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    nothing_there = f"postgresql://postgres@127.0.0.1:{postgres._free_port()}/test"
    monkeypatch.setattr(postgres, "ADMIN_URL", nothing_there)
    monkeypatch.setattr(postgres, "_throwaway", None)
    monkeypatch.setattr(postgres, "_start_debian_cluster", lambda: False)
    monkeypatch.setattr(postgres.atexit, "register", lambda fn: None)  # stopped below instead
    try:
        url, name = postgres.create_database()
        cluster = postgres._throwaway
        assert cluster is not None and postgres.ADMIN_URL == cluster.url
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/{name}"
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
        postgres.drop_database(name)
    finally:
        if postgres._throwaway is not None:
            postgres._throwaway.stop()
