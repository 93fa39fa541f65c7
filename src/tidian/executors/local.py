"""Executors: where training jobs (one seed of one candidate) run.

Stages and the pipeline ask an executor for seeds; they never start processes themselves,
so a cluster executor can be added behind the same two methods.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import torch

from tidian.exceptions import bad_value


def _pin_one_thread() -> None:
    # One thread per process: on few cores, k single-threaded trainings beat one k-threaded
    # one once each training lasts long enough to amortise the worker's start-up.
    torch.set_num_threads(1)


def _run_seed(*args: Any):
    from tidian.evaluation.evaluate import run_seed

    return run_seed(*args)


def _call(fn: Callable[..., Any] | None, *args: Any):
    return (fn or _run_seed)(*args)


@dataclass(frozen=True)
class Job:
    """One training run: seed ``seed`` of model recipe ``make`` with ``config`` on ``task``.
    ``key`` is the caller's label for it (say, a candidate id); executors pass it back.

    ``fn``, when set, replaces the training run: ``fn(*extra)`` is called instead (a
    module-level function returning a SeedRun, such as a compression of a saved seed)."""

    key: Any
    make: Callable[[Any], Any]
    task: Any = field(repr=False)
    config: Any
    seed: int
    metrics: tuple[str, ...]
    keep_model: bool = False
    fn: Callable[..., Any] | None = None
    extra: tuple[Any, ...] = ()

    def args(self) -> tuple[Any, ...]:
        if self.fn is not None:
            return self.extra
        return (self.make, self.task, self.config, self.seed, list(self.metrics), self.keep_model)


class LocalExecutor:
    """Runs seeds in this process (``jobs=1``) or in ``jobs`` worker processes.

    The worker pool starts on first use and is reused until :meth:`close` (or the ``with``
    block ends), so a pipeline pays the workers' start-up once, not per candidate.
    """

    def __init__(self, jobs: int = 1) -> None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise bad_value("jobs", "a positive integer", jobs)
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        """Yield ``(job, SeedRun)`` as each job finishes (any order with several workers)."""
        from tidian.evaluation.evaluate import run_seed

        if self.jobs == 1 or len(jobs) == 1:
            for job in jobs:
                yield job, (job.fn or run_seed)(*job.args())
            return
        pool = self._get_pool()
        futures: dict[Future, Job] = {pool.submit(_call, job.fn, *job.args()): job for job in jobs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def map(self, fn: Callable[..., Any], arglists: Sequence[Sequence[Any]]) -> list[Any]:
        """``[fn(*args) for args in arglists]``, in worker processes when ``jobs > 1``.

        ``fn`` must be a module-level function (it is sent to the workers by name)."""
        if self.jobs == 1:
            return [fn(*args) for args in arglists]
        pool = self._get_pool()
        return [f.result() for f in [pool.submit(fn, *args) for args in arglists]]

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # 'spawn': forking a process that already ran torch's thread pools can deadlock.
            self._pool = ProcessPoolExecutor(
                self.jobs,
                initializer=_pin_one_thread,
                mp_context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    def run_seeds(
        self,
        make: Callable[[Any], Any],
        task: Any,
        config: Any,
        seeds: Sequence[int],
        metrics: Sequence[str],
        keep_model: Callable[[int], bool] = lambda seed: False,
        task_for: Callable[[int], Any] | None = None,
    ) -> Iterator[Any]:
        """Yield a SeedRun per seed of one model recipe as each finishes; ``task_for(seed)``,
        when given, is the task of each seed (cross-validation units)."""
        jobs = [
            Job(
                None,
                make,
                task_for(s) if task_for else task,
                config,
                s,
                tuple(metrics),
                keep_model(s),
            )
            for s in seeds
        ]
        for _, result in self.run(jobs):
            yield result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
