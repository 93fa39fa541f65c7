"""Executors run training jobs: in-process or in local worker processes."""

from tidian.executors.local import LocalExecutor

__all__ = ["LocalExecutor"]
