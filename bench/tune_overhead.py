"""Per-trial cost of tidian's tune stage against a plain Optuna objective doing the same training.

Both run the same number of trials of the same search (random sampler, the learning rate of an
MLP on MNIST-1D, 1 thread, in-memory studies); the plain objective builds the model, trains it
with a minimal hand-written loop and reports validation accuracy after every epoch (what
pruning needs, and what tidian's trials do). Runs are interleaved and
repeated; the table gives median seconds per trial. Target: tidian at most 5% slower.

    python bench/tune_overhead.py [--trials 8] [--repeats 5] [--epochs 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import optuna
import torch

import tidian
from common import print_table
from tidian.stages import Context, Proposal
from tidian.stages.tune import Tune, TuneConfig

SPACE = {"lr": {"float": [1e-4, 1e-2], "log": True}}


def plain(task, trials: int, epochs: int) -> None:
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    xv, yv = torch.as_tensor(task.val.x), torch.as_tensor(task.val.y)

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        torch.manual_seed(0)
        model = tidian.create_model("mlp", task)
        generator = torch.Generator().manual_seed(0)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(y), generator=generator)
            for i in range(0, len(y), 100):
                index = order[i : i + 100]
                loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            model.eval()  # validation accuracy after every epoch, as pruning needs
            with torch.no_grad():
                accuracy = float((model(xv).argmax(1) == yv).float().mean())
            trial.report(accuracy, epoch)
        return accuracy

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=trials)


def ours(task, trials: int, epochs: int) -> None:
    incumbent = Proposal("b", {"name": "mlp"}, {"epochs": epochs, "batch_size": 100})
    stage = Tune(TuneConfig(space=SPACE, trials=trials, sampler="random", pruner="none"))
    stage.run(incumbent, Context(task, "accuracy", (0,)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = tidian.load_task("mnist1d")
    times: dict[str, list[float]] = {"plain Optuna + hand loop": [], "tidian tune": []}
    for r in range(args.repeats + 1):  # round 0 warms up and is discarded
        order = [("plain Optuna + hand loop", plain), ("tidian tune", ours)]
        for name, fn in order if r % 2 else reversed(order):
            start = time.perf_counter()
            fn(task, args.trials, args.epochs)
            if r:
                times[name].append((time.perf_counter() - start) / args.trials)
    base = statistics.median(times["plain Optuna + hand loop"])
    rows = [
        [name, f"{statistics.median(t):.3f}", f"{statistics.median(t) / base:.3f}"]
        for name, t in times.items()
    ]
    print_table(
        f"Seconds per trial: mlp on mnist1d, {args.epochs} epochs, {args.trials} trials, "
        f"median of {args.repeats} interleaved repeats (target: ratio <= 1.05)",
        ["objective", "s / trial", "ratio"],
        rows,
    )


if __name__ == "__main__":
    main()
