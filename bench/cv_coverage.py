"""Do cross-validation intervals cover what they claim? Plain t over CV units vs the corrected
resampled t (Nadeau & Bengio) that tidian uses with ``evaluate.folds``.

The population is MNIST-1D's 5,000 rows. Each experiment draws a small data set of ``--rows``
rows, evaluates a small MLP on it by ``--folds``-fold cross-validation (``--seeds`` seeds, so
seeds × folds units) and forms the 95% interval of the mean test accuracy both ways. What the
interval should cover is the expected accuracy of the same procedure trained on a data set of
that size: estimated once, from ``--truth`` independent draws, each unit-sized training split
tested on 1,000 rows from outside its draw. Coverage comes with a Wilson 95% interval.

    python bench/cv_coverage.py [--experiments 200] [--rows 200] [--folds 5] [--seeds 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tidian
from common import print_table
from gate_calibration import wilson
from tidian import Split, Task
from tidian.evaluation.stats import confidence_interval

MODEL = {"name": "mlp", "hidden": [32]}
TRAIN = {"epochs": 60, "lr": 0.01, "batch_size": 32}
VAL_SHARE = 0.25  # of the non-test rows: small_task keeps 60/20/20, so CV units do too


def pooled() -> tuple[np.ndarray, np.ndarray, Task]:
    task = tidian.load_task("mnist1d")
    x = np.concatenate([task.train.x, task.val.x, task.test.x])
    y = np.concatenate([task.train.y, task.val.y, task.test.y])
    return x, y, task


def small_task(base: Task, x: np.ndarray, y: np.ndarray, name: str) -> Task:
    """A task over the rows (x, y): the CV units pool them whatever the split."""
    n = len(y)
    a, b = int(n * 0.6), int(n * 0.8)
    return base.replace(
        name=name,
        train=Split(x[:a], y[:a]),
        val=Split(x[a:b], y[a:b]),
        test=Split(x[b:], y[b:]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--truth", type=int, default=200)
    args = parser.parse_args()
    x, y, base = pooled()
    rng = np.random.default_rng(0)
    start = time.perf_counter()

    # the target: expected test accuracy of one unit's training on a fresh sample of its size
    train_rows = round(args.rows * (1 - 1 / args.folds))
    truth = []
    for t in range(args.truth):
        order = rng.permutation(len(y))
        inside, outside = order[:train_rows], order[train_rows : train_rows + 1000]
        v = round(train_rows * VAL_SHARE)
        task = base.replace(
            name="truth",
            train=Split(x[inside[v:]], y[inside[v:]]),
            val=Split(x[inside[:v]], y[inside[:v]]),
            test=Split(x[outside], y[outside]),
        )
        truth += tidian.evaluate(MODEL, task, TRAIN, seeds=[t], metrics=["accuracy"]).scores()
    target = float(np.mean(truth))

    covered = {"plain": 0, "corrected": 0}
    widths = {"plain": [], "corrected": []}
    for e in range(args.experiments):
        rows = rng.choice(len(y), args.rows, replace=False)
        task = small_task(base, x[rows], y[rows], f"sample {e}")
        ev = tidian.evaluate(
            MODEL, task, TRAIN, seeds=args.seeds, folds=args.folds, metrics=["accuracy"]
        )
        scores = ev.scores()
        intervals = {
            "plain": confidence_interval(scores),
            "corrected": confidence_interval(scores, correction=ev.correction),
        }
        for kind, (low, high) in intervals.items():
            covered[kind] += low <= target <= high
            widths[kind].append(high - low)
    seconds = time.perf_counter() - start
    n = args.experiments
    table = []
    for kind in ("plain", "corrected"):
        low, high = wilson(covered[kind], n)
        table.append(
            [
                f"{kind} t over {args.seeds * args.folds} units",
                f"{covered[kind]}/{n}",
                f"{covered[kind] / n:.1%}",
                f"[{low:.1%}, {high:.1%}]",
                f"{np.median(widths[kind]):.4f}",
            ]
        )
    print_table(
        f"CV interval coverage: {MODEL} on {args.rows}-row samples of mnist1d, "
        f"{args.folds} folds × {args.seeds} seeds, {n} experiments ({seconds:.0f} s)",
        ["95% interval", "covered", "rate", "Wilson 95% CI", "median width"],
        table,
        note=f"target: expected accuracy at {train_rows} rows = {target:.4f} "
        f"(mean of {args.truth} draws, sd {np.std(truth):.4f}); nominal coverage 95%.",
    )


if __name__ == "__main__":
    main()
