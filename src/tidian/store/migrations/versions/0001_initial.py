"""The first ledger: runs, stages, candidates, per-seed results.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("finished", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("directory", sa.Text(), nullable=False),
        sa.Column("incumbent_id", sa.Integer(), nullable=True),
        sa.Column("pareto", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_table(
        "stages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("incumbent_before", sa.Integer(), nullable=True),
        sa.Column("incumbent_after", sa.Integer(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.UniqueConstraint("run_id", "position"),
    )
    op.create_index("ix_stages_run_id", "stages", ["run_id"])
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("stage_position", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("label", sa.String(400), nullable=False),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("candidates.id"), nullable=True),
        sa.Column("model", sa.JSON(), nullable=False),
        sa.Column("train", sa.JSON(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=True),
        sa.Column("cost", sa.JSON(), nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("gate", sa.JSON(), nullable=True),
        sa.Column("artifact", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("run_id", "stage_position", "label"),
    )
    op.create_index("ix_candidates_run_id", "candidates", ["run_id"])
    op.create_table(
        "seed_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "candidate_id",
            sa.Integer(),
            sa.ForeignKey("candidates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.UniqueConstraint("candidate_id", "seed"),
    )
    op.create_index("ix_seed_results_candidate_id", "seed_results", ["candidate_id"])


def downgrade() -> None:
    for table in ("seed_results", "candidates", "stages", "runs"):
        op.drop_table(table)
