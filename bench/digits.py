"""Our MLP and CNN against scikit-learn's SVC on its digits example (the same 50/50 split).

The reference is scikit-learn's "Recognizing hand-written digits" example: the first half of
the 1797 images trains SVC(gamma=0.001), the second half tests it; the example reports 0.97.
Our models train on exactly the first half (no validation split, fixed epochs) over 5 seeds.

    python bench/digits.py [--seeds 5] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.svm import SVC

import tidian
from common import print_table

REFERENCE = 0.97


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    digits = load_digits()
    n = len(digits.target)
    half = n // 2  # train_test_split(test_size=0.5, shuffle=False) puts the first 898 in train
    train, test = np.arange(half), np.arange(half, n)

    start = time.perf_counter()
    svc = SVC(gamma=0.001).fit(digits.data[train], digits.target[train])
    svc_acc = svc.score(digits.data[test], digits.target[test])
    rows = [
        [
            "SVC(gamma=0.001), scikit-learn",
            f"{REFERENCE:.2f}",
            f"{svc_acc:.4f}",
            "—",
            "—",
            f"{time.perf_counter() - start:.1f}",
        ]
    ]

    images = digits.images.astype(np.float32)[:, None] / 16.0
    task = tidian.array_task(
        "digits-50/50", images, digits.target, parts=(train, train[:0], test), input_kind="image"
    )
    candidates = [
        (
            "mlp [256, 128]",
            {"name": "mlp", "hidden": [256, 128]},
            {"epochs": 60, "lr": 1e-3, "batch_size": 32},
        ),
        (
            "cnn2d width 32, depth 3",
            {"name": "cnn2d", "width": 32, "depth": 3},
            {"epochs": 40, "lr": 3e-3, "batch_size": 32},
        ),
    ]
    for label, model, config in candidates:
        start = time.perf_counter()
        result = tidian.evaluate(model, task, config, seeds=args.seeds, n_jobs=args.jobs)
        acc = result["accuracy"]
        rows.append(
            [
                f"{label} (tidian, {args.seeds} seeds)",
                f"{REFERENCE:.2f}",
                f"{acc.mean:.4f}",
                f"[{acc.low:.4f}, {acc.high:.4f}]",
                f"{acc.std:.4f}",
                f"{time.perf_counter() - start:.1f}",
            ]
        )
    print_table(
        "scikit-learn digits, first half train / second half test (899 test images)",
        ["model", "reference", "test accuracy", "95% CI", "std", "wall s"],
        rows,
        note="reference: scikit-learn's plot_digits_classification example (SVC).",
    )


if __name__ == "__main__":
    main()
