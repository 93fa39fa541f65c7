"""Job handlers for the executor suite. They live outside tidian, in a module a worker
process must import by name — as a user's own handlers would."""

from __future__ import annotations

import os
from pathlib import Path

from tidian.exceptions import ConfigError
from tidian.executors import Job, job_handler


@job_handler("test.square")
def square(job: Job) -> dict:
    return {"square": job.config["x"] ** 2, "seed": job.seed, "pid": os.getpid()}


@job_handler("test.wait_for")
def wait_for(job: Job) -> int:
    """Finish only once the file ``config.after`` exists (then write ``config.mark``): jobs
    that must finish in a set order, without a fixed sleep."""
    import time

    after = job.config.get("after")
    while after and not Path(after).exists():
        time.sleep(0.01)
    Path(job.config["mark"]).write_text("done")
    return job.config["x"]


@job_handler("test.fail")
def fail(job: Job) -> None:
    raise ConfigError(job.config["message"])


@job_handler("test.die")
def die(job: Job) -> None:
    os._exit(3)  # the worker process vanishes, as when it is killed


@job_handler("test.write")
def write(job: Job) -> str:
    """Writes its artifact the way every job does: to job.out, through a temporary folder."""
    from tidian.store.artifacts import writing

    with writing(job.out) as folder:
        (folder / "value.txt").write_text(str(job.config["x"]))
    return job.out


@job_handler("test.hold")
def hold(job: Job) -> dict:
    """Say which node it runs on (in ``config.started``), then wait for ``config.gate``."""
    import time

    from tidian.executors import worker_info

    where = worker_info()
    Path(job.config["started"]).write_text(f"{where.get('node')} {os.getpid()}")
    while not Path(job.config["gate"]).exists():
        time.sleep(0.01)
    return where


@job_handler("test.hang")
def hang(job: Job) -> None:
    """Say it started (its pid in ``config.started``), then run until stopped from outside."""
    import time

    Path(job.config["started"]).write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)
