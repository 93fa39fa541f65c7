"""The store's contract, on SQLite always and on PostgreSQL when TIDIAN_TEST_POSTGRES is set."""

import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conftest import iris_recipe
from tidian import DataError
from tidian.store import Store, StoreError, stale
from tidian.store.schema import VERSION_TABLE, Base

URLS = ["sqlite"] + (["postgres"] if os.environ.get("TIDIAN_TEST_POSTGRES") else [])


@pytest.fixture(params=URLS)
def store(request, tmp_path):
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'ledger.db'}")
        return
    url = os.environ["TIDIAN_TEST_POSTGRES"]
    ledger = Store(url, artifacts=tmp_path / "runs")
    yield ledger
    with ledger.engine.begin() as conn:  # leave the shared server clean
        for table in ("seed_results", "candidates", "stages", "runs"):
            conn.exec_driver_sql(f"DELETE FROM {table}")


def test_migrations_match_the_orm(store):
    def ours(name, kind, parent):  # other tools' tables (Optuna's) may share the database
        return kind != "table" or name in Base.metadata.tables

    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "include_name": ours}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_a_run_whose_driver_died_shows_as_stale(store):
    """A run records its driver and a heartbeat: a dead driver on this host (or a reused pid)
    is seen at once, one elsewhere by a heartbeat older than STALE_AFTER."""
    import socket
    import subprocess
    import sys
    from datetime import timedelta

    run_id = store.create_run({"task": "iris", "model": {"name": "mlp"}})
    row = store.run(run_id)
    assert row["driver"]["pid"] == os.getpid() and row["driver"]["host"] == socket.gethostname()
    assert stale(row) is None  # this process drives it
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = {**row["driver"], "pid": int(done.stdout)}  # a process that has ended
    store.update_run(run_id, driver=dead)
    assert stale(store.run(run_id)) == f"its driver (pid {dead['pid']} on {dead['host']}) is gone"
    reused = {**row["driver"], "started": row["driver"]["started"] - 1}  # our pid, not our start
    store.update_run(run_id, driver=reused)
    assert "is gone" in stale(store.run(run_id))
    away = {"host": "node-7", "pid": os.getpid(), "started": 1}
    store.update_run(run_id, driver=away, heartbeat=row["heartbeat"] - timedelta(minutes=1))
    assert stale(store.run(run_id)) is None  # elsewhere, and a minute is within STALE_AFTER
    store.update_run(run_id, heartbeat=row["heartbeat"] - timedelta(minutes=10))
    assert stale(store.run(run_id)) == "no heartbeat from node-7 for 10 min"
    store.update_run(run_id, status="interrupted")
    assert stale(store.run(run_id)) is None  # only a running run can be stale


def test_the_heartbeat_is_stamped_while_the_block_runs(store):
    import threading
    import time

    run_id = store.create_run({"task": "iris", "model": {"name": "mlp"}})
    first = store.run(run_id)["heartbeat"]
    deadline = time.monotonic() + 120
    with store.heartbeat(run_id, every=0.05):
        while store.run(run_id)["heartbeat"] == first:
            assert time.monotonic() < deadline, "no heartbeat in 2 minutes"
            time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("tidian-heartbeat")]


def test_runs_candidates_and_seeds_round_trip(store):
    run_id = store.create_run({"task": "iris", "model": {"name": "mlp"}})
    assert store.run(run_id)["status"] == "running"
    assert (store.artifacts / run_id).is_dir()
    stage = store.stage(run_id, 0, "baseline", {}, None)
    assert store.stage(run_id, 0, "baseline", {}, None)["id"] == stage["id"]  # idempotent
    cand = store.candidate(run_id, 0, "baseline", "baseline", None, {"name": "mlp"}, {"lr": 1}, {})
    again = store.candidate(run_id, 0, "baseline", "baseline", None, {"name": "mlp"}, {}, {})
    assert again["id"] == cand["id"] and again["train"] == {"lr": 1}
    store.add_seed_result(cand["id"], 1, {"test": {"accuracy": 0.5}}, {"epochs": []}, 1.5)
    store.add_seed_result(cand["id"], 0, {"test": {"accuracy": 0.7}}, {"epochs": []}, 1.0)
    assert list(store.seed_results(cand["id"])) == [0, 1]
    child = store.candidate(
        run_id, 1, "architecture", "cnn1d", cand["id"], {"name": "cnn1d"}, {}, {}
    )
    assert store.get_candidate(child["id"])["parent_id"] == cand["id"]
    store.update_candidate(
        child["id"], status="done", decision="accepted", reason="ok", quality={"mean": 0.9}
    )
    store.update_run(run_id, status="finished", incumbent_id=child["id"])
    run = store.run(run_id)
    assert run["status"] == "finished" and run["finished"] is not None
    assert [c["id"] for c in store.candidates(run_id)] == [cand["id"], child["id"]]
    assert [r["id"] for r in store.runs()] == [run_id]


def test_a_failed_write_leaves_nothing_behind(store):
    run_id = store.create_run({})
    cand = store.candidate(run_id, 0, "baseline", "b", None, {}, {}, {})
    store.add_seed_result(cand["id"], 0, {}, {}, 1.0)
    with pytest.raises(StoreError, match="store write failed"):
        store.add_seed_result(cand["id"], 0, {}, {}, 2.0)  # the same seed twice
    assert store.seed_results(cand["id"])[0]["seconds"] == 1.0
    assert len(store.seed_results(cand["id"])) == 1


def test_unknown_ids_are_clear(store):
    with pytest.raises(DataError, match="no run 'nope'.*tidian runs"):
        store.run("nope")
    with pytest.raises(DataError, match="no candidate 999"):
        store.get_candidate(999)


def test_bad_locations_are_clear(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store(f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store("postgresql://nobody@127.0.0.1:1/none")


def _fresh_database(kind: str, tmp_path) -> str:
    """The URL of a new, empty database: a SQLite file, or a new database on the test server."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    import uuid

    import psycopg

    base = os.environ["TIDIAN_TEST_POSTGRES"]
    name = f"fresh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.mark.slow  # eight runs at once
@pytest.mark.parametrize("kind", URLS)
def test_runs_started_together_on_a_new_store_all_finish(kind, tmp_path):
    """Eight runs with a tuning stage started at once on a database nobody has used: each
    creates tidian's tables and Optuna's, and all eight finish (a race lost 1-6 of them)."""
    import subprocess
    import sys

    pytest.importorskip("optuna")
    url = _fresh_database(kind, tmp_path)
    recipe = iris_recipe(
        tmp_path / "r.yaml",
        stages=[{"tune": {"trials": 1, "space": {"lr": {"choice": [0.01, 0.1]}}}}],
    )
    command = [sys.executable, "-m", "tidian.cli", "run", str(recipe), "--store", url]
    env = {**os.environ, "TIDIAN_ARTIFACTS": str(tmp_path / "runs")}
    runs = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=900)[1].decode()[-400:] for p in runs]
    assert [p.returncode for p in runs] == [0] * 8, errors
    finished = [r["status"] for r in Store(url).runs()]
    assert finished == ["finished"] * 8
