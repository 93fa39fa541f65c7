"""Whether a process still runs: a run's driver (stale runs), the writer of an abandoned
temporary folder. Linux reads /proc (a zombie is not running, and a pid with another start
time is another process); elsewhere a signal 0 probe."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), None if absent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None where unknown: with the
    pid it names one process even after the pid is reused."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` runs (and, given ``started``, is the one that started then)."""
    if Path("/proc").is_dir():
        fields = _stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return started is None or process_start(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True
