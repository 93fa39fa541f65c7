"""Runs record their driver (host, pid, start time) and a heartbeat, so a run whose driver
died without a word can be told from a live one.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("driver", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("heartbeat", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat")
        batch.drop_column("driver")
