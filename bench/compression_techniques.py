"""Compression techniques side by side, measured on torch and on ONNX Runtime.

One CNN on mnist1d; every technique starts from the same trained model of each seed (paired):

* unstructured magnitude pruning at 50 / 80 / 90% of the weights (global, fine-tuned);
* structured pruning (channels removed) at the parameter count of unstructured 80%;
* int8 on ONNX Runtime: dynamic, static (QDQ, per-channel), QAT (then static);
* low-rank factorisation (90% of each layer's spectral energy, fine-tuned).

It should show plainly that unstructured sparsity leaves the dense model's latency where it
was: zeros are still multiplied. Only the stored file (gzip) shrinks.

    python bench/compression_techniques.py [--seeds 3] [--repeats 1000]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import tidian
from common import interleaved_costs, print_table
from tidian.compression import prune_
from tidian.compression.lowrank import lowrank_
from tidian.compression.quantize import quantize_model
from tidian.evaluation.cost import gzip_size, measure_cost, measure_onnx_cost
from tidian.evaluation.stats import summarize
from tidian.export import OnnxModel, export_onnx
from tidian.metrics import compute_metrics, predict

MODEL = {"name": "cnn1d", "width": 64, "depth": 3, "readout": "flatten"}
TRAIN = {"epochs": 40, "lr": 1e-2, "batch_size": 100}
FINETUNE = {"lr": 2e-3, "schedule": "cosine", "patience": 10}
FT_EPOCHS = 20


def matched_structured_amount(model, task, target_params: int) -> float:
    """The structured amount whose pruned model has about ``target_params`` parameters."""
    best, gap = 0.0, float("inf")
    for amount in np.arange(0.05, 0.96, 0.01):
        _, report = prune_(copy.deepcopy(model), {"amount": float(amount)})
        if abs(report["params_after"] - target_params) < gap:
            best, gap = float(amount), abs(report["params_after"] - target_params)
    return best


def techniques(model, task, seed: int, structured_amount: float, work: Path) -> dict:
    """name → (float torch model or None, ONNX file)."""
    out = {"baseline (fp32)": (model, None)}
    for amount in (0.5, 0.8, 0.9):
        config = {
            "amount": amount,
            "structured": False,
            "finetune_epochs": FT_EPOCHS,
            "finetune": FINETUNE,
        }
        pruned, _ = prune_(copy.deepcopy(model), config, task, train=TRAIN, seed=seed)
        out[f"unstructured {amount:.0%}"] = (pruned, None)
    config = {"amount": structured_amount, "finetune_epochs": FT_EPOCHS, "finetune": FINETUNE}
    pruned, _ = prune_(copy.deepcopy(model), config, task, train=TRAIN, seed=seed)
    out[f"structured {structured_amount:.0%} (≈ unstructured 80% params)"] = (pruned, None)
    for mode in ("dynamic", "static", "qat"):
        path = work / f"{mode}-{seed}.onnx"
        config = {
            "mode": mode,
            "per_channel": mode != "dynamic",
            "qat_epochs": 5,
            "finetune": FINETUNE,
        }
        quantize_model(copy.deepcopy(model), task, config, path, train=TRAIN, seed=seed)
        out[f"int8 {mode}"] = (None, path)
    low, _ = lowrank_(
        copy.deepcopy(model),
        {"energy": 0.9, "include_head": True, "finetune_epochs": FT_EPOCHS, "finetune": FINETUNE},
        task,
        train=TRAIN,
        seed=seed,
    )
    out["low-rank 90% energy"] = (low, None)
    for name, (m, path) in list(out.items()):
        if path is None:
            path = work / f"{len(name)}-{abs(hash(name))}-{seed}.onnx"
            export_onnx(m, task, path)
            out[name] = (m, path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = tidian.load_task("mnist1d")
    work = Path(tempfile.mkdtemp(prefix="tidian-techniques-"))
    start = time.perf_counter()
    scores: dict[str, list[float]] = {}
    first = None
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        options = {k: v for k, v in MODEL.items() if k != "name"}
        model = tidian.create_model(MODEL["name"], task, **options)
        tidian.fit(model, task, TRAIN, seed=seed)
        if first is None:
            params = sum(p.numel() for p in model.parameters())
            amount = matched_structured_amount(model, task, int(0.2 * params))
        result = techniques(model, task, seed, amount, work)
        for name, (m, path) in result.items():
            out = predict(m, task.test.x) if m is not None else OnnxModel(path).predict(task.test.x)
            scores.setdefault(name, []).append(
                compute_metrics(task.test.y, out, ["accuracy"])["accuracy"]
            )
        first = first or result
    minutes = (time.perf_counter() - start) / 60
    rows = []
    ort_costs = interleaved_costs(
        {
            name: lambda n, f=path: measure_onnx_cost(f, task, repeats=n, warmup=200)
            for name, (_, path) in first.items()
        },
        args.repeats,
    )
    torch_costs = interleaved_costs(
        {
            name: lambda n, m=m: measure_cost(m, task, repeats=n, warmup=200)
            for name, (m, _) in first.items()
            if m is not None
        },
        args.repeats,
    )
    base_ort, base_torch = ort_costs["baseline (fp32)"], torch_costs["baseline (fp32)"]
    for name in first:
        s = summarize(scores[name])
        ort, torch_cost = ort_costs[name], torch_costs.get(name)
        path = first[name][1]
        nonzero = (
            f"{torch_cost.nonzero_params:,} / {torch_cost.params:,}" if torch_cost else "(int8)"
        )
        rows.append(
            [
                name,
                f"{100 * s.mean:.2f}% [{100 * s.low:.2f}, {100 * s.high:.2f}]",
                nonzero,
                f"{torch_cost.latency_ms * 1000:.1f}" if torch_cost else "—",
                f"{base_torch.latency_ms / torch_cost.latency_ms:.2f}×" if torch_cost else "—",
                f"{ort.latency_ms * 1000:.1f}",
                f"{base_ort.latency_ms / ort.latency_ms:.2f}×",
                f"{ort.size_bytes:,}",
                f"{gzip_size(path):,}",
            ]
        )
    print_table(
        f"Compression techniques on mnist1d, {MODEL}, {args.seeds} seeds ({minutes:.1f} min)",
        [
            "technique",
            "accuracy [95% CI]",
            "nonzero / params",
            "torch µs",
            "speed-up",
            "ORT µs",
            "speed-up",
            "ONNX bytes",
            "gzip bytes",
        ],
        rows,
        note=f"batch-1 latency, 1 thread: median over 5 interleaved rounds of {args.repeats // 5} "
        "calls (every model once per round); speed-ups vs the fp32 baseline on the same runtime.",
    )


if __name__ == "__main__":
    main()
