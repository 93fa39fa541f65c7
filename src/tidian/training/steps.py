"""Training steps: what one batch contributes to the loss. The loop never changes; the step does.

A step is called as ``step(model, x, y, index) -> loss`` where ``index`` holds the batch's row
numbers in the training split (a distillation step uses it to look up cached teacher outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tidian.models.moe import aux_loss
from tidian.training.distill import hint_loss, kd_loss


class PlainStep:
    """Supervised loss on the model's outputs, plus an optional L1 penalty on the weights."""

    def __init__(
        self,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        l1: float = 0.0,
        penalized: list[nn.Parameter] | None = None,
    ) -> None:
        self.loss, self.l1, self.penalized = loss, l1, penalized or []

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        loss = self.loss(model(x), y) + aux_loss(model)
        if self.l1:
            loss = loss + self.l1 * sum(p.abs().sum() for p in self.penalized)
        return loss


class DistillStep:
    """Knowledge distillation (Hinton et al., 2015): the supervised loss mixed with a loss
    towards a teacher's outputs, ``alpha * soft + (1 - alpha) * hard``, plus weighted hint terms.

    For classes the soft loss is :func:`~tidian.training.distill.kd_loss` (KL at temperature T,
    scaled by T²); for values it is the mean squared error to the teacher's outputs.
    ``teacher`` holds the teacher's outputs for every row of the training split, computed once
    (``index`` picks the batch's rows). ``hints`` (feature or attention terms) need ``capture``
    — hooks on the student that record the hinted layers during its forward pass — the cached
    teacher values in ``hint_targets`` and the ``projections`` (trained with the student).
    ``labelled`` marks the transfer rows that have labels; the others (an unlabeled transfer
    set) get no supervised loss.
    """

    def __init__(
        self,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        teacher: torch.Tensor,
        *,
        temperature: float = 4.0,
        alpha: float = 0.7,
        classes: bool = True,
        hints: Sequence[Any] = (),
        hint_targets: dict[str, torch.Tensor] | None = None,
        capture: Any = None,
        projections: nn.ModuleDict | None = None,
        labelled: torch.Tensor | None = None,
    ) -> None:
        self.loss, self.teacher = loss, teacher
        self.temperature, self.alpha, self.classes = temperature, alpha, classes
        self.hints, self.hint_targets = list(hints), hint_targets or {}
        self.capture, self.projections = capture, projections
        self.labelled = labelled  # per transfer row: has a label (None: every row)

    def _hard(self, out: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The supervised loss over the batch's labelled rows (unlabeled transfer rows train
        on the soft targets alone)."""
        if self.labelled is None:
            return self.loss(out, y)
        mask = self.labelled[rows.to(self.labelled.device)]  # checked where it lives (CPU)
        if bool(mask.all()):
            return self.loss(out, y)
        if not bool(mask.any()):
            return out.sum() * 0.0
        mask = mask.to(out.device)
        # scaled by the labelled share, so a labelled row weighs the same in every batch
        return self.loss(out[mask], y[mask]) * mask.float().mean()

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        out = model(x)
        rows = index.to(self.teacher.device)
        target = self.teacher[rows].to(out.device)
        soft = kd_loss(out, target, self.temperature) if self.classes else F.mse_loss(out, target)
        loss = self.alpha * soft + (1 - self.alpha) * self._hard(out, y, rows)
        for i, hint in enumerate(self.hints):
            value = self.capture.values[hint.student]
            wanted = self.hint_targets[hint.teacher][rows].to(value.device)
            loss = loss + hint.weight * hint_loss(hint, value, wanted, self.projections[str(i)])
        return loss + aux_loss(model)
