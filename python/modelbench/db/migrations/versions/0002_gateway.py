"""The gateway's part of a request's record: the upstream that answered, the
attempts (each with the breaker state it met), and the compare call an
answer belongs to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("upstream", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("attempts", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("compare_id", sa.String(length=64), nullable=True))
        batch.create_index("ix_requests_compare_id", ["compare_id"])


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_compare_id")
        batch.drop_column("compare_id")
        batch.drop_column("attempts")
        batch.drop_column("upstream")
