"""Scale-out on Ray: per-job overhead against the local executor, seeds over two nodes against
one, and one model trained by one or two processes (DDP).

Ray's servers listen on every interface, so this benchmark runs inside a private network
namespace with loopback alone (it re-runs itself under `unshare --net`: root, or unprivileged
user namespaces). Every cluster here is local: nodes are separate Ray raylets on this machine.

    python bench/scale_out.py [--repeats 3] [--seconds 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import time

import tidian
from common import machine, print_table


def private_network() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def reexec_in_private_network() -> None:
    if shutil.which("unshare") is None:
        sys.exit("scale_out: needs unshare (util-linux) to run Ray in a private network.")
    flags = ["--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    command = f"ip link set lo up && exec {sys.executable} {' '.join(sys.argv)}"
    os.execvp("unshare", ["unshare", *flags, "bash", "-c", command])


def train_jobs(task, model, train, seeds) -> list:
    from tidian.evaluation.evaluate import train_jobs as make
    from tidian.training.config import TrainConfig

    return make(model, [(s, task, s) for s in seeds], TrainConfig.from_dict(train), ["accuracy"])


def timed(executor, jobs) -> float:
    start = time.perf_counter()
    executor.gather(jobs)
    return time.perf_counter() - start


def calibrate(task, model, seconds: float) -> int:
    """Epochs for one job of about ``seconds`` on one thread."""
    import torch

    torch.set_num_threads(1)
    probe = {"epochs": 2, "batch_size": 64, "lr": 0.003}
    from tidian.executors import LocalExecutor

    with LocalExecutor(1) as one:
        one.gather(train_jobs(task, model, probe, [0]))  # warm-up
        per_epoch = timed(one, train_jobs(task, model, probe, [1])) / 2
    return max(1, round(seconds / per_epoch))


def overhead(args, task, model, rows) -> None:
    """The same jobs on LocalExecutor(2) and on a one-node Ray of 2 CPUs, warm, alternated."""
    import ray

    from tidian.executors import LocalExecutor
    from tidian.executors.ray import RayExecutor

    iris = tidian.load_task("iris")
    short = (iris, {"name": "mlp", "hidden": [16]}, {"epochs": 5, "batch_size": 16}, 16)
    epochs = calibrate(task, model, args.seconds)
    long = (task, model, {"epochs": epochs, "batch_size": 64, "lr": 0.003}, 4)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    with LocalExecutor(2) as local, RayExecutor(None) as on_ray:
        for label, (t, m, train, n) in (
            ("short jobs (mlp, iris, 5 epochs)", short),
            (
                f"{args.seconds:g}-second jobs (mlp, mnist1d, {epochs} epochs)",
                long,
            ),
        ):
            times = {"local": [], "ray": []}
            timed(local, train_jobs(t, m, train, range(2)))  # workers up, task data warm
            timed(on_ray, train_jobs(t, m, train, range(2)))
            for _ in range(args.repeats):
                for name, ex in (("local", local), ("ray", on_ray)):
                    times[name].append(timed(ex, train_jobs(t, m, train, range(n))))
            lo, ra = statistics.median(times["local"]), statistics.median(times["ray"])
            rows.append(
                [
                    f"{label}: {n} jobs, 2 at a time",
                    f"{lo:.2f} s",
                    f"{ra:.2f} s",
                    f"{(ra - lo) / n * 1000:+.0f} ms/job ({(ra / lo - 1) * 100:+.1f}%)",
                ]
            )
    ray.shutdown()


def two_nodes(args, task, model, rows) -> None:
    """8 seeds of about ``seconds`` each: one node of 1 CPU against two such nodes."""
    import ray
    from ray.cluster_utils import Cluster

    from tidian.executors.ray import RayExecutor

    epochs = calibrate(task, model, args.seconds)
    train = {"epochs": epochs, "batch_size": 64, "lr": 0.003}
    seeds = 8 if not args.quick else 4
    results = {}
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        with RayExecutor(cluster.address) as ex:
            timed(ex, train_jobs(task, model, {**train, "epochs": 1}, range(nodes)))  # warm
            results[nodes] = timed(ex, train_jobs(task, model, train, range(seeds)))
        ray.shutdown()
        cluster.shutdown()
    rows.append(
        [
            f"{seeds} seeds of ~{args.seconds:g} s: 1 node (1 CPU) → 2 nodes (1 CPU each)",
            f"{results[1]:.1f} s",
            f"{results[2]:.1f} s",
            f"{results[1] / results[2]:.2f}× faster",
        ]
    )


def ddp(args, rows) -> None:
    """Time per epoch of one transformer on mnist1d, global batch 512: 1 and 2 processes."""
    from tidian.evaluation.evaluate import train_jobs as make
    from tidian.executors import LocalExecutor
    from tidian.training.config import TrainConfig

    task = tidian.load_task("mnist1d")
    model = {"name": "transformer", "width": 64, "heads": 4, "depth": 2}
    epochs = 2 if args.quick else 4
    per_epoch = {}
    for workers in (1, 2):
        train = TrainConfig(
            epochs=epochs,
            batch_size=512 // workers,
            lr=0.003,
            distributed={"workers": workers} if workers > 1 else None,
        )
        with LocalExecutor(1) as ex:
            (run,) = ex.gather(make(model, [(0, task, 0)], train, ["accuracy"]))
        per_epoch[workers] = statistics.median(run.history.curve("seconds")[1:] or [0])
    rows.append(
        [
            "DDP: transformer on mnist1d, global batch 512 — s/epoch, 1 → 2 processes",
            f"{per_epoch[1]:.2f} s",
            f"{per_epoch[2]:.2f} s",
            f"{per_epoch[1] / per_epoch[2]:.2f}× faster",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="fewer seeds and epochs")
    args = parser.parse_args()
    if not private_network():
        reexec_in_private_network()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    task = tidian.load_task("mnist1d")
    model = {"name": "mlp", "hidden": [256, 256]}
    rows: list[list[str]] = []
    overhead(args, task, model, rows)
    two_nodes(args, task, model, rows)
    ddp(args, rows)
    print_table(
        f"scale-out on Ray ({machine()}); medians of {args.repeats} alternated repeats",
        ["what", "local / 1 node / 1 process", "Ray / 2 nodes / 2 processes", "difference"],
        rows,
        note="targets: ≤ 5% extra wall time on 10-second jobs; ≥ 1.8× with two nodes",
    )


if __name__ == "__main__":
    main()
