"""Seeds in one process (all cores as torch threads) vs worker processes of one thread each.

Same model, task and seeds; the two ways alternate over repeats. Worker processes start a
fresh interpreter that imports torch, so they pay off only when each seed trains long enough.

    python bench/seed_parallel.py [--model cnn1d] [--seeds 4] [--epochs 10,40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import tidian
from common import print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn1d")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", default="10,40")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    task = tidian.load_task("mnist1d")
    rows = []
    for epochs in [int(e) for e in args.epochs.split(",")]:
        config = {"epochs": epochs, "lr": 3e-3}
        times: dict[int, list[float]] = {1: [], cores: []}
        for _ in range(args.repeats):
            for jobs in (1, cores):
                torch.set_num_threads(cores)
                start = time.perf_counter()
                tidian.evaluate(args.model, task, config, seeds=args.seeds, n_jobs=jobs)
                times[jobs].append(time.perf_counter() - start)
        one, many = statistics.median(times[1]), statistics.median(times[cores])
        rows.append([str(epochs), f"{one:.1f}", f"{many:.1f}", f"{one / many:.2f}"])
    print_table(
        f"{args.seeds} seeds of {args.model} on mnist1d, median of {args.repeats}",
        ["epochs", f"1 process, {cores} threads (s)", f"{cores} workers, 1 thread (s)", "speed-up"],
        rows,
    )


if __name__ == "__main__":
    main()
