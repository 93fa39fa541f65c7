"""Samplers at an equal trial budget on the same space: the best validation score each finds.

Space (numeric, so CMA-ES can take it): MLP width and dropout, learning rate, weight decay and
epochs, on the breast-cancer task (small, so many studies fit in a few minutes). Each sampler
runs ``--repeats`` studies with different sampler seeds; the table gives the validation log
loss of each study's best configuration (median, best, worst). It compares search
efficiency only: the pipeline re-trains the chosen configurations on all seeds.

    python bench/tune_samplers.py [--trials 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import tidian
from common import print_table
from tidian.stages import Context, Proposal
from tidian.stages.tune import Tune, TuneConfig

SPACE = {
    "lr": {"float": [1e-4, 1e-1], "log": True},
    "weight_decay": {"float": [0.0, 0.1]},
    "epochs": {"int": [5, 40]},
    "model": {
        "name": "mlp",
        "width": {"int": [4, 128], "log": True},
        "dropout": {"float": [0.0, 0.5]},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--task", default="breast_cancer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = tidian.load_task(args.task)
    incumbent = Proposal("b", {"name": "mlp"}, {"epochs": 10, "batch_size": 32})
    rows = []
    for sampler in ("random", "tpe", "gp", "cmaes", "qmc"):
        best, start = [], time.perf_counter()
        for seed in range(args.repeats):
            context = Context(task, "log_loss", (0,))
            config = TuneConfig(
                space=SPACE,
                trials=args.trials,
                sampler=sampler,
                pruner="none",
                seed=seed,
                objectives=["log_loss"],
            )
            (top,) = Tune(config).run(incumbent, context)
            torch.manual_seed(0)
            model = tidian.create_model(
                "mlp", task, **{k: v for k, v in top.model.items() if k != "name"}
            )
            tidian.fit(model, task, top.train, seed=0)
            best.append(tidian.score(model, task, "val", ["log_loss"])["log_loss"])
        rows.append(
            [
                sampler,
                f"{statistics.median(best):.4f}",
                f"{min(best):.4f}",
                f"{max(best):.4f}",
                f"{(time.perf_counter() - start) / args.repeats:.1f}",
            ]
        )
    print_table(
        f"Best validation log loss found in {args.trials} trials on {args.task} "
        f"({args.repeats} studies per sampler; lower is better)",
        ["sampler", "median", "best", "worst", "s / study"],
        rows,
    )


if __name__ == "__main__":
    main()
