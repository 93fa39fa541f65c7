"""The CUDA paths: training on the GPU (bf16 autocast, fp16 with loss scaling, fp32), the steps
that index cached tensors by batch rows (distillation, augmentation), worker processes that
each open CUDA, and a run whose stages move GPU-trained weights to the CPU for ONNX Runtime.

These run only where CUDA is present (the rest of the suite runs on such a machine too, with
``device: auto`` choosing the GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tidian
from tidian.metrics import predict, score
from tidian.models import create_model
from tidian.training.loop import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TRAIN = {"epochs": 30, "lr": 0.01, "batch_size": 16, "device": "cuda"}


def _trained(task, **train):
    torch.manual_seed(0)
    model = create_model("mlp", task, hidden=[32])
    history = fit(model, task, {**TRAIN, **train}, seed=0)
    return model, history


def _cpu_accuracy(task) -> float:
    """The same training on the CPU: the reference each GPU result is held to (the tiny
    task's 30 test rows make one row 3.3 points, so two rows of slack are allowed)."""
    model, _ = _trained(task, device="cpu")
    return score(model, task, "test")["accuracy"]


@pytest.mark.parametrize("amp", [True, False])
def test_fit_trains_on_the_gpu_and_leaves_the_model_there(vector_task, amp):
    model, history = _trained(vector_task, amp=amp)
    assert history.device.startswith("cuda")
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not casting
    assert np.isfinite(history.curve("train_loss")).all()
    assert score(model, vector_task, "test")["accuracy"] >= _cpu_accuracy(vector_task) - 0.07


def _linear_dtypes(model) -> list:
    """Output dtypes of every Linear layer's forward passes (recorded by hooks)."""
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda _m, _a, out: seen.append(out.dtype))
    return seen


def test_autocast_uses_bfloat16_and_the_fp16_fallback_scales_the_loss(vector_task, monkeypatch):
    torch.manual_seed(0)
    model = create_model("mlp", vector_task, hidden=[32])
    seen = _linear_dtypes(model)
    fit(model, vector_task, {**TRAIN, "epochs": 1}, seed=0)
    assert torch.bfloat16 in seen  # Ampere and later: bf16 autocast, no scaler

    # A GPU without bf16 gets float16 with a GradScaler; training must still converge.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    torch.manual_seed(0)
    model = create_model("mlp", vector_task, hidden=[32])
    seen = _linear_dtypes(model)
    history = fit(model, vector_task, TRAIN, seed=0)
    assert torch.float16 in seen and torch.bfloat16 not in seen
    assert np.isfinite(history.curve("train_loss")).all()
    assert score(model, vector_task, "test")["accuracy"] >= _cpu_accuracy(vector_task) - 0.07


def test_gpu_and_cpu_training_reach_the_same_quality(vector_task):
    gpu, _ = _trained(vector_task, amp=False)
    torch.manual_seed(0)
    cpu = create_model("mlp", vector_task, hidden=[32])
    fit(cpu, vector_task, {**TRAIN, "device": "cpu"}, seed=0)
    a = predict(gpu, vector_task.test.x).argmax(1)
    b = predict(cpu, vector_task.test.x).argmax(1)
    assert (a == b).mean() >= 0.9  # not bit-identical (different kernels), same function


def test_distillation_and_augmentation_index_cached_rows_on_the_gpu(tiny_tasks):
    from tidian.stages.distill import distill_

    task = tiny_tasks["sequence"]
    teacher = create_model("cnn1d", task, width=16)
    fit(teacher, task, {**TRAIN, "augment": {"shift": 2, "noise": 0.05}}, seed=0)
    assert next(teacher.parameters()).device.type == "cuda"
    student, _ = distill_(
        teacher,
        {"student": {"name": "cnn1d", "width": 8}, "temperature": 4, "alpha": 0.9},
        task,
        train=TRAIN,
        seed=0,
    )
    assert next(student.parameters()).device.type == "cuda"
    assert score(student, task, "test")["accuracy"] >= 0.8


def test_evaluate_with_gpu_workers(vector_task):
    model, train = {"name": "mlp", "hidden": [16]}, {**TRAIN, "epochs": 10}
    result = tidian.evaluate(model, vector_task, train, seeds=2, n_jobs=2)
    assert all(r.history.device.startswith("cuda") for r in result.runs)
    cpu = tidian.evaluate(model, vector_task, {**train, "device": "cpu"}, seeds=2)
    np.testing.assert_allclose(result.scores("accuracy"), cpu.scores("accuracy"), atol=0.07)


@pytest.mark.slow  # a whole pipeline run
def test_a_run_with_compression_moves_gpu_weights_to_onnx_runtime(tmp_path):
    store = tidian.Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    recipe = {
        "task": "digits",
        "model": {"name": "mlp", "hidden": [64]},
        "train": {"epochs": 8, "lr": 0.003, "device": "cuda"},
        "evaluate": {"seeds": 2},
        "stages": [
            {"prune": {"amount": 0.5, "structured": True, "finetune_epochs": 2}},
            {"quantize": {"mode": "dynamic"}},
        ],
    }
    result = tidian.run(recipe, store=store)
    assert result.status == "finished"
    rows = {c["stage"]: c for c in result.candidates}
    base, quantized = rows["baseline"], rows["quantize"]
    assert min(base["quality"]["per_seed"]) >= 0.9  # trained on the GPU, scored on ORT
    assert quantized["cost"]["runtime"] == "onnxruntime"
    assert quantized["cost"]["size_bytes"] < 0.5 * base["cost"]["size_bytes"]
    np.testing.assert_allclose(
        quantized["quality"]["per_seed"], base["quality"]["per_seed"], atol=0.02
    )
    assert rows["prune"]["quality"]["per_seed"] and len(rows["prune"]["quality"]["per_seed"]) == 2
