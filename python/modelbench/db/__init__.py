"""The store: SQLAlchemy tables, connections, and Alembic migrations; SQLite
by default, PostgreSQL by URL (``MODELBENCH_DATABASE_URL``)."""

from modelbench.db.connection import (
    check_database_url,
    default_database_url,
    make_engine,
    make_sessionmaker,
)
from modelbench.db.migrate import current_revision, downgrade, head_revision, upgrade

__all__ = [
    "check_database_url",
    "current_revision",
    "default_database_url",
    "downgrade",
    "head_revision",
    "make_engine",
    "make_sessionmaker",
    "upgrade",
]
