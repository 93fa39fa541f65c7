"""Executors run jobs: in this process, or in local worker processes (``executors.base`` holds
the contract every executor keeps, and the registry of job handlers)."""

from tidian.executors.base import (
    JOBS,
    Executor,
    Job,
    WorkerLost,
    execute,
    job_handler,
    worker_info,
)
from tidian.executors.local import LocalExecutor

__all__ = [
    "JOBS",
    "Executor",
    "Job",
    "LocalExecutor",
    "WorkerLost",
    "execute",
    "job_handler",
    "worker_info",
]
