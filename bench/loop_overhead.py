"""tidian.fit against a minimal hand-written PyTorch loop: same model, data, epochs, batch size.

Both train the same MLP on MNIST-1D's 4000 training rows (no validation split, so fit does no
per-epoch evaluation the hand loop would not), one thread, repeats interleaved in one process
so machine noise hits both alike. Target: throughput ratio fit / hand >= 0.95 (median).

    python bench/loop_overhead.py [--repeats 11] [--epochs 10] [--model mlp]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import tidian
from common import print_table


def hand_loop(model, x, y, epochs, batch_size, seed, lr=1e-3):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch_size):
            index = order[i : i + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--model", default="mlp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = tidian.load_task("mnist1d", val_size=0)
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    config = tidian.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3)
    samples = len(y) * args.epochs
    rates = {"tidian.fit": [], "hand loop": []}
    for r in range(args.repeats + 1):  # the first round warms both up and is discarded
        for name in ["tidian.fit", "hand loop"] if r % 2 else ["hand loop", "tidian.fit"]:
            torch.manual_seed(r)
            model = tidian.create_model(args.model, task)
            start = time.perf_counter()
            if name == "tidian.fit":
                tidian.fit(model, task, config, seed=r)
            else:
                hand_loop(model, x, y, args.epochs, args.batch_size, r)
            if r:
                rates[name].append(samples / (time.perf_counter() - start))
    fit_rate = statistics.median(rates["tidian.fit"])
    hand_rate = statistics.median(rates["hand loop"])
    ratios = [f / h for f, h in zip(rates["tidian.fit"], rates["hand loop"])]
    rows = [
        ["hand loop", f"{hand_rate:,.0f}", "1.000", ""],
        [
            "tidian.fit",
            f"{fit_rate:,.0f}",
            f"{fit_rate / hand_rate:.3f}",
            f"{min(ratios):.3f}–{max(ratios):.3f}",
        ],
    ]
    print_table(
        f"Training throughput, {args.model} on mnist1d ({len(y)} rows, {args.epochs} epochs, "
        f"batch {args.batch_size}, 1 thread, median of {args.repeats})",
        ["loop", "samples/s", "ratio (target >= 0.95)", "per-repeat ratios"],
        rows,
    )


if __name__ == "__main__":
    main()
