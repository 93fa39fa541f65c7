"""The Ray executor: every job a Ray task, on any node of a cluster.

``RayExecutor(address="auto")`` joins a running cluster (``ray start --head`` and ``ray start
--address ...`` on the other machines); ``address=None`` starts a one-node Ray here. Every
node must run the same tidian (checked when the executor starts: a probe task on each node
reports its version, and whether it can read the run's artifact location).

What it adds to the contract of :class:`~tidian.executors.base.Executor`:

* A job's task (its data set) is put into Ray's object store once per executor and passed by
  reference, so many jobs on one task do not copy its arrays again and again.
* Each job asks for ``job.resources`` (CPUs, GPUs, memory; one CPU by default).
* A job whose node or worker dies (a Ray system error) is submitted again, up to
  ``max_retries`` times, to whatever node is alive; the attempt number travels with the job
  to :func:`~tidian.executors.base.worker_info`, so the ledger says which seeds were retried.
  A job that fails for its own reasons (an exception in the handler) is not retried: its
  exception is raised in the caller as is.

Ray's processes listen on every interface of their node (even when told an address): run a
cluster where that is acceptable, and tests in a network namespace (see the README).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from tidian.exceptions import ConfigError, TidianError, bad_value, require
from tidian.executors.base import (
    Executor,
    Job,
    Resources,
    WorkerLost,
    execute,
    modules,
    named,
    portable,
)
from tidian.executors.distributed import backend_for, free_port, run_rank


def tidian_version() -> str:
    """The installed tidian's version (what every node must agree on)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tidian")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _run(job: Job, task: Any, imports: tuple[str, ...], attempt: int) -> Any:
    """The Ray task: the job, with its task fetched from the object store, run here."""
    import ray
    import torch

    context = ray.get_runtime_context()
    # torch on as many threads as the job reserved CPUs (one by default), as local workers
    torch.set_num_threads(max(1, int(context.get_assigned_resources().get("CPU", 1))))
    node = context.get_node_id()
    return execute(
        dataclasses.replace(job, task=task), imports, executor="ray", node=node, attempt=attempt
    )


class _Lost(Exception):
    """A rank of a multi-process job was lost with its worker or node (retried as a whole)."""


def _rank(job: Job, task: Any, imports: tuple[str, ...], rank: int, world: int, where: tuple):
    import ray
    import torch

    context = ray.get_runtime_context()
    torch.set_num_threads(max(1, int(context.get_assigned_resources().get("CPU", 1))))
    address, port, backend, attempt = where
    return run_rank(
        dataclasses.replace(job, task=task),
        imports,
        rank,
        world,
        address,
        port,
        backend,
        local_rank=0,  # one process per bundle; a GPU bundle sees its own device as cuda:0
        executor="ray",
        node=context.get_node_id(),
        attempt=attempt,
    )


def _address() -> tuple[str, int]:
    import ray

    address = ray.util.get_node_ip_address()
    return address, free_port(address)


def _group(job: Job, task: list, imports: tuple[str, ...], attempt: int, need: dict) -> Any:
    """Coordinate a job of ``job.processes`` ranks: a placement group of one bundle per
    rank (packed on few nodes), the rendezvous on rank 0's node, the ranks as Ray tasks.
    ``task``: ``[object ref]`` (in a list, so that the ranks, not this task, fetch it).
    Returns rank 0's result; a rank's own error is raised as it is, a lost rank as _Lost."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    world = job.processes
    bundle = {"CPU": need["cpus"], **({"GPU": need["gpus"]} if need["gpus"] else {})}
    group = ray.util.placement_group([bundle] * world, strategy="PACK")
    refs = []
    try:
        ray.get(group.ready())

        def on(i: int) -> Any:
            return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)

        address, port = ray.get(
            ray.remote(_address).options(num_cpus=0, scheduling_strategy=on(0)).remote()
        )
        backend = backend_for(job)
        rank = ray.remote(_rank)
        refs = [
            rank.options(
                num_cpus=need["cpus"],
                num_gpus=need["gpus"],
                max_retries=0,
                scheduling_strategy=on(i),
            ).remote(job, task[0], imports, i, world, (address, port, backend, attempt))
            for i in range(world)
        ]
        try:
            return ray.get(refs)[0]
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if isinstance(err.cause, BaseException) else err
            raise cause from None
        except ray.exceptions.RayError as err:
            raise _Lost(type(err).__name__) from None
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        ray.util.remove_placement_group(group)


def _probe(sentinel: str | None) -> dict[str, Any]:
    """What a node runs, and whether it sees the artifact location's sentinel file."""
    import platform

    import fsspec
    import ray

    seen = None
    if sentinel is not None:
        fs, path = fsspec.core.url_to_fs(sentinel)
        seen = bool(fs.exists(path))
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "tidian": tidian_version(),
        "python": platform.python_version(),
        "sentinel": seen,
    }


