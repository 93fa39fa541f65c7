"""Tabular tasks: zoo networks against LightGBM, XGBoost and ensembles (breast_cancer, wine,
penguins; 5 seeds each).

One tidian run per task: an MLP baseline, an ``architecture`` stage (logistic regression, a
wider MLP with dropout), then an ``ensemble`` stage with ``members: boosting`` (the incumbent
beside a LightGBM model converted to tensors: averaged, weighted and greedy on validation),
then LightGBM alone and XGBoost alone (ensembles with fixed weights [0, 1]). Every candidate
shares the seeds, so every gain is paired; the gate (Holm-corrected) decides.

    python bench/tabular.py [--seeds 5] [--jobs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tidian
from common import candidate_rows, print_table

TASKS = ("breast_cancer", "wine", "penguins")


def recipe(task: str, seeds: int) -> dict:
    boosting = {"members": "boosting", "k": 2, "lightgbm": {"n_estimators": 200}}
    return {
        "task": task,
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"epochs": 60, "lr": 0.003, "batch_size": 32},
        "evaluate": {"seeds": seeds},
        "stages": [
            {
                "architecture": {
                    "candidates": [
                        {"name": "linear"},
                        {"name": "mlp", "hidden": [128, 64], "dropout": 0.2},
                    ]
                }
            },
            {"ensemble": {**boosting, "combine": ["average", "weighted", "greedy"]}},
            {"ensemble": {**boosting, "combine": "weighted", "weights": [0, 1]}},
            {
                "ensemble": {
                    **boosting,
                    "booster": "xgboost",
                    "combine": "weighted",
                    "weights": [0, 1],
                }
            },
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    for task in TASKS:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            store = tidian.Store(f"sqlite:///{Path(folder) / 'ledger.db'}")
            result = tidian.run(recipe(task, args.seeds), store=store, jobs=args.jobs)
        rows = candidate_rows(result, "mlp [32] (baseline)")
        for row, c in zip(rows, result.candidates):
            if c["label"].endswith("weighted") and c["stage_position"] in (3, 4):
                lib = "LightGBM" if c["stage_position"] == 3 else "XGBoost"
                row[0] = f"{lib} alone (ensemble weights [0, 1])"
        print_table(
            f"{task}: {args.seeds} seeds ({(time.perf_counter() - start) / 60:.1f} min)",
            ["candidate", "test accuracy (95% CI)", "paired gain vs incumbent", "gate"],
            rows,
            note="ensembles (stage 2) are gated against the incumbent after the architecture "
            "stage; LightGBM alone (stage 3) and XGBoost alone (stage 4) against the incumbent "
            "before them.",
        )


if __name__ == "__main__":
    main()
