"""Connecting to the store: the database URL (``MODELBENCH_DATABASE_URL``,
else an SQLite file in the user's data directory), the SQLAlchemy engine with
the settings each backend needs, and sessions."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

SUPPORTED = ("sqlite", "postgresql")


def default_database_url() -> str:
    """The embedded default: ``<user data dir>/modelbench/modelbench.db``."""
    path = platformdirs.user_data_path("modelbench") / "modelbench.db"
    return f"sqlite:///{path}"


def check_database_url(url: str) -> str:
    """The URL if modelbench can use it; ValueError saying how to fix it if not."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(
            f"database_url {url!r} is not a database URL; use sqlite:///path/to/file.db "
            "or postgresql+psycopg://user@host:5432/dbname"
        ) from exc
    if parsed.get_backend_name() not in SUPPORTED:
        raise ValueError(
            f"database_url {url!r}: {parsed.get_backend_name()} is not supported; "
            "use sqlite:///... or postgresql+psycopg://..."
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() not in (
        "psycopg",
        "psycopg2",
    ):
        raise ValueError(f"database_url {url!r}: use the psycopg driver, postgresql+psycopg://...")
    return url


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite: the folder is created, WAL journal (readers
    never wait for the writer), a busy timeout instead of "database is locked",
    foreign keys on. PostgreSQL: connections checked before use, so a restarted
    server is reconnected to. Either way a statement's parameters (prompts and
    outputs among them) are left out of the errors it raises, which get logged."""
    check_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=10, hide_parameters=True
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
