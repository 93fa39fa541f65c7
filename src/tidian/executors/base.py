"""The executor contract: what a job is, what an executor promises, and the job handlers.

Stages and the pipeline never start processes or train on their own behalf: they describe the
work as :class:`Job` specs and hand them to an :class:`Executor`. The work itself is done by a
*job handler*, a module-level function registered by name beside its code::

    @job_handler("train")
    def train_job(job: Job) -> SeedRun: ...

so an executor needs to know only this registry (``JOBS``), never the stages or models.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidian.exceptions import ConfigError, TidianError, bad_value
from tidian.registry import Registry, worker_imports

JOBS: Registry[Callable[[Job], Any]] = Registry("job handler")


class WorkerLost(TidianError):
    """A worker stopped without reporting its job's result (killed, out of memory)."""


def job_handler(name: str) -> Callable[[Callable[[Job], Any]], Callable[[Job], Any]]:
    """Decorator registering ``fn(job) -> result`` as the handler of jobs named ``name``.

    The handler must be a module-level function of an importable module: a worker process
    imports that module (recorded here) before it looks the handler up.
    """

    def decorator(fn: Callable[[Job], Any]) -> Callable[[Job], Any]:
        JOBS.add(name, fn, module=fn.__module__)
        return fn

    return decorator


@dataclass(frozen=True)
class Resources:
    """What one job needs: CPUs, GPUs (fractions share a device) and memory in GiB (None:
    no reservation). Executors that schedule (Ray) reserve them; the local one runs one job
    per worker process and ignores them."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus", "memory_gb"):
            value = getattr(self, name)
            if value is None and name == "memory_gb":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise bad_value(f"resources.{name}", "a non-negative number", value)
        if self.cpus == 0 and self.gpus == 0:
            raise bad_value("resources", "at least some CPU or GPU per job", self)

    @classmethod
    def coerce(cls, value: Resources | dict[str, Any] | None) -> Resources:
        if value is None:
            return cls()
        if isinstance(value, Resources):
            return value
        if not isinstance(value, dict) or set(value) - {"cpus", "gpus", "memory_gb"}:
            raise bad_value("resources", "{cpus: n, gpus: n, memory_gb: n}", value)
        return cls(**value)


@dataclass(frozen=True)
class Job:
    """One unit of work: a plain, picklable spec — names and configs, never live modules.

    ``handler``: the registered job handler that does it (``JOBS``).
    ``config``: plain data the handler reads (model recipes as ``{name, options}``, training
    options as a dict, step lists…). A user's own model factory may ride here only when it
    pickles (a module-level class or function), since it travels to the worker.
    ``task``: the data set the job trains or scores on. It is a separate field so that an
    executor may send one task once for many jobs; handlers never modify it.
    ``seed``: everything random in the job is drawn from it.
    ``out``: the folder the worker writes the job's artifact to (None: nothing is kept). The
    worker writes to its own temporary folder and renames it into place when complete, so a
    reader never sees a half-written artifact.
    ``key``: the caller's label for the job, passed back untouched with its result.
    ``imports``: modules a worker must import before running the job, besides the handler's
    own: those that register names the job's config refers to (a user's transform step,
    model or loss, say).
    ``resources``: what the job needs (None: the executor's default) — per process.
    ``processes``: how many processes run the job together (a model trained with
    ``train.distributed``, in one torch.distributed group: ``executors.distributed``).
    """

    handler: str
    config: Mapping[str, Any] = field(default_factory=dict)
    task: Any = field(default=None, repr=False, compare=False)
    seed: int = 0
    out: str | None = None
    key: Any = None
    imports: tuple[str, ...] = ()
    resources: Resources | dict[str, Any] | None = None
    processes: int = 1

    def describe(self) -> str:
        """A short name for messages: handler, key and seed."""
        key = "" if self.key is None else f" {self.key!r}"
        return f"{self.handler} job{key} (seed {self.seed})"


def modules(job: Job) -> tuple[str, ...]:
    """The modules that register what ``job`` needs: its handler's, ``job.imports``, then the
    user's modules every worker imports (:func:`tidian.registry.import_in_workers`)."""
    entry = JOBS.entry(job.handler)
    named = [entry.meta.get("module", ""), *job.imports, *worker_imports()]
    return tuple(m for m in dict.fromkeys(named) if m)


# Where the running job runs, as its executor describes it (:func:`worker_info`).
_WORKER: dict[str, Any] = {}


def worker_info() -> dict[str, Any]:
    """Where this job runs: host, process and torch's thread count, and what its executor
    adds (the executor, a cluster node, the attempt). Job handlers record it with their
    results."""
    import torch

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        **_WORKER,
    }


