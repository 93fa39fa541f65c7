"""Tune from the MNIST-1D paper's MLP to a strong model, through the whole pipeline.

Recipe: the paper's MLP as the baseline (5 seeds), then a `tune` stage (TPE, median pruning)
over 1-D CNN shapes and training settings; the top 3 trials are re-trained on the 5 seeds and
gated on the test split. Goal: >= 98% test accuracy (mean over 5 seeds) in <= 20 minutes on
a 2-core machine. Prints the best configuration, the trial count and the wall time.

    python bench/tune_mnist1d.py [--trials 24] [--jobs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import tidian
from common import print_table

SPACE = {
    "lr": {"float": [1e-3, 1e-2], "log": True},
    "epochs": {"int": [20, 40], "step": 10},
    "schedule": {"choice": ["cosine", "onecycle"]},
    "model": {
        "choice": [
            {
                "name": "cnn1d",
                "width": {"int": [16, 64], "log": True},
                "depth": {"int": [2, 4]},
                "kernel_size": {"choice": [3, 5, 7]},
                "norm": "batch",
                "residual": {"choice": [True, False]},
                "pool": {"choice": [True, False]},
            },
        ]
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    recipe = {
        "task": "mnist1d",
        "model": {"name": "mlp", "hidden": [100, 100], "residual": True},
        "train": {"optimizer": "adam", "lr": 0.01, "epochs": 30, "batch_size": 100},
        "evaluate": {"metric": "accuracy", "seeds": args.seeds},
        "stages": [
            {
                "tune": {
                    "trials": args.trials,
                    "sampler": "tpe",
                    "pruner": "median",
                    "top_k": 3,
                    "space": SPACE,
                }
            }
        ],
    }
    with tempfile.TemporaryDirectory() as folder:
        store = tidian.Store(f"sqlite:///{folder}/tune.db")
        start = time.perf_counter()
        result = tidian.run(recipe, store=store, jobs=args.jobs)
        seconds = time.perf_counter() - start
        report = store.stages(result.run_id)[1]["report"]
    rows = []
    for row in result.candidates:
        q = row["quality"]
        rows.append(
            [
                row["label"],
                f"{q['mean']:.2%}",
                f"[{q['ci_low']:.2%}, {q['ci_high']:.2%}]",
                f"{row['cost']['params']:,}",
                row["decision"],
            ]
        )
    best = result.incumbent
    print_table(
        f"Tuning mnist1d from the paper's MLP: {report['trials']} trials ({report['complete']} "
        f"complete, {report['pruned']} pruned, {report['failed']} failed), {args.seeds} seeds, "
        f"{args.jobs} workers, {seconds / 60:.1f} min in all (goal: >= 98% in <= 20 min)",
        ["candidate", "test accuracy", "95% CI", "params", "decision"],
        rows,
        note=f"best: {best['model']} with "
        f"{ {k: best['train'][k] for k in ('lr', 'epochs', 'schedule')} }\n"
        f"importances: { {k: round(v, 3) for k, v in report.get('importances', {}).items()} }",
    )


if __name__ == "__main__":
    main()
