"""Does the gate hold when the test set is a sample too? Seeds alone against seeds × test rows.

A test set is a draw from the rows a model will meet. Two different models get different rows
right, so on a small test set one of them can look better on every seed because of which rows
happened to be drawn: a t over seeds alone cannot see that. This benchmark measures it.

A synthetic classification task (scikit-learn's make_classification with 10% flipped labels)
is trained on 630 rows; a pool of 19,950 rows stands for the population. Each configuration is
trained on --trainings seeds and every seed's outputs on the whole pool are kept. The true
gain of B over A is the mean over all seeds of their accuracy on the whole pool. Each
experiment then draws S seeds (the same for both sides, paired as in a run) and a fresh test
set of R rows from the pool, and gates B against A the way the pipeline does:

* seeds: the paired t over the S per-seed accuracies (the gate before row sampling counted);
* seeds × rows: the same mean, with the variance of the crossed design (the seeds' variance
  plus the test rows' part, from jackknife pseudo-values over 50 row groups;
  ``tidian.evaluation.stats.mean_variance``), Welch–Satterthwaite degrees of freedom;
* seeds × rows, df n−1: the same variance with the seeds' degrees of freedom (never less
  strict than seeds alone).

"beyond truth" is the share of experiments whose lower 95% bound lies above the true gain (a
claim of more than there is; the gate's one-sided error, target ≤ 2.5%, ≤ 5% at most);
"detected" the share whose lower bound lies above zero (power, when the true gain is positive).
Experiments draw their seeds from the shared trainings, so their Wilson intervals are a guide.

    python bench/row_sampling.py [--trainings 150] [--experiments 1000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats as sps

from common import print_table, wilson
from tidian.evaluation.evaluate import train_jobs
from tidian.evaluation.stats import mean_variance
from tidian.executors import LocalExecutor
from tidian.metrics import row_pseudo_values
from tidian.tasks import load_task
from tidian.training.config import TrainConfig

TASK = {
    "name": "synthetic",
    "n_samples": 21_000,
    "val_size": 0.02,
    "test_size": 0.95,
    "n_informative": 8,
    "flip_y": 0.1,
    "seed": 3,
}
PAIRS = {
    # two different models: row effects differ (the case row sampling is about)
    "logistic → mlp [32]": (
        ({"name": "mlp", "hidden": []}, {"epochs": 30, "lr": 0.003}),
        ({"name": "mlp", "hidden": [32]}, {"epochs": 30, "lr": 0.003}),
    ),
    "mlp [8] → mlp [32]": (
        ({"name": "mlp", "hidden": [8]}, {"epochs": 30, "lr": 0.003}),
        ({"name": "mlp", "hidden": [32]}, {"epochs": 30, "lr": 0.003}),
    ),
    # more epochs of the same model
    "mlp [32]: 8 → 30 epochs": (
        ({"name": "mlp", "hidden": [32]}, {"epochs": 8, "lr": 0.003}),
        ({"name": "mlp", "hidden": [32]}, {"epochs": 30, "lr": 0.003}),
    ),
}


def pool_outputs(model, train, task, seeds, jobs) -> np.ndarray:
    """Every seed's raw outputs on the pool (seeds × rows × classes)."""
    config = TrainConfig.coerce({**train, "batch_size": 32})
    work = train_jobs(model, [(s, task, s) for s in seeds], config, ["accuracy"], outputs=["test"])
    done = {}
    with LocalExecutor(jobs) as runner:
        for _, result in runner.run(work):
            done[result.seed] = result.info["outputs"]["test"]
    return np.stack([done[s] for s in seeds])


def bounds(a, b, y, idx) -> dict[str, float]:
    """Lower 95% bounds of B − A on rows ``idx`` under each variance."""
    acc_a = (a[:, idx].argmax(2) == y[idx]).mean(1)
    acc_b = (b[:, idx].argmax(2) == y[idx]).mean(1)
    d = acc_b - acc_a
    table = np.array(
        [
            np.subtract(
                row_pseudo_values(y[idx], b[s, idx], ["accuracy"])["accuracy"],
                row_pseudo_values(y[idx], a[s, idx], ["accuracy"])["accuracy"],
            )
            for s in range(len(d))
        ]
    )
    seeds = mean_variance(d)
    crossed = mean_variance(d, rows=table)
    q = (1 + 0.95) / 2

    def low(variance: float, df: float) -> float:
        if variance <= 0:  # no spread at all: the mean itself
            return float(d.mean())
        return float(d.mean() - sps.t.ppf(q, df) * math.sqrt(variance))

    return {
        "seeds": low(seeds.variance, seeds.df),
        "seeds × rows": low(crossed.variance, crossed.df),
        "seeds × rows, df n−1": low(crossed.variance, len(d) - 1),
        "row share": crossed.row_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=150, help="seeds per configuration")
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    task = load_task(dict(TASK))
    y = task.test.y
    seeds = list(range(args.trainings))
    start = time.perf_counter()
    outputs = {}
    for pair, sides in PAIRS.items():
        outputs[pair] = [pool_outputs(m, t, task, seeds, args.jobs) for m, t in sides]
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    methods = ("seeds", "seeds × rows", "seeds × rows, df n−1")
    rows = []
    for pair, (a, b) in outputs.items():
        truth = float(((b.argmax(2) == y).mean(1) - (a.argmax(2) == y).mean(1)).mean())
        for n_seeds in (3, 5):
            for n_rows in (100, 400, 2000):
                beyond = dict.fromkeys(methods, 0)
                detected = dict.fromkeys(methods, 0)
                shares = []
                for _ in range(args.experiments):
                    pick = rng.choice(len(seeds), size=n_seeds, replace=False)
                    idx = rng.choice(len(y), size=n_rows, replace=False)
                    low = bounds(a[pick], b[pick], y, idx)
                    shares.append(low["row share"])
                    for m in methods:
                        beyond[m] += low[m] > truth
                        detected[m] += low[m] > 0
                n = args.experiments
                for m in methods:
                    lo, hi = wilson(beyond[m], n)
                    rows.append(
                        [
                            f"{pair} (true {truth * 100:+.2f} pt)",
                            f"{n_seeds} × {n_rows}",
                            m,
                            f"{beyond[m] / n:.1%} [{lo:.1%}, {hi:.1%}]",
                            f"{detected[m] / n:.1%}",
                            f"{np.median(shares):.0%}" if m == "seeds × rows" else "",
                        ]
                    )
    print_table(
        f"Gate over seeds and test rows: {args.experiments} experiments per row, "
        f"{args.trainings} trainings per configuration ({seconds:.0f} s)",
        ["B against A", "seeds × rows", "variance", "beyond truth", "detected", "rows' share"],
        rows,
        note="beyond truth: lower 95% bound above the true gain (target ≤ 2.5%); detected: "
        "lower bound above 0. rows' share: median part of the variance from the test rows.",
    )


if __name__ == "__main__":
    main()
