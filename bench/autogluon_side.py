"""AutoGluon's side of ``bench/vs_autogluon.py``, run by a Python that has AutoGluon-Tabular
(its own environment: AutoGluon pins its own versions of what tidian uses).

    AG_PYTHON bench/autogluon_side.py DATA.npz TIME_LIMIT_S FITS PRESET > result.json

DATA.npz holds the rows tidian's run used: ``x_train``/``y_train``, ``x_val``/``y_val`` (given
as AutoGluon's tuning data), ``x_test``/``y_test`` (the run's test rows) and
``x_holdout``/``y_holdout`` (the rows its confirmation scores), and ``kind`` ("classes" or
"values"). Each fit is scored on the test and holdout rows (accuracy, or RMSE; its predictions
there are kept, for the paired gap), its wall time,
its folder's size on disk and its batch-1 predict latency (median of 50 calls on one row) are
measured; the JSON has one object per fit.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd


def frame(x: np.ndarray, y: np.ndarray | None = None) -> pd.DataFrame:
    data = pd.DataFrame(x.reshape(len(x), -1), columns=[f"f{i}" for i in range(x[0].size)])
    if y is not None:
        data["label"] = y
    return data


def folder_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def score(predictor, x: np.ndarray, y: np.ndarray, classes: bool) -> tuple[float, list]:
    """(accuracy or RMSE, the predictions: class numbers or values)."""
    predicted = np.asarray(predictor.predict(frame(x)))
    if classes:
        return float((predicted == y).mean()), [int(p) for p in predicted]
    predicted = predicted.astype(float)
    return float(np.sqrt(np.mean((predicted - y) ** 2))), [float(p) for p in predicted]


def main() -> None:
    from autogluon.tabular import TabularPredictor

    path, limit, fits, preset = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    data = np.load(path, allow_pickle=False)
    classes = str(data["kind"]) == "classes"
    train = frame(data["x_train"], data["y_train"])
    val = frame(data["x_val"], data["y_val"])
    results = []
    for fit in range(fits):
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor = TabularPredictor(
                label="label",
                path=folder,
                problem_type=None if classes else "regression",
                eval_metric="accuracy" if classes else "root_mean_squared_error",
                verbosity=0,
            )
            start = time.perf_counter()
            predictor.fit(
                train,
                tuning_data=val,
                presets=preset,
                time_limit=limit,
                # each fit its own seed for every model (AutoGluon's default is one fixed seed)
                ag_args_fit={"random_seed": fit},
            )
            wall = time.perf_counter() - start
            one = frame(data["x_test"][:1])
            predictor.predict(one)
            calls = []
            for _ in range(50):
                t = time.perf_counter()
                predictor.predict(one)
                calls.append(time.perf_counter() - t)
            test = score(predictor, data["x_test"], data["y_test"], classes)
            holdout = (
                score(predictor, data["x_holdout"], data["y_holdout"], classes)
                if len(data["y_holdout"])
                else (None, None)
            )
            results.append(
                {
                    "test": test[0],
                    "holdout": holdout[0],
                    "predicted": {"test": test[1], "holdout": holdout[1]},
                    "seconds": wall,
                    "bytes": folder_size(folder),
                    "latency_ms": float(np.median(calls)) * 1e3,
                    "best": predictor.model_best,
                }
            )
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
