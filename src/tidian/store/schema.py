"""The ledger's tables (SQLAlchemy 2 ORM). Changes here need an Alembic migration beside
them (``store/migrations/versions``); a test checks that the two agree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# tidian's own Alembic version table: Optuna keeps its studies in the same database (so
# optuna-dashboard can read them) and uses Alembic's default "alembic_version" itself.
VERSION_TABLE = "tidian_alembic_version"


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime)
    finished: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # running | finished | failed | interrupted
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    directory: Mapped[str] = mapped_column(Text)
    incumbent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pareto: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # versions, CPU, threads, command line (tidian.environment); None for older runs
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # the process driving the run (host, pid, start time) and its last sign of life, stamped
    # every store.HEARTBEAT_SECONDS while it runs; None for runs of older versions
    driver: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    heartbeat: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the headline: the final path and the baseline on fresh seeds, scored on the holdout
    # (pipeline._Run.confirm); None before it ran and for runs of older versions
    confirmation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class StageRow(Base):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("run_id", "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # running | finished
    incumbent_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    incumbent_after: Mapped[int | None] = mapped_column(Integer, nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class CandidateRow(Base):
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("run_id", "stage_position", "label"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    stage_position: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(400))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), nullable=True)
    model: Mapped[dict[str, Any]] = mapped_column(JSON)
    train: Mapped[dict[str, Any]] = mapped_column(JSON)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    # steps applied to the parent's trained weights; None: trained from scratch
    transform: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # running | done
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cost: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    artifact: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(DateTime)


class SeedResultRow(Base):
    __tablename__ = "seed_results"
    __table_args__ = (UniqueConstraint("candidate_id", "seed"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    seed: Mapped[int] = mapped_column(Integer)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    history: Mapped[dict[str, Any]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)
    # {metric: pseudo-values per test-row group} (metrics.row_pseudo_values); None: not kept
    rows: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