class RayExecutor(Executor):
    """Jobs as Ray tasks. ``address``: ``"auto"`` (the cluster this machine belongs to), a
    ``host:port`` of a head node, or None (start a one-node Ray in this process, closed with
    the executor). ``resources``: what one job needs by default. ``max_retries``: how often a
    job lost with its node or worker is submitted again."""

    def __init__(
        self,
        address: str | None = None,
        *,
        resources: Resources | dict[str, Any] | None = None,
        max_retries: int = 3,
        init: dict[str, Any] | None = None,
    ) -> None:
        self._ray = require("ray", "ray", "the Ray executor")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise bad_value("max_retries", "a non-negative integer", max_retries)
        self.address = address
        self.resources = Resources.coerce(resources)
        self.max_retries = max_retries
        self._init = dict(init or {})
        self._owns = False
        self._connect()
        self._remote = self._ray.remote(_run)
        self._group = self._ray.remote(_group)
        self._tasks: dict[int, tuple[Any, Any]] = {}  # id(task) -> (task, its object ref)
        self.workers = max(1, int(self._cpus() // max(self.resources.cpus, 1e-9)))
        self.nodes: list[dict[str, Any]] = []

    def _connect(self) -> None:
        """Join (or start) Ray when this process is not connected — at start, and again
        after :meth:`close` (Ray would otherwise start a local instance of its own)."""
        if self._ray.is_initialized():
            return
        options: dict[str, Any] = {"logging_level": "error", "log_to_driver": False}
        if self.address is None:
            options["include_dashboard"] = False
        try:
            self._ray.init(address=self.address, **{**options, **self._init})
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {self.address!r}: {err}. Start one with "
                "`ray start --head` (and `ray start --address HEAD:6379` on other "
                "machines), or leave --address out to start a one-node Ray here."
            ) from None
        self._owns = True

    # -- the cluster -----------------------------------------------------------------------------
    def _alive(self) -> list[dict[str, Any]]:
        self._connect()
        return [n for n in self._ray.nodes() if n.get("Alive")]

    def _cpus(self) -> float:
        return float(sum(n["Resources"].get("CPU", 0) for n in self._alive()))

    def check(self, sentinel: str | None = None) -> list[dict[str, Any]]:
        """Run a probe on every live node: each must run this tidian and, when ``sentinel``
        (a file the driver wrote in the artifact location) is given, see it. Raises
        ConfigError naming the nodes that do not, with what to do; returns the nodes."""
        self._connect()
        strategy = self._ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy
        probe = self._ray.remote(_probe)
        refs = [
            probe.options(
                num_cpus=0, scheduling_strategy=strategy(node["NodeID"], soft=False)
            ).remote(sentinel)
            for node in self._alive()
        ]
        nodes = []
        for ref in refs:
            try:
                nodes.append(self._ray.get(ref))
            except self._ray.exceptions.TaskUnschedulableError:
                continue  # a node that died since the cluster listed it: nothing runs there
        wrong = [n for n in nodes if n["tidian"] != tidian_version()]
        if wrong:
            listed = ", ".join(f"{n['host']} ({n['tidian']})" for n in wrong)
            raise ConfigError(
                f"every Ray node must run tidian {tidian_version()}, like this driver; "
                f"{listed} do not. Install the same tidian on every node (the same wheel or "
                "checkout) and restart their `ray start`."
            )
        blind = [n for n in nodes if sentinel is not None and not n["sentinel"]]
        if blind:
            listed = ", ".join(n["host"] for n in blind)
            raise ConfigError(
                f"the artifact location is not visible from {listed}: a file the driver wrote "
                f"there ({sentinel}) cannot be read on those nodes. Use a location every node "
                "shares: a shared filesystem path, or object storage (--artifacts s3://…)."
            )
        self.nodes = nodes
        return nodes

    def describe(self) -> dict[str, Any]:
        """The cluster, for the run's environment record."""
        alive = self._alive()
        return {
            "executor": "ray",
            "address": self.address,
            "nodes": [
                {
                    "node": n["NodeID"],
                    "host": n.get("NodeManagerHostname"),
                    "address": n.get("NodeManagerAddress"),
                    "cpus": n["Resources"].get("CPU", 0),
                    "gpus": n["Resources"].get("GPU", 0),
                }
                for n in alive
            ],
            "workers": self.workers,
            "job_resources": dataclasses.asdict(self.resources),
            "max_retries": self.max_retries,
        }

    def multi_node(self) -> bool:
        return len(self._alive()) > 1

    def prepare(self, ledger: str, artifacts: str) -> dict[str, Any]:
        """Before a run: a SQLite ledger cannot serve several nodes (tuning workers write their
        study to it); every node must run this tidian and see the artifact location (a
        sentinel file written there by the driver)."""
        import uuid

        import fsspec

        if ledger.startswith("sqlite") and self.multi_node():
            raise ConfigError(
                f"the ledger {ledger.split('///')[-1]!r} is a SQLite file, which the other nodes "
                f"of this {len(self._alive())}-node Ray cluster cannot share. Use a database "
                "every node reaches: --store postgresql://USER@HOST/DB (pip install "
                "'tidian[postgres]')."
            )
        text = str(artifacts)
        sentinel = (
            f"{text.rstrip('/')}/.tidian-sentinel-{uuid.uuid4().hex[:8]}"
            if "://" in text
            else os.path.join(os.path.abspath(text), f".tidian-sentinel-{uuid.uuid4().hex[:8]}")
        )
        fs, path = fsspec.core.url_to_fs(sentinel)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "w") as f:
            f.write("tidian")
        try:
            self.check(sentinel)
        finally:
            fs.rm_file(path)
        return self.describe()

    # -- running jobs ----------------------------------------------------------------------------
    def _task_ref(self, task: Any) -> Any:
        if task is None:
            return None
        key = id(task)
        if key not in self._tasks:  # the task object is kept too, so its id is not reused
            self._tasks[key] = (task, self._ray.put(task))
        return self._tasks[key][1]

    def _submit(self, job: Job, attempt: int) -> Any:
        portable(job)
        need = Resources.coerce(job.resources) if job.resources else self.resources
        options: dict[str, Any] = {
            "num_cpus": need.cpus,
            "num_gpus": need.gpus,
            "max_retries": 0,  # retried here, on system errors only, counting attempts
            "retry_exceptions": False,
        }
        if need.memory_gb:
            options["memory"] = int(need.memory_gb * 2**30)
        light = dataclasses.replace(job, task=None)
        if job.processes > 1:  # coordinated by a task that holds no CPU itself
            need = {"cpus": need.cpus, "gpus": need.gpus}
            return self._group.options(num_cpus=0, max_retries=0).remote(
                light, [self._task_ref(job.task)], modules(job), attempt, need
            )
        return self._remote.options(**options).remote(
            light, self._task_ref(job.task), modules(job), attempt
        )

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        ray = self._ray
        self._connect()
        pending = {self._submit(job, 1): (job, 1) for job in jobs}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job, attempt = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = err.cause if isinstance(err.cause, BaseException) else err
                    if not isinstance(cause, _Lost):
                        # the job's own error: raised as the handler raised it
                        raise named(cause, job) from None
                    lost: str = f"a process of the job ({cause})"
                except ray.exceptions.RayError as err:
                    lost = type(err).__name__
                else:
                    yield job, result
                    continue
                if attempt > self.max_retries:
                    raise named(
                        WorkerLost(
                            f"{job.describe()} was lost {attempt} times with its Ray worker or "
                            f"node (last: {lost}); finished results are kept — resume the run "
                            "when the cluster is sound."
                        ),
                        job,
                    ) from None
                pending[self._submit(job, attempt + 1)] = (job, attempt + 1)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        self._tasks.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


def connect(address: str | None, **options: Any) -> RayExecutor:
    """A RayExecutor, with TidianError for anything Ray says while connecting."""
    try:
        return RayExecutor(address, **options)
    except TidianError:
        raise
    except Exception as err:  # Ray's own start-up failures
        raise ConfigError(f"Ray could not start or connect ({type(err).__name__}: {err}).") from err
