"""The local executor: jobs in this process, or in a pool of local worker processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
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


def _start_worker(threads: int = 1, driver: int | None = None) -> None:
    # One thread per process by default: on few cores, k single-threaded trainings beat one
    # k-threaded one once each training lasts long enough to amortise the worker's start-up.
    torch.set_num_threads(threads)
    if driver is not None:
        threading.Thread(
            target=_end_with, args=(driver,), name="tidian-driver-watch", daemon=True
        ).start()
    # The driver decides when a run stops: Ctrl-C at a terminal reaches the whole process
    # group, a scheduler's SIGTERM may too. Workers leave it to the driver, which marks the
    # run interrupted and then ends them (LocalExecutor.stop), instead of dying under it as a
    # "lost worker" that would mark the run failed.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


# How often a worker checks that its driver is alive.
_WATCH_SECONDS = 0.5


def _end_with(driver: int) -> None:
    """End this worker when the driver that started it dies without stopping it (SIGKILL,
    an out-of-memory kill): it is then re-parented, and a job it holds (a tuning worker's
    share of trials, say) would go on for nothing — and keep the run's files open. The job
    is left unfinished, as with a worker killed with its driver; a resume redoes it."""
    while True:
        time.sleep(_WATCH_SECONDS)
        if os.getppid() != driver:
            os._exit(70)  # no clean-up to run: the driver that would read our results is gone


MAIN_GUARD = (
    "several worker processes (n_jobs / --jobs) start by importing the script that started "
    "them, so a script that calls tidian at its top level must put that code under "
    "`if __name__ == \"__main__\":` (Python's spawn start method; see the README's Python API)."
)


def _from_a_script() -> bool:
    """Whether this process runs a Python file as ``__main__`` (not ``-m``, not a REPL)."""
    main = sys.modules.get("__main__")
    return bool(getattr(main, "__file__", None)) and getattr(main, "__spec__", None) is None


class LocalExecutor(Executor):
    """Runs jobs in this process (``workers=1``) or in ``workers`` spawned processes.

    The worker pool starts on first use and is reused until :meth:`close` (or the ``with``
    block ends), so a pipeline pays the workers' start-up once, not per candidate. Workers
    are started with 'spawn' and import tidian afresh; each runs torch on ``threads`` threads
    (default 1; in-process jobs default to torch's own count, every core). A job
    is not retried: a worker that dies fails the :meth:`run` that was waiting for it (the
    pipeline's resume redoes unfinished jobs), and the next :meth:`run` starts a new pool.
    A job of several processes (``Job.processes``) is launched as that many spawned processes
    in one torch.distributed group (``executors.distributed``), one such job at a time.
    """

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        given = {"jobs": workers} if threads is None else {"jobs": workers, "threads": threads}
        for name, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_value(name, "a positive integer", value)
        self.workers = workers
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None
        self._launcher: ThreadPoolExecutor | None = None

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        if self.workers == 1:
            for job in jobs:
                before = torch.get_num_threads()
                if self.threads is not None:
                    torch.set_num_threads(self.threads)
                try:
                    if job.processes > 1:
                        result = run_local(job, modules(job))
                    else:
                        result = execute(job, executor="local")
                except Exception as err:
                    raise named(err, job) from None
                finally:
                    torch.set_num_threads(before)
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
                    hint = f" If this is a script: {MAIN_GUARD}" if _from_a_script() else ""
                    raise WorkerLost(
                        f"a worker process stopped without finishing its job (killed, or out "
                        f"of memory?) while {len(futures)} jobs ran on {self.workers} workers; "
                        f"finished results are kept — resume the run to do the rest.{hint}"
                    ) from None
                except Exception as err:
                    raise named(err, job) from None
                yield job, result
        finally:
            for future in futures:
                future.cancel()

    def prepare(self, ledger: str, artifacts: str) -> dict[str, Any]:
        return {"executor": "local", "workers": self.workers, "threads": self._threads()}

    def _threads(self) -> int:
        """Torch threads per job: as given; else all of torch's in one process, 1 per worker."""
        if self.threads is not None:
            return self.threads
        return torch.get_num_threads() if self.workers == 1 else 1

    def _get_pool(self) -> ProcessPoolExecutor:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # This is a worker still importing the user's script, which starts workers at its
            # top level: say what to do once (instead of multiprocessing's bootstrap traceback)
            # and end; the parent reports the lost workers with the same hint.
            sys.stderr.write(f"tidian: {MAIN_GUARD}\n")
            raise SystemExit(1)
        if self._pool is None:
            # 'spawn': forking a process that already ran torch's thread pools can deadlock.
            self._pool = ProcessPoolExecutor(
                self.workers,
                initializer=_start_worker,
                initargs=(self._threads(), os.getpid()),
                mp_context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def stop(self) -> None:
        """End every worker process now (SIGKILL: workers ignore the stop signals, see
        ``_start_worker``) and reap it; jobs running are abandoned (a resume redoes them)."""
        # Every process this one started through multiprocessing: the pool's workers and the
        # ranks of a multi-process job. (ProcessPoolExecutor has no public way to end its
        # workers before Python 3.14's terminate_workers.)
        # Repeated until none is left: a child still being started when the list was taken
        # shows up only afterwards, and a busy machine may take more than a moment to reap.
        deadline = time.monotonic() + 60
        while (children := multiprocessing.active_children()) and time.monotonic() < deadline:
            for child in children:
                child.kill()
            for child in children:
                child.join(timeout=1)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._launcher is not None:
            self._launcher.shutdown(wait=False, cancel_futures=True)
            self._launcher = None

    def close(self) -> None:
        if self._launcher is not None:
            self._launcher.shutdown(wait=True, cancel_futures=True)
            self._launcher = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
