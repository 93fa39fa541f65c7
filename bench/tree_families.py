"""Each tree family alone, and the RBF SVM: fit time, test accuracy, ONNX Runtime batch-1
latency of its graph (the trees: ONNX-ML's native ``TreeEnsembleRegressor``; the SVM: plain
operators) and the ONNX file's size (breast_cancer; the built-in digits, 10 classes, its 8×8
inputs flattened). One seed; the library's defaults as tidian sets them.

    python bench/tree_families.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import tidian
from common import print_table
from tidian.evaluation.cost import measure_onnx_cost
from tidian.export import OnnxModel, export_onnx
from tidian.metrics import compute_metrics
from tidian.models.kernels import KERNEL_FAMILIES
from tidian.models.trees import FAMILIES
from tidian.training.build import train_new


def main() -> None:
    rows = []
    for name in ("breast_cancer", "digits"):
        task = tidian.load_task(name)  # digits' 8×8 images: trees take them flattened
        for family in [*FAMILIES, *KERNEL_FAMILIES]:
            start = time.perf_counter()
            model, _ = train_new({"name": family}, task, {}, 0)
            seconds = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "m.onnx"
                export_onnx(model, task, path)
                # batch 1, one thread, median of 300 calls after 20 (the pipeline's measure)
                cost = measure_onnx_cost(path, task, repeats=300, warmup=20)
                outputs = OnnxModel(path).predict(task.test.x)
                accuracy = compute_metrics(task.test.y, outputs, ["accuracy"])
            rows.append(
                [
                    f"{name}: {family}",
                    f"{seconds:.2f} s",
                    f"{accuracy['accuracy']:.2%}",
                    f"{cost.latency_ms * 1e3:.0f} µs",
                    f"{cost.size_bytes / 1024:.0f} kB",
                ]
            )
    print_table(
        "tree families and the SVM on ONNX Runtime, seed 0",
        ["set: family", "fit", "test accuracy", "batch-1 (median of 300)", "ONNX size"],
        rows,
    )


if __name__ == "__main__":
    main()