def execute(job: Job, imports: Sequence[str] = (), **where: Any) -> Any:
    """Run ``job`` here by its registered handler, after importing ``imports`` (what
    :func:`modules` named in the calling process) where they are not imported yet — as in a
    fresh worker process. ``where`` describes the worker for :func:`worker_info`."""
    for name in imports:
        if name not in sys.modules and name != "__main__":
            try:
                importlib.import_module(name)
            except ImportError as err:
                raise ConfigError(
                    f"{job.describe()}: the worker cannot import {name!r}, which registers "
                    f"what the job names ({err}); install it where the jobs run."
                ) from None
    _WORKER.clear()
    _WORKER.update(where)
    try:
        return JOBS.get(job.handler)(job)
    finally:
        _WORKER.clear()


class Executor:
    """Where jobs run. Subclasses implement :meth:`run`; everything else follows from it.

    The contract every executor keeps (``tests/executors/`` checks it for each one):

    * :meth:`run` takes a sequence of :class:`Job` and yields ``(job, result)`` once per job,
      as each finishes — in any order when jobs run side by side; ``job`` is the very object
      passed in (callers match results by it or by ``job.key``). Nothing is yielded twice.
    * A job is a plain spec; the executor may pickle it (and its task) to send it elsewhere.
      Handlers must therefore not rely on state of the calling process.
    * Who writes what: the job's handler, in the worker, writes the job's artifact to
      ``job.out`` (through a temporary folder renamed into place). The caller writes the
      ledger; executors write nothing at all.
    * A job whose handler raises: :meth:`run` raises that same exception (type and message
      unchanged) in the caller, with a note naming the job (``exc.__notes__``); jobs not yet
      started are cancelled. The results already yielded stay valid.
    * A job whose worker dies (killed, out of memory): :meth:`run` raises :class:`WorkerLost`;
      the executor stays usable (a pool is rebuilt on next use). It does not retry jobs
      itself unless its documentation says so.
    * ``workers``: how many jobs run at once; stages size batches of work by it.
    * :meth:`prepare` is called once before a run writes anything: it refuses a ledger or an
      artifact location its workers could not use, and says where the run's jobs run.
    * :meth:`close` releases workers; it is idempotent, and an executor is also a context
      manager that closes on exit. :meth:`stop` is for an interrupted run (Ctrl-C, SIGTERM):
      it abandons running jobs and leaves no worker process alive, without waiting for jobs
      to finish.
    * Thread-safety: one :meth:`run` at a time per executor; executors are not shared
      between threads.
    """

    workers: int = 1

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        raise NotImplementedError

    def prepare(self, ledger: str, artifacts: str) -> dict[str, Any]:
        """Check that this executor's workers can use the ledger at URL ``ledger`` and the
        artifact location ``artifacts`` (ConfigError with the fix when they cannot); return
        what the run records about where its jobs run."""
        return {"executor": type(self).__name__, "workers": self.workers}

    def gather(self, jobs: Sequence[Job]) -> list[Any]:
        """The results of ``jobs``, in the order of ``jobs``."""
        done = {id(job): result for job, result in self.run(jobs)}
        return [done[id(job)] for job in jobs]

    def close(self) -> None:
        """Release workers (idempotent)."""

    def stop(self) -> None:
        """Stop at once: running jobs abandoned, every worker ended (idempotent)."""
        self.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.stop()  # interrupted: nothing waits for running jobs
        else:
            self.close()


def portable(job: Job) -> None:
    """Refuse, with what to do instead, a job that cannot travel to another process: one
    whose config holds something pickle cannot send by name (a lambda, a class defined
    inside a function)."""
    import pickle

    try:
        pickle.dumps(job.config)
    except Exception as err:
        raise ConfigError(
            f"{job.describe()} cannot be sent to a worker process: {type(err).__name__}: {err}. "
            "A model made by a lambda or by a class defined inside a function cannot travel; "
            "register it with tidian.register_model and name it ({'name': ...}), or define "
            "its factory at the top level of an importable module."
        ) from None


def named(err: BaseException, job: Job) -> BaseException:
    """``err`` with a note naming the job it came from (the contract's error report)."""
    note = f"in {job.describe()}"
    if note not in getattr(err, "__notes__", ()):
        err.add_note(note)
    return err
