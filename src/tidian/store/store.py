"""The Store: the run ledger in a SQL database, weights on disk beside it.

Chosen by URL: ``sqlite:///tidian.db`` by default (a file in the working directory; nothing
to start), or ``postgresql://…`` for a team. ``TIDIAN_STORE`` sets the default URL.

Every public method is one transaction (:meth:`Store._session`): it commits whole or rolls
back whole, so a crash or SIGKILL never leaves half a candidate. A database error is raised
as :class:`StoreError` (with the transaction rolled back); an id that is not in the store as
:class:`~tidian.exceptions.DataError` naming it. Weights are written to a
temporary folder and renamed into place before the row that points at them is committed.
Methods are safe to call from one thread per Store; worker processes open their own Store.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tidian.exceptions import DataError, TidianError, require
from tidian.store.artifacts import is_remote, join, makedirs
from tidian.store.processes import process_alive, process_start
from tidian.store.schema import CandidateRow, RunRow, SeedResultRow, StageRow

DEFAULT_URL = "sqlite:///tidian.db"


# The key of the PostgreSQL advisory lock that serialises schema changes (any fixed number).
_SCHEMA_LOCK_KEY = 0x7469_6469_616E


@contextlib.contextmanager
def schema_lock(connection: Any) -> Iterator[None]:
    """Hold the database's schema lock on ``connection`` for the block: a PostgreSQL advisory
    lock, or on SQLite an exclusive transaction (other writers wait, up to the busy timeout).
    Without it, runs started together on a new store race to create the same tables."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({_SCHEMA_LOCK_KEY})")
        try:
            yield
        finally:
            connection.rollback()  # (a no-op after the block's commit)
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_SCHEMA_LOCK_KEY})")
            connection.commit()
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN EXCLUSIVE")
        yield
    else:
        yield


class StoreError(TidianError):
    """The store cannot be reached, created or written."""


# A running run's driver stamps its row this often; a run whose stamp is older than STALE_AFTER
# (or whose driver process on this host is gone) is shown as stale: its driver died without a
# word (SIGKILL, power loss, a lost node) and `tidian run --resume` may take it over.
HEARTBEAT_SECONDS = 30.0
STALE_AFTER = 120.0


