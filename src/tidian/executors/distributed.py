"""One job, several processes: the torch.distributed group a multi-process job trains in.

A job with ``processes = N`` (a model trained with ``train.distributed``) runs as N copies of
the same job, ranks 0..N-1, joined in one torch.distributed process group — gloo on CPU,
NCCL on GPUs (``backend: auto``) — that ``training.loop.fit`` detects and trains with (DDP).
Rank 0 writes the artifact and its result is the job's; the other ranks return None.
Executors launch the ranks: the local one as N processes on this machine, the Ray one as N
tasks placed by a placement group (several nodes when one has too few CPUs).
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Sequence
from typing import Any

from tidian.executors.base import Job, WorkerLost, execute


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for the group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def backend_for(job: Job) -> str:
    """The group's backend: the job's ``train.distributed.backend``, or NCCL when CUDA is
    here and the job trains on it, else gloo."""
    import torch

    train = (job.config.get("train") or {}) if isinstance(job.config, dict) else {}
    asked = (train.get("distributed") or {}).get("backend", "auto")
    if asked != "auto":
        return asked
    device = str(train.get("device", "auto"))
    cuda = torch.cuda.is_available() and device != "cpu"
    return "nccl" if cuda else "gloo"


def run_rank(
    job: Job,
    imports: Sequence[str],
    rank: int,
    world: int,
    address: str,
    port: int,
    backend: str,
    local_rank: int | None = None,
    **where: Any,
) -> Any:
    """Join the group as ``rank`` of ``world`` (rendezvous at ``address:port``), run the job,
    leave the group. Returns the job's result on rank 0, None elsewhere."""
    import torch
    import torch.distributed as dist

    os.environ["LOCAL_RANK"] = str(rank if local_rank is None else local_rank)
    dist.init_process_group(
        backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world
    )
    try:
        if backend == "gloo":
            torch.set_num_threads(max(1, torch.get_num_threads()))
        result = execute(job, imports, rank=rank, world=world, **where)
    finally:
        dist.destroy_process_group()
    return result if rank == 0 else None


def _portable(err: BaseException) -> bytes:
    """``err`` pickled, or a RuntimeError with its text when it does not pickle."""
    try:
        return pickle.dumps(err)
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))


def _spawned(
    rank: int,
    job: Job,
    imports: Sequence[str],
    world: int,
    port: int,
    backend: str,
    results: Any,
) -> None:
    import torch

    torch.set_num_threads(1)  # as the local pool's workers: one thread per process
    try:
        result = run_rank(job, imports, rank, world, "127.0.0.1", port, backend, executor="local")
    except BaseException as err:
        results.put(("error", rank, _portable(err)))
        raise  # a non-zero exit: the launcher stops the other ranks
    if rank == 0:
        # plain pickle, not torch's shared-memory handles: this process is about to exit
        results.put(("done", rank, pickle.dumps(result)))


def run_local(job: Job, imports: Sequence[str]) -> Any:
    """Run a multi-process job as ``job.processes`` spawned processes on this machine;
    returns rank 0's result. A rank that fails fails the job with its error."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    world = job.processes
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    try:
        mp.start_processes(
            _spawned,
            args=(job, tuple(imports), world, free_port(), backend_for(job), results),
            nprocs=world,
            join=True,
            start_method="spawn",
        )
    except ProcessException as lost:
        while not results.empty():
            kind, _, value = results.get()
            if kind == "error":
                raise pickle.loads(value) from None  # the rank's own error, as raised
        raise WorkerLost(f"a process of {job.describe()} stopped: {lost}") from None
    _, _, value = results.get()
    return pickle.loads(value)
