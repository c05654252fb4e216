"""Alembic's environment: the URL comes from the caller (db/migrate.py), the
target metadata from db/tables.py."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from modelbench.db.connection import make_engine
from modelbench.db.tables import Base

config = context.config
url = config.attributes["database_url"]

if context.is_offline_mode():
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            # batch mode lets SQLite alter tables by copying them
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # Servers and workers starting together migrate one at a time.
                    connection.execute(text("SELECT pg_advisory_xact_lock(7426351)"))
                context.run_migrations()
    finally:
        engine.dispose()
