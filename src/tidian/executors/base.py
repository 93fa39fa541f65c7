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
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidian.exceptions import TidianError
from tidian.registry import Registry

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
    """

    handler: str
    config: Mapping[str, Any] = field(default_factory=dict)
    task: Any = field(default=None, repr=False, compare=False)
    seed: int = 0
    out: str | None = None
    key: Any = None
    imports: tuple[str, ...] = ()

    def describe(self) -> str:
        """A short name for messages: handler, key and seed."""
        key = "" if self.key is None else f" {self.key!r}"
        return f"{self.handler} job{key} (seed {self.seed})"


def modules(job: Job) -> tuple[str, ...]:
    """The modules that register what ``job`` needs: its handler's, then ``job.imports``."""
    entry = JOBS.entry(job.handler)
    return tuple(m for m in dict.fromkeys([entry.meta.get("module", ""), *job.imports]) if m)


def execute(job: Job, imports: Sequence[str] = ()) -> Any:
    """Run ``job`` here by its registered handler, after importing ``imports`` (what
    :func:`modules` named in the calling process) where they are not imported yet — as in a
    fresh worker process."""
    for name in imports:
        if name not in sys.modules and name != "__main__":
            importlib.import_module(name)
    return JOBS.get(job.handler)(job)


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
    * :meth:`close` releases workers; it is idempotent, and an executor is also a context
      manager that closes on exit.
    * Thread-safety: one :meth:`run` at a time per executor; executors are not shared
      between threads.
    """

    workers: int = 1

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        raise NotImplementedError

    def gather(self, jobs: Sequence[Job]) -> list[Any]:
        """The results of ``jobs``, in the order of ``jobs``."""
        done = {id(job): result for job, result in self.run(jobs)}
        return [done[id(job)] for job in jobs]

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def named(err: BaseException, job: Job) -> BaseException:
    """``err`` with a note naming the job it came from (the contract's error report)."""
    note = f"in {job.describe()}"
    if note not in getattr(err, "__notes__", ()):
        err.add_note(note)
    return err
