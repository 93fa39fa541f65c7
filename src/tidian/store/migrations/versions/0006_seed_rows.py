"""Seed results keep their test rows' pseudo-values (per row group, for the gated metrics), so
that a gate counts the sampling of the test set as well as the seeds', on resume too.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("seed_results") as batch:
        batch.add_column(sa.Column("rows", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("seed_results") as batch:
        batch.drop_column("rows")
