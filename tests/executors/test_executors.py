"""The executor contract (``tidian.executors.base.Executor``), checked for every executor:
results complete and matched to their jobs whatever the finishing order, a failing job
reported as that job's own error, workers that die, close idempotent. A new executor is added
to EXECUTORS and gets the whole suite."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import executor_handlers  # noqa: F401  (registers the test.* handlers in this process)
import pytest

from conftest import running
from tidian.exceptions import ConfigError
from tidian.executors import JOBS, Executor, Job, LocalExecutor, WorkerLost
from tidian.executors.base import modules
from tidian.registry import import_in_workers, worker_imports


def _ray(request):
    from tidian.executors.ray import RayExecutor

    return RayExecutor(request.getfixturevalue("ray_cluster").address)


# name -> (a factory of the request, whether jobs run in other processes — a worker can die
# there without taking the caller with it). Ray's runs on a 2-node cluster in a private
# network namespace (the "cluster" tests; tests/executors/test_cluster_namespace.py).
EXECUTORS = {
    "local, in-process": (lambda request: LocalExecutor(1), False),
    "local, 2 worker processes": (lambda request: LocalExecutor(2), True),
    "ray, 2 nodes": (_ray, True),
}
CLUSTER = {"ray, 2 nodes"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.cluster) if n in CLUSTER else n for n in names]


# One executor per kind for the module: worker processes start once, as in a pipeline.
@pytest.fixture(params=_params(EXECUTORS), scope="module")
def executor(request):
    make, _ = EXECUTORS[request.param]
    with make(request) as ex:
        yield ex


@pytest.fixture(params=_params(n for n, (_, p) in EXECUTORS.items() if p), scope="module")
def process_executor(request):
    make, _ = EXECUTORS[request.param]
    with make(request) as ex:
        yield ex


def _squares(n: int) -> list[Job]:
    return [Job("test.square", {"x": i}, seed=10 + i, key=f"job-{i}") for i in range(n)]


def test_every_job_is_yielded_once_with_its_own_result(executor):
    jobs = _squares(7)
    seen = list(executor.run(jobs))
    assert sorted(job.key for job, _ in seen) == sorted(job.key for job in jobs)
    for job, result in seen:
        assert any(job is j for j in jobs)  # the very object passed in
        assert result["square"] == job.config["x"] ** 2 and result["seed"] == job.seed


def test_results_match_their_jobs_whatever_order_they_finish_in(executor, tmp_path):
    # job 0 waits until job 1 has finished, so with workers they finish out of order; in
    # process, job 1 runs after job 0 and writes its mark without waiting
    marks = [tmp_path / f"mark-{i}" for i in range(2)]
    jobs = [
        Job("test.wait_for", {"x": 0, "mark": str(marks[0]), "after": None}, key=0),
        Job("test.wait_for", {"x": 1, "mark": str(marks[1]), "after": None}, key=1),
    ]
    if executor.workers > 1:
        jobs[0] = Job("test.wait_for", {"x": 0, "mark": str(marks[0]), "after": str(marks[1])})
    order = [result for _, result in executor.run(jobs)]
    assert order == ([1, 0] if executor.workers > 1 else [0, 1])
    assert executor.gather(jobs) == [0, 1]  # gather: in the order of the jobs


def test_several_workers_run_jobs_in_other_processes(process_executor):
    import os

    pids = {r["pid"] for r in process_executor.gather(_squares(6))}
    assert os.getpid() not in pids


def test_a_failing_job_raises_its_own_error_naming_the_job(executor):
    jobs = [*_squares(2), Job("test.fail", {"message": "bad value [x]"}, key="the-broken-one")]
    with pytest.raises(ConfigError, match=r"bad value \[x\]") as info:
        list(executor.run(jobs))
    assert any("the-broken-one" in note for note in info.value.__notes__)
    # the executor is still usable
    assert [r["square"] for r in executor.gather(_squares(3))] == [0, 1, 4]


def test_a_worker_that_dies_fails_the_run_and_the_executor_recovers(process_executor):
    with pytest.raises(WorkerLost):
        list(process_executor.run([Job("test.die", key="dying"), *_squares(2)]))
    assert [r["square"] for r in process_executor.gather(_squares(2))] == [0, 1]


def test_close_is_idempotent_and_a_closed_executor_runs_again(executor):
    executor.close()
    executor.close()
    assert [r["square"] for r in executor.gather(_squares(2))] == [0, 1]
    executor.close()


def test_workers_write_their_artifacts_whole(executor, tmp_path):
    jobs = [Job("test.write", {"x": i}, out=str(tmp_path / f"a{i}")) for i in range(3)]
    executor.gather(jobs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a0", "a1", "a2"]  # no temp left
    assert [(tmp_path / f"a{i}" / "value.txt").read_text() for i in range(3)] == ["0", "1", "2"]


def test_jobs_are_plain_picklable_specs_and_name_their_modules():
    job = Job("train", {"model": {"name": "mlp"}, "train": {"epochs": 1}}, None, 3, key=1)
    assert pickle.loads(pickle.dumps(job)) == job
    # then the modules every worker imports: those that registered models of a user's
    # (tests that ran before may have added theirs)
    assert modules(job) == ("tidian.evaluation.evaluate", *worker_imports())
    user = Job("test.square", {"x": 1}, imports=("json",))
    assert modules(user) == ("executor_handlers", "json", *worker_imports())
    import_in_workers("email.mime.text")
    assert modules(job)[-1] == "email.mime.text" and "email.mime.text" in worker_imports()
    import_in_workers("__main__")  # a script cannot be imported by name: left out
    import_in_workers("tidian.models.mlp")  # tidian's own: imported anyway
    assert "__main__" not in worker_imports() and "tidian.models.mlp" not in worker_imports()
    assert "test.square" in JOBS and isinstance(LocalExecutor(1), Executor)


def test_a_bad_worker_count_is_refused():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="jobs"):
            LocalExecutor(bad)


def test_a_model_that_cannot_travel_is_refused_with_the_fix(vector_task):
    import tidian

    with pytest.raises(ConfigError, match=r"cannot be sent to a worker.*register_model"):
        tidian.evaluate(
            lambda task: tidian.create_model("linear", task), vector_task, seeds=2, n_jobs=2
        )
    # in one process nothing travels: the same factory works
    result = tidian.evaluate(
        lambda task: tidian.create_model("linear", task), vector_task, {"epochs": 1}, seeds=2
    )
    assert len(result.runs) == 2


def test_importing_tidian_does_not_import_ray_and_the_ray_executor_names_its_extra():
    import subprocess
    import sys

    probe = (
        "import sys, builtins, tidian, tidian.cli\n"
        "assert 'ray' not in sys.modules, 'import tidian imported ray'\n"
        "real = builtins.__import__\n"
        "def no_ray(name, *a, **k):\n"
        "    if name == 'ray' or name.startswith('ray.'):\n"
        "        raise ImportError('No module named ray')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = no_ray\n"
        "tidian.cli.main(['run', '--executor', 'ray'])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "pip install 'tidian[ray]'" in " ".join(done.stderr.split())


def test_workers_end_when_their_driver_is_killed_outright(tmp_path):
    """A driver SIGKILLed while its workers run jobs (here, jobs that never end) cannot stop
    them: each worker sees it is orphaned and ends itself, instead of running on."""
    import subprocess
    import sys
    import time

    files = [tmp_path / f"started-{i}" for i in range(2)]
    driver = f"""
