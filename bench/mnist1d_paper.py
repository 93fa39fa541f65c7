"""The MNIST-1D paper's baseline table, reproduced with tidian's zoo and training loop.

Greydanus & Kobak, "Scaling down deep learning with MNIST-1D" (ICML 2024), default data
(4000 train / 1000 test, generated with mnist1d's default arguments). Test accuracy:
logistic regression 32%, MLP 68%, CNN 94%, GRU 91%. Their training: Adam, lr 1e-2,
batch 100, 6000 steps (150 epochs), no weight decay; we use the same, train on all 4000
rows (no validation split) and report the final model over 5 seeds.

Architectures as in the paper's models.py, expressed as zoo options:
  logistic  linear
  MLP       40 -> 100 -> 100 -> 10, ReLU, the second layer residual
  CNN       3 conv layers of 25 channels, kernels 5/3/3, stride 2, flatten -> linear
  GRU       bidirectional, 6 hidden units, every step's state flattened -> linear

    python bench/mnist1d_paper.py [--seeds 5] [--jobs 2] [--epochs 150] [--only cnn,gru]
"""

from __future__ import annotations

import argparse
import time

import tidian
from common import print_table

ROWS = {
    "logistic": ("logistic regression", 0.32, {"name": "linear"}),
    "mlp": ("MLP", 0.68, {"name": "mlp", "hidden": [100, 100], "residual": True}),
    "cnn": (
        "CNN",
        0.94,
        {
            "name": "cnn1d",
            "width": 25,
            "depth": 3,
            "kernel_size": [5, 3, 3],
            "stride": 2,
            "readout": "flatten",
        },
    ),
    "gru": ("GRU", 0.91, {"name": "gru", "hidden": 6, "bidirectional": True, "readout": "flatten"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--only", default=",".join(ROWS))
    args = parser.parse_args()
    task = tidian.load_task("mnist1d", val_size=0)
    config = tidian.TrainConfig(optimizer="adam", lr=1e-2, batch_size=100, epochs=args.epochs)
    rows = []
    for key in args.only.split(","):
        label, reference, model = ROWS[key]
        start = time.perf_counter()
        result = tidian.evaluate(model, task, config, seeds=args.seeds, n_jobs=args.jobs)
        acc = result["accuracy"]
        params = tidian.count_parameters(
            tidian.create_model(
                model["name"], task, **{k: v for k, v in model.items() if k != "name"}
            )
        )
        rows.append(
            [
                label,
                f"{reference:.0%}",
                f"{acc.mean:.1%}",
                f"[{acc.low:.1%}, {acc.high:.1%}]",
                f"{acc.std:.1%}",
                f"{params:,}",
                f"{time.perf_counter() - start:.0f}",
            ]
        )
    print_table(
        f"MNIST-1D baselines: 4000 train / 1000 test, {args.seeds} seeds, Adam lr 1e-2, "
        f"batch 100, {args.epochs} epochs",
        ["model", "paper", "tidian mean", "95% CI", "std", "params", "wall s"],
        rows,
        note=f"wall s: all seeds, {args.jobs} worker processes of one thread each.",
    )


if __name__ == "__main__":
    main()
