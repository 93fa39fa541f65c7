"""The Ray executor on a local cluster of two nodes (one CPU each), in a private network
namespace (tests marked ``cluster``; see test_cluster_namespace.py): node probes, refusals
before anything runs, a lost node costing nothing, one model trained across the nodes, and a
pipeline run giving the local executor's ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import executor_handlers  # noqa: F401  (registers the test.* handlers)
import pytest

import tidian.pipeline as pipeline
from conftest import cluster_unavailable, make_task
from tidian.exceptions import ConfigError
from tidian.executors import Job, LocalExecutor
from tidian.recipe import CONFIRM_STAGE
from tidian.store import Store
from tidian.training.config import TrainConfig

pytestmark = pytest.mark.cluster

RECIPE = {
    "task": "iris",
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"epochs": 6, "batch_size": 16, "lr": 0.01},
    "evaluate": {"seeds": 3},
    "deploy": {"runtime": "onnxruntime"},
    "stages": [
        {"train_variants": {"candidates": [{"lr": 0.003}]}},
        {
            "tune": {
                "space": {"lr": {"float": [0.001, 0.05], "log": True}},
                "trials": 4,
                "sampler": "random",
                "pruner": "none",
                # a continuous objective: trials rank alike however the workers interleave
                "objectives": ["log_loss"],
            }
        },
        {"prune": {"amount": 0.5, "finetune_epochs": 1}},
    ],
}


@pytest.fixture(scope="module")
def ray_executor(ray_cluster):
    from tidian.executors.ray import RayExecutor

    with RayExecutor(ray_cluster.address) as ex:
        yield ex


@pytest.fixture
def postgres():
    url = os.environ.get("TIDIAN_TEST_POSTGRES")
    if not url:
        cluster_unavailable("no PostgreSQL in the namespace (a multi-node ledger needs one)")
    return url


def _fresh_database(url: str, name: str) -> str:
    import sqlalchemy as sa

    admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def _ledger(store: Store, run_id: str) -> dict:
    """Per candidate (by stage, model and training): its per-seed scores and decision —
    tuning trials are numbered in the order workers report, so labels are left out."""
    out = {}
    for c in store.candidates(run_id):
        key = (c["stage"], repr(c["model"]), repr(sorted(c["train"].items())))
        seeds = store.seed_results(c["id"])
        out[key] = (c["decision"], {s: seeds[s]["scores"] for s in sorted(seeds)})
    return out


def _busy(node) -> bool:
    """Whether a worker of this Ray node (a child of its raylet) is running a tidian job."""
    raylet = node.all_processes["raylet"][0].process.pid
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:  # the process ended while being read
            continue
        if parent == raylet and title.startswith(b"ray::_run"):
            return True
    return False


def test_every_node_is_probed_and_must_run_this_tidian(ray_executor, monkeypatch):
    nodes = ray_executor.check()
    assert len({n["node"] for n in nodes}) == 2 and all(n["tidian"] for n in nodes)
    import tidian.executors.ray as ray_module

    monkeypatch.setattr(ray_module, "tidian_version", lambda: "9.9.9")
    with pytest.raises(ConfigError, match=r"every Ray node must run tidian 9\.9\.9"):
        ray_executor.check()


def test_a_run_is_refused_before_it_starts_where_nodes_cannot_share_it(ray_executor, tmp_path):
    # a SQLite file cannot be the ledger of several nodes
    with pytest.raises(ConfigError, match="postgresql://"):
        ray_executor.prepare(f"sqlite:///{tmp_path / 'l.db'}", str(tmp_path))
    # an artifact location the nodes do not see (this process's memory)
    with pytest.raises(ConfigError, match="not visible from"):
        ray_executor.prepare("postgresql://x@127.0.0.1/none", "memory://tidian/runs")
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    with pytest.raises(ConfigError, match="postgresql://"):
        pipeline.run(RECIPE, store=store, executor=ray_executor)
    assert store.runs() == []  # nothing was written


def test_a_job_lost_with_its_node_runs_again_elsewhere(ray_cluster, tmp_path):
    """One job per node; the second node dies while its job runs: that job is submitted again
    to the node left, and its result says it was the second attempt."""
    import threading

    from tidian.executors.ray import RayExecutor

    gate = tmp_path / "go"
    marks = [tmp_path / f"started-{i}" for i in range(2)]
    jobs = [
        Job("test.hold", {"x": i, "started": str(marks[i]), "gate": str(gate)}) for i in range(2)
    ]
    results: list = []
    with RayExecutor(ray_cluster.address, max_retries=2) as ex:
        collector = threading.Thread(target=lambda: results.extend(ex.run(jobs)))
        collector.start()
        while not all(m.exists() for m in marks):  # both jobs run, one on each node
            assert collector.is_alive(), "the jobs ended before both had started"
            time.sleep(0.05)
        second = ray_cluster.second.node_id
        started = {i: marks[i].read_text().split() for i in range(2)}
        (lost,) = [i for i in range(2) if started[i][0] == second]
        # the node goes, with the worker that runs the job (its result can never arrive)
        os.kill(int(started[lost][1]), signal.SIGKILL)
        ray_cluster.cluster.remove_node(ray_cluster.second, allow_graceful=False)
        gate.write_text("go")
        collector.join(timeout=180)
        assert not collector.is_alive()
    by_x = {job.config["x"]: result for job, result in results}
    assert by_x[lost]["attempt"] == 2 and by_x[1 - lost]["attempt"] == 1
    assert by_x[lost]["node"] != second
    ray_cluster.second = ray_cluster.cluster.add_node(num_cpus=1)  # the cluster, restored
    ray_cluster.cluster.wait_for_nodes()


def test_one_model_trained_across_two_nodes_equals_one_process(ray_executor):
    task = make_task("vector", n=160)

    def job(batch: int, workers: int) -> Job:
        train = TrainConfig(
            epochs=4,
            batch_size=batch,
            lr=0.01,
            distributed={"workers": workers} if workers > 1 else None,
        )
        config = {
            "model": {"name": "mlp", "hidden": [16]},
            "train": train.to_dict(),
            "metrics": ["accuracy"],
            "keep_state": True,
        }
        return Job("train", config, task, 3, processes=train.processes)

    one, two = ray_executor.gather([job(32, 1), job(16, 2)])
    assert two.worker["world"] == 2 and two.worker["executor"] == "ray"
    for name, tensor in one.state.items():
        assert (tensor - two.state[name]).abs().max() < 1e-5, name


def test_a_pipeline_on_the_cluster_gives_the_local_ledger(ray_cluster, postgres, tmp_path):
    from tidian.executors.ray import RayExecutor

    local = Store(f"sqlite:///{tmp_path / 'local.db'}")
    with LocalExecutor(2) as two_workers:  # one thread per job, as on the cluster
        expected = pipeline.run(RECIPE, store=local, executor=two_workers)
    store = Store(_fresh_database(postgres, "ray_pipeline"), artifacts=tmp_path / "artifacts")
    with RayExecutor(ray_cluster.address) as ex:
        result = pipeline.run(RECIPE, store=store, executor=ex)
    assert result.status == expected.status == "finished"
    assert _ledger(store, result.run_id) == _ledger(local, expected.run_id)
    run = store.run(result.run_id)
    assert len(run["environment"]["executor"]["nodes"]) == 2
    workers = {
        r["history"]["worker"]["node"]
        for c in store.candidates(result.run_id)
        for r in store.seed_results(c["id"]).values()
    }
    assert len(workers) == 2  # seeds ran on both nodes


def test_a_node_lost_mid_run_costs_nothing_and_the_driver_can_be_killed(
    ray_cluster, postgres, tmp_path
):
    """The second node dies while the run trains: its jobs run again elsewhere, every seed is
    recorded once. Then the driver itself is killed; `--resume --executor ray` finishes."""
    url = _fresh_database(postgres, "ray_faults")
    recipe = tmp_path / "r.yaml"
    import yaml

    slow = {**RECIPE, "train": {**RECIPE["train"], "epochs": 200}, "evaluate": {"seeds": 4}}
    recipe.write_text(yaml.safe_dump(slow))
    command = [
        sys.executable,
        "-m",
        "tidian.cli",
        "run",
        str(recipe),
        "--executor",
        "ray",
        "--address",
        ray_cluster.address,
        "--store",
        url,
        "--artifacts",
        str(tmp_path / "artifacts"),
    ]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = Store(url)

    def seeds_done() -> int:
        runs = store.runs()
        return (
            sum(len(store.seed_results(c["id"])) for c in store.candidates(runs[0]["id"]))
            if runs
            else 0
        )

    # the second node is killed while one of its workers trains a seed (Ray titles a busy
    # worker `ray::_run`, an idle one `ray::IDLE`): a job is surely lost with it
    while not _busy(ray_cluster.second):
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.05)
    ray_cluster.cluster.remove_node(ray_cluster.second, allow_graceful=False)
    ray_cluster.second = ray_cluster.cluster.add_node(num_cpus=1)
    while seeds_done() < 8:  # the run goes on; then its driver dies too
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    (run,) = store.runs()
    assert run["status"] == "running"  # killed without a word
    resumed = subprocess.run(
        [*command[:4], "--resume", run["id"], *command[5:]], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert store.run(run["id"])["status"] == "finished"
    attempts = []
    for c in store.candidates(run["id"]):
        seeds = store.seed_results(c["id"])
        fresh = c["stage"] == CONFIRM_STAGE  # the confirmation's re-runs: 5 fresh seeds
        assert sorted(seeds) == (list(range(10_000, 10_005)) if fresh else [0, 1, 2, 3])
        attempts += [r["history"]["worker"].get("attempt", 1) for r in seeds.values()]
    assert max(attempts) >= 2, "the job on the lost node ran again"
