"""Fine-tuning after a compression step, optionally distilled from the model before it.

One place for what pruning, low-rank factorisation and QAT share: the model's own training
config with fresh-start settings removed (no re-initialisation, no early stopping unless asked),
the step's overrides, and — with ``distill`` — the uncompressed model as the teacher: its
outputs on the training split are computed once and the loss pulls the compressed model
towards them (``DistillStep``), which recovers more of the original than labels alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tidian.exceptions import bad_value
from tidian.training.config import TrainConfig
from tidian.training.distill import teacher_targets
from tidian.training.loop import fit
from tidian.training.losses import make_loss
from tidian.training.steps import DistillStep

DISTILL_KEYS = ("temperature", "alpha")


def check_distill(distill: Any, where: str) -> None:
    if distill is None:
        return
    if not isinstance(distill, dict) or set(distill) - set(DISTILL_KEYS):
        raise bad_value(f"{where}.distill", "null or {temperature: T, alpha: a}", distill)
    t, a = distill.get("temperature", 4.0), distill.get("alpha", 0.7)
    if isinstance(t, bool) or not isinstance(t, int | float) or t <= 0:
        raise bad_value(f"{where}.distill.temperature", "a positive number", t)
    if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1:
        raise bad_value(f"{where}.distill.alpha", "a fraction in [0, 1]", a)


def teacher_outputs(model: nn.Module, task: Any) -> torch.Tensor:
    """The model's outputs on every training row (eval mode, no gradients)."""

    return teacher_targets(model, task.train.x).outputs


def finetune(
    model: nn.Module,
    task: Any,
    train: Any,
    config: Any,
    epochs: int,
    seed: int,
    teacher: torch.Tensor | None = None,
) -> None:
    """Train ``model`` in place for ``epochs`` from where it is: its training config ``train``
    with the compression step's ``config.finetune`` overrides, and — when ``config.distill``
    is set and the uncompressed model's ``teacher`` outputs are given — pulled towards them."""
    if epochs <= 0:
        return
    train_config = TrainConfig.coerce(train).replace(init="default", patience=None)
    train_config = train_config.replace(**{**(config.finetune or {}), "epochs": epochs})
    step = None
    distill = config.distill
    if distill is not None and teacher is not None:
        step = DistillStep(
            make_loss(train_config, task.target_kind),
            teacher,
            temperature=float(distill.get("temperature", 4.0)),
            alpha=float(distill.get("alpha", 0.7)),
            classes=task.target_kind == "classes",
        )
    fit(model, task, train_config, seed=seed, step=step)