import sys
sys.path[:0] = {[str(Path(__file__).parent)]!r}
import executor_handlers
from tidian.executors import Job, LocalExecutor
with LocalExecutor(2) as ex:
    ex.gather([Job("test.hang", {{"started": f}}, key=i) for i, f in enumerate({[str(f) for f in files]!r})])
"""
    proc = subprocess.Popen([sys.executable, "-c", driver])
    deadline = time.monotonic() + 600
    while not all(f.exists() and f.read_text() for f in files):  # both jobs are running
        assert proc.poll() is None and time.monotonic() < deadline, "the jobs never started"
        time.sleep(0.05)
    pids = [int(f.read_text()) for f in files]
    proc.kill()
    proc.wait()
    while any(running(pid) for pid in pids):  # each ends itself within a second or so
        assert time.monotonic() < deadline, "workers still running ten minutes on"
        time.sleep(0.05)


def test_stop_ends_every_worker_without_waiting_for_running_jobs(tmp_path):
    import multiprocessing
    import threading
    import time

    executor = LocalExecutor(2)
    files = [tmp_path / f"started-{i}" for i in range(2)]
    jobs = [Job("test.hang", {"started": str(f)}, key=i) for i, f in enumerate(files)]
    outcome: list[BaseException] = []

    def gather() -> None:
        try:
            executor.gather(jobs)
        except BaseException as err:  # what the caller of a stopped run sees
            outcome.append(err)

    caller = threading.Thread(target=gather)
    caller.start()
    while not all(f.exists() and f.read_text() for f in files):  # both jobs are running
        time.sleep(0.01)
    pids = [int(f.read_text()) for f in files]
    executor.stop()
    caller.join(timeout=60)
    assert not caller.is_alive() and isinstance(outcome[0], WorkerLost)
    assert multiprocessing.active_children() == []
    for pid in pids:  # gone (reaped), not merely signalled
        assert not os.path.exists(f"/proc/{pid}")
    executor.stop()  # idempotent
    assert [r["square"] for r in executor.gather(_squares(2))] == [0, 1]  # usable again
    executor.close()


def test_a_script_that_starts_workers_at_its_top_level_is_told_to_guard_it(tmp_path):
    """Spawned workers import the user's script again; without `if __name__ == "__main__":`
    each would start workers of its own. One line from each worker and a parent error that
    says what to do — not multiprocessing's bootstrap tracebacks (137 lines before)."""
    script = tmp_path / "script.py"
    script.write_text(
        "import tidian\n"
        "task = tidian.load_task('iris')\n"
        "tidian.evaluate('linear', task, {'epochs': 1}, seeds=2, n_jobs=2)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 1
    err = " ".join(done.stderr.split())
    assert 'must put that code under `if __name__ == "__main__":`' in err
    assert "bootstrapping phase" not in err
    assert len(done.stderr.splitlines()) < 30
