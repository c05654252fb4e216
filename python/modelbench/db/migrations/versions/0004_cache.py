"""The response cache's part of a request's record: its result (hit-exact,
hit-semantic, miss, bypass) and, for a hit, the request the answer came from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("cache_result", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("cache_source_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("cache_source_id")
        batch.drop_column("cache_result")
