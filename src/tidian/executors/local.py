"""The local executor: jobs in this process, or in a pool of local worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from tidian.exceptions import bad_value
from tidian.executors.base import (
    Executor,
    Job,
    WorkerLost,
    execute,
    modules,
    named,
    portable,
)
from tidian.executors.distributed import run_local


def _pin_one_thread() -> None:
    # One thread per process: on few cores, k single-threaded trainings beat one k-threaded
    # one once each training lasts long enough to amortise the worker's start-up.
    torch.set_num_threads(1)


class LocalExecutor(Executor):
    """Runs jobs in this process (``workers=1``) or in ``workers`` spawned processes.

    The worker pool starts on first use and is reused until :meth:`close` (or the ``with``
    block ends), so a pipeline pays the workers' start-up once, not per candidate. Workers
    are started with 'spawn' and import tidian afresh; each runs torch on one thread. A job
    is not retried: a worker that dies fails the :meth:`run` that was waiting for it (the
    pipeline's resume redoes unfinished jobs), and the next :meth:`run` starts a new pool.
    A job of several processes (``Job.processes``) is launched as that many spawned processes
    in one torch.distributed group (``executors.distributed``), one such job at a time.
    """

    def __init__(self, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise bad_value("jobs", "a positive integer", workers)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._launcher: ThreadPoolExecutor | None = None

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        if self.workers == 1:
            for job in jobs:
                try:
                    if job.processes > 1:
                        result = run_local(job, modules(job))
                    else:
                        result = execute(job, executor="local")
                except Exception as err:
                    raise named(err, job) from None
                yield job, result
            return
        for job in jobs:
            portable(job)
        pool = self._get_pool()
        futures: dict[Future, Job] = {}
        for job in jobs:
            if job.processes > 1:
                if self._launcher is None:
                    self._launcher = ThreadPoolExecutor(1, thread_name_prefix="tidian-ddp")
                futures[self._launcher.submit(run_local, job, modules(job))] = job
            else:
                futures[pool.submit(execute, job, modules(job), executor="local")] = job
        try:
            for future in as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool:
                    self._discard_pool()
                    raise WorkerLost(
                        f"a worker process stopped without finishing its job (killed, or out "
                        f"of memory?) while {len(futures)} jobs ran on {self.workers} workers; "
                        "finished results are kept — resume the run to do the rest."
                    ) from None
                except Exception as err:
                    raise named(err, job) from None
                yield job, result
        finally:
            for future in futures:
                future.cancel()

    def prepare(self, ledger: str, artifacts: str) -> dict[str, Any]:
        return {"executor": "local", "workers": self.workers}

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # 'spawn': forking a process that already ran torch's thread pools can deadlock.
            self._pool = ProcessPoolExecutor(
                self.workers,
                initializer=_pin_one_thread,
                mp_context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._launcher is not None:
            self._launcher.shutdown(wait=True, cancel_futures=True)
            self._launcher = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