def driver() -> dict[str, Any]:
    """This process as a run's driver: host, pid and start time."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": process_start(os.getpid()),
    }


def _driver_gone(who: dict[str, Any]) -> bool:
    """True when ``who`` ran on this host and that process no longer runs (or is a zombie)."""
    if who.get("host") != socket.gethostname() or not isinstance(who.get("pid"), int):
        return False
    return not process_alive(who["pid"], who.get("started"))


def stale(row: dict[str, Any], now: datetime | None = None) -> str | None:
    """Why run ``row`` (a ``runs`` row) is marked running but has no live driver, or None
    when it is not running or its driver is alive as far as can be told."""
    if row.get("status") != "running" or not row.get("driver"):
        return None  # finished, failed, interrupted, or from a version without heartbeats
    who = row["driver"]
    if _driver_gone(who):
        return f"its driver (pid {who['pid']} on {who['host']}) is gone"
    beat = row.get("heartbeat")
    age = ((now or _now()) - beat).total_seconds() if beat else None
    if age is not None and age > STALE_AFTER:
        return f"no heartbeat from {who.get('host')} for {_duration(age)}"
    return None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def default_url() -> str:
    return os.environ.get("TIDIAN_STORE", DEFAULT_URL)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _row(obj: Any) -> dict[str, Any]:
    return {c.name: getattr(obj, c.name) for c in obj.__table__.columns}


class Store:
    """A ledger at ``url``; ``artifacts`` is where weights go: a folder or a URL
    (``store.artifacts``; default ``$TIDIAN_ARTIFACTS``, else ``tidian-runs`` beside a SQLite
    file, else ``./tidian-runs``)."""

    def __init__(self, url: str | None = None, *, artifacts: str | Path | None = None) -> None:
        url = url or default_url()
        if url.startswith(("postgresql://", "postgres://")):  # the maintained driver, psycopg 3
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.url = url
        if url.startswith("postgresql+psycopg"):
            require("psycopg", "postgres", "a PostgreSQL store")
        try:
            self.engine = self._engine(self.url)
            for attempt in range(8):
                try:
                    with self.schema_lock() as connection:
                        self._migrate(connection)
                    break
                except OperationalError as err:
                    # SQLite answers "locked" at once, busy timeout or not, when a connection
                    # switches to WAL while another holds the schema lock: safe to try again.
                    if "locked" not in str(err) or attempt == 7:
                        raise
                    time.sleep(0.05 * 2**attempt)
        except SQLAlchemyError as err:
            raise StoreError(
                f"cannot open the store {self._safe_url()}: "
                f"{type(err).__name__}: {err.args[0] if err.args else err}. "
                "Check the URL (--store or TIDIAN_STORE) and that the database "
                "is reachable and writable."
            ) from None
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        artifacts = artifacts or os.environ.get("TIDIAN_ARTIFACTS") or None
        if artifacts is None:
            database = (
                self.engine.url.database if self.engine.url.get_backend_name() == "sqlite" else None
            )
            base = (
                Path(database).resolve().parent
                if database and database != ":memory:"
                else Path.cwd()
            )
            artifacts = base / "tidian-runs"
        self.artifacts: str | Path = artifacts if is_remote(artifacts) else Path(artifacts)

    def display_url(self) -> str:
        """The URL with any password hidden (for messages and pages)."""
        return self._safe_url().strip("'")

    def _safe_url(self) -> str:
        try:
            from sqlalchemy.engine import make_url

            return repr(make_url(self.url).render_as_string(hide_password=True))
        except Exception:
            return "(unparsable URL)"

    @staticmethod
    def _engine(url: str) -> Engine:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                folder = Path(path).resolve().parent
                if not folder.is_dir():
                    raise StoreError(
                        f"cannot create the SQLite store {path!r}: folder "
                        f"{str(folder)!r} does not exist."
                    )
                if not os.access(folder, os.W_OK):
                    raise StoreError(
                        f"cannot create the SQLite store {path!r}: folder "
                        f"{str(folder)!r} is not writable."
                    )
            engine = create_engine(url, connect_args={"timeout": 60})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                # WAL lets readers work while a writer commits; foreign keys are off by default.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA busy_timeout=60000")
                cursor.close()

            return engine
        return create_engine(url, pool_pre_ping=True)

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[Any]:
        """A connection holding the store's schema lock for the block: what creates tables
        in this database (tidian's migrations, Optuna's schema) does it inside, so that runs
        started together on a new store create them once."""
        with self.engine.connect() as connection, schema_lock(connection):
            yield connection
            connection.commit()

    @staticmethod
    def _migrate(connection) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        session = self.sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as err:
            session.rollback()
            raise StoreError(f"store write failed ({type(err).__name__}): {err}") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- runs ----------------------------------------------------------------------------------
    def create_run(self, recipe: dict[str, Any], environment: dict[str, Any] | None = None) -> str:
        """Add a run (status ``running``) with its recipe and environment, and make its
        artifacts folder; returns the new run id. Writes one ``runs`` row. Raises StoreError
        when the folder or the row cannot be written (the folder is made first)."""
        run_id = uuid.uuid4().hex[:12]
        directory = join(self.artifacts, run_id)
        try:
            makedirs(directory)
        except (OSError, TidianError) as err:
            raise StoreError(f"cannot create the run folder {str(directory)!r}: {err}") from None
        with self._session() as s:
            s.add(
                RunRow(
                    id=run_id,
                    created=_now(),
                    status="running",
                    recipe=recipe,
                    directory=str(directory),
                    environment=environment,
                    driver=driver(),
                    heartbeat=_now(),
                )
            )
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        """The ``runs`` row of ``run_id`` as a dict. Writes nothing. Raises DataError naming
        recent runs when there is no such run."""
        with self._session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                recent = s.scalars(select(RunRow.id).order_by(RunRow.created.desc()).limit(5))
                recent = list(recent)
                listed = (
                    f"recent runs: {', '.join(recent)}" if recent else "the store has no runs yet"
                )
                raise DataError(
                    f"no run {run_id!r} in {self._safe_url()}; {listed} "
                    "(`tidian runs` lists them all)."
                )
            return _row(row)

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first. Writes nothing."""
        with self._session() as s:
            return [_row(r) for r in s.scalars(select(RunRow).order_by(RunRow.created))]

    def take_over(self, run_id: str) -> None:
        """Make this process the driver of run ``run_id`` (a resume): status ``running``, no
        error, this host and pid, a fresh heartbeat."""
        self.update_run(run_id, status="running", error=None, driver=driver(), heartbeat=_now())

    @contextlib.contextmanager
    def heartbeat(self, run_id: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Stamp run ``run_id``'s heartbeat every ``every`` seconds while the block runs, from
        a thread with its own connection. A stamp that fails is retried at the next beat: a
        busy or briefly unreachable database never fails the run."""
        done = threading.Event()
        engine = self._engine(self.url)

        def beat() -> None:
            while not done.wait(every):
                try:
                    with engine.begin() as connection:
                        connection.execute(
                            RunRow.__table__.update()
                            .where(RunRow.id == run_id, RunRow.status == "running")
                            .values(heartbeat=_now())
                        )
                except SQLAlchemyError:
                    continue

        thread = threading.Thread(target=beat, name=f"tidian-heartbeat-{run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            engine.dispose()

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set columns of run ``run_id`` (status, incumbent_id, pareto, error…) in one
        transaction; a final status (finished, failed, interrupted) also stamps ``finished``.
        Raises DataError for an unknown run."""
        with self._session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise DataError(f"no run {run_id!r} in {self._safe_url()}.")
            for key, value in fields.items():
                setattr(row, key, value)
            if fields.get("status") in ("finished", "failed", "interrupted"):
                row.finished = _now()

    # -- stages --------------------------------------------------------------------------------
    def stage(
        self, run_id: str, position: int, name: str, config: dict[str, Any], incumbent: int | None
    ) -> dict[str, Any]:
        """The stage row at ``position``, created if new (resume finds the existing one, and
        records the incumbent it starts from now: a run the time limit cut may have changed
        it by training what the limit left out): writes at most one ``stages`` row."""
        with self._session() as s:
            row = s.scalar(
                select(StageRow).where(StageRow.run_id == run_id, StageRow.position == position)
            )
            if row is not None:
                row.incumbent_before = incumbent
            else:
                row = StageRow(
                    run_id=run_id,
                    position=position,
                    name=name,
                    config=config,
                    status="running",
                    incumbent_before=incumbent,
                )
                s.add(row)
                s.flush()
            return _row(row)

    def finish_stage(
        self,
        run_id: str,
        position: int,
        incumbent: int | None,
        report: dict[str, Any] | None = None,
    ) -> None:
        """Mark the stage at ``position`` finished with the incumbent after it and its report
        (one row updated; a report given, even empty, replaces the one a stage finished
        before left, as a resumed stage's own does). Raises DataError when the stage was never
        started."""
        with self._session() as s:
            row = s.scalar(
                select(StageRow).where(StageRow.run_id == run_id, StageRow.position == position)
            )
            if row is None:
                raise DataError(f"run {run_id!r} has no stage at position {position}.")
            row.status, row.incumbent_after = "finished", incumbent
            if report is not None:
                row.report = report or None

    def stages(self, run_id: str) -> list[dict[str, Any]]:
        """The stage rows of a run in recipe order (the baseline is position 0). Writes
        nothing."""
        with self._session() as s:
            rows = s.scalars(
                select(StageRow).where(StageRow.run_id == run_id).order_by(StageRow.position)
            )
            return [_row(r) for r in rows]

    # -- candidates ----------------------------------------------------------------------------
    def candidate(
        self,
        run_id: str,
        position: int,
        stage: str,
        label: str,
        parent: int | None,
        model: dict[str, Any],
        train: dict[str, Any],
        changes: dict[str, Any],
        transform: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The candidate row for (run, stage position, label), created if new with status
        ``running`` (resume finds the existing one): writes at most one ``candidates`` row.
        ``transform``: the steps applied to the parent's weights (None: trained anew)."""
        with self._session() as s:
            row = s.scalar(
                select(CandidateRow).where(
                    CandidateRow.run_id == run_id,
                    CandidateRow.stage_position == position,
                    CandidateRow.label == label,
                )
            )
            if row is None:
                row = CandidateRow(
                    run_id=run_id,
                    stage_position=position,
                    stage=stage,
                    label=label,
                    parent_id=parent,
                    model=model,
                    train=train,
                    changes=changes,
                    transform=transform,
                    status="running",
                    created=_now(),
                )
                s.add(row)
                s.flush()
            return _row(row)

    def get_candidate(self, candidate_id: int) -> dict[str, Any]:
        """The candidate row ``candidate_id``. Writes nothing; raises DataError when there is
        no such candidate."""
        with self._session() as s:
            row = s.get(CandidateRow, candidate_id)
            if row is None:
                raise DataError(f"no candidate {candidate_id} in {self._safe_url()}.")
            return _row(row)

    def candidates(self, run_id: str) -> list[dict[str, Any]]:
        """A run's candidates in the order they were made (by id). Writes nothing."""
        with self._session() as s:
            rows = s.scalars(
                select(CandidateRow).where(CandidateRow.run_id == run_id).order_by(CandidateRow.id)
            )
            return [_row(r) for r in rows]

    def update_candidate(self, candidate_id: int, **fields: Any) -> None:
        """Set columns of a candidate (status, quality, cost, artifact, decision, reason,
        gate) in one transaction. Raises DataError for an unknown candidate."""
        with self._session() as s:
            row = s.get(CandidateRow, candidate_id)
            if row is None:
                raise DataError(f"no candidate {candidate_id} in {self._safe_url()}.")
            for key, value in fields.items():
                setattr(row, key, value)

    # -- per-seed results ----------------------------------------------------------------------
    def add_seed_result(
        self,
        candidate_id: int,
        seed: int,
        scores: dict[str, Any],
        history: dict[str, Any],
        seconds: float,
        rows: dict[str, Any] | None = None,
    ) -> None:
        """Record seed ``seed`` of a candidate as done: its scores per split, its history and
        training time (one ``seed_results`` row; the seed's model is already on disk), and
        its test rows' pseudo-values when kept. Raises StoreError when the seed is already
        recorded (a seed is written exactly once)."""
        with self._session() as s:
            s.add(
                SeedResultRow(
                    candidate_id=candidate_id,
                    seed=seed,
                    scores=scores,
                    history=history,
                    seconds=seconds,
                    rows=rows or None,
                )
            )

    def row_table(
        self, candidate_id: int, metric: str, seeds: list[int]
    ) -> list[list[float]] | None:
        """A candidate's test-row pseudo-values of ``metric``, one list per seed of ``seeds``
        in that order (what a gate adds to the seeds' variance); None when a seed has none
        (cross-validation units, metrics no gate judges, runs recorded before they were kept)."""
        results = self.seed_results(candidate_id)
        tables = [((results.get(s) or {}).get("rows") or {}).get(metric) for s in seeds]
        return None if not tables or any(t is None for t in tables) else tables

    def seed_results(self, candidate_id: int) -> dict[int, dict[str, Any]]:
        """A candidate's finished seeds, ``{seed: row}``. Writes nothing."""
        with self._session() as s:
            rows = s.scalars(
                select(SeedResultRow)
                .where(SeedResultRow.candidate_id == candidate_id)
                .order_by(SeedResultRow.seed)
            )
            return {r.seed: _row(r) for r in rows}
