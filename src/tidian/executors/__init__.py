"""Executors run training jobs: in-process or in local worker processes."""

from tidian.executors.local import Job, LocalExecutor

__all__ = ["Job", "LocalExecutor"]
