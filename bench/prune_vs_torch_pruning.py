"""Structured pruning: tidian against Torch-Pruning at the same ratio and the same fine-tuning.

Two models: a user's own SE-block CNN with a residual block on digits (tidian has no finder for
it: its units are traced), and the zoo's cnn1d on mnist1d (tidian's hand-written finder). Per
seed: train the model; prune a copy with tidian (`prune_`, L1 importance, per layer) and a copy
with Torch-Pruning (`MetaPruner`, L1 magnitude importance, per layer, the output layer
ignored), both by the same fraction of channels; fine-tune both with the same `tidian.fit`
call. Reported: test accuracy over the seeds (mean and 95% CI), parameters, batch-1 latency
in torch and in ONNX Runtime (medians of interleaved rounds, first seed's models).

    python bench/prune_vs_torch_pruning.py [--seeds 3] [--amount 0.5] [--finetune-epochs 10]

Needs torch-pruning (`pip install 'tidian[prune]'`).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import tidian
from common import interleaved_costs, print_table
from tidian.compression import PruneConfig, prune_
from tidian.evaluation.cost import measure_cost, measure_onnx_cost
from tidian.evaluation.stats import summarize
from tidian.export import export_onnx
from tidian.metrics import compute_metrics, predict


class Excite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.squeeze = nn.Linear(channels, channels // 4)
        self.excite = nn.Linear(channels // 4, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


class SEResNet(nn.Module):
    """stem conv + BN + SE, two residual conv blocks with SE, a wider conv, pooled head."""

    def __init__(self, classes: int, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
                Excite(width),
            )
            for _ in range(2)
        )
        self.wide = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)
        )
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for block in self.blocks:
            h = torch.relu(h + block(h))
        h = torch.relu(self.wide(h)).mean((2, 3))
        return self.head(h)


@tidian.register_model("bench_seresnet", inputs=("image",))
def seresnet(sig: tidian.Signature, *, width: int = 64) -> nn.Module:
    """A squeeze-and-excitation residual CNN (not in tidian's zoo)."""
    return SEResNet(sig.n_outputs, width)


CASES = {
    "SE-ResNet (own module), digits": (
        "digits",
        {"name": "bench_seresnet", "width": 64},
        {"epochs": 30, "lr": 0.003, "batch_size": 64},
    ),
    "cnn1d (zoo), mnist1d": (
        "mnist1d",
        {"name": "cnn1d", "width": 64, "depth": 3},
        {"epochs": 30, "lr": 0.003, "batch_size": 64},
    ),
}


def prune_with_torch_pruning(model: nn.Module, task, amount: float) -> nn.Module:
    import torch_pruning as tp

    example = torch.as_tensor(task.train.x[:4])
    outputs = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]  # the classifier
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=outputs,
    )
    pruner.step()
    return model


def accuracy(model: nn.Module, task) -> float:
    return compute_metrics(task.test.y, predict(model.eval(), task.test.x), ["accuracy"])[
        "accuracy"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--amount", type=float, default=0.5)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=500)
    args = parser.parse_args()
    if importlib.util.find_spec("torch_pruning") is None:
        sys.exit("prune_vs_torch_pruning: needs torch-pruning (pip install 'tidian[prune]').")
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="tidian-prune-vs-tp-"))
    start = time.perf_counter()
    rows = []
    for case, (task_name, spec, train) in CASES.items():
        task = tidian.load_task(task_name)
        scores: dict[str, list[float]] = {}
        first: dict[str, nn.Module] = {}
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            options = {k: v for k, v in spec.items() if k != "name"}
            base = tidian.create_model(spec["name"], task, **options)
            tidian.fit(base, task, train, seed=seed)
            ours, _ = prune_(copy.deepcopy(base), PruneConfig(amount=args.amount), task, seed=seed)
            theirs = prune_with_torch_pruning(copy.deepcopy(base), task, args.amount)
            tune = {**train, "epochs": args.finetune_epochs}
            for model in (ours, theirs):
                tidian.fit(model, task, tune, seed=seed + 1000)
            for name, model in (("baseline", base), ("tidian", ours), ("Torch-Pruning", theirs)):
                scores.setdefault(name, []).append(accuracy(model, task))
                first.setdefault(name, model.eval())
        files = {}
        for name, model in first.items():
            files[name] = work / f"{case[:6]}-{name}.onnx"
            assert export_onnx(model, task, files[name]).passed, name
        torch_costs = interleaved_costs(
            {
                n: (lambda k, m=m, t=task: measure_cost(m, t, repeats=k, warmup=100))
                for n, m in first.items()
            },
            args.repeats,
        )
        ort_costs = interleaved_costs(
            {
                n: (lambda k, f=f, t=task: measure_onnx_cost(f, t, repeats=k, warmup=100))
                for n, f in files.items()
            },
            args.repeats,
        )
        for name in first:
            s = summarize(scores[name])
            rows.append(
                [
                    case if name == "baseline" else "",
                    name,
                    f"{100 * s.mean:.2f}% [{100 * s.low:.2f}, {100 * s.high:.2f}]",
                    f"{sum(p.numel() for p in first[name].parameters()):,}",
                    f"{torch_costs[name].latency_ms * 1000:.0f}",
                    f"{ort_costs[name].latency_ms * 1000:.1f}",
                ]
            )
    minutes = (time.perf_counter() - start) / 60
    print_table(
        f"structured pruning, {args.amount:.0%} of channels, {args.finetune_epochs} fine-tuning "
        f"epochs, {args.seeds} seeds",
        ["model", "pruned by", "test accuracy", "params", "torch µs", "ORT µs"],
        rows,
        note=f"{minutes:.1f} min; latencies batch-1, 1 thread, first seed's models",
    )


if __name__ == "__main__":
    main()
