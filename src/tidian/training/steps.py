"""Training steps: what one batch contributes to the loss. The loop never changes; the step does.

A step is called as ``step(model, x, y, index) -> loss`` where ``index`` holds the batch's row
numbers in the training split (a distillation step uses it to look up cached teacher outputs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


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
        loss = self.loss(model(x), y)
        if self.l1:
            loss = loss + self.l1 * sum(p.abs().sum() for p in self.penalized)
        return loss


class DistillStep:
    """Knowledge distillation (Hinton et al., 2015): the supervised loss mixed with a loss
    towards a teacher's outputs, ``alpha * soft + (1 - alpha) * hard``.

    For classes the soft loss is KL(teacher ‖ student) on temperature-``temperature``
    softmaxes, scaled by T² so its gradients keep their size as T changes; for values it is the
    mean squared error to the teacher's outputs. ``teacher`` holds the teacher's outputs for
    every row of the training split, computed once (``index`` picks the batch's rows).
    """

    def __init__(
        self,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        teacher: torch.Tensor,
        *,
        temperature: float = 4.0,
        alpha: float = 0.7,
        classes: bool = True,
    ) -> None:
        self.loss, self.teacher = loss, teacher
        self.temperature, self.alpha, self.classes = temperature, alpha, classes

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        import torch.nn.functional as F

        out = model(x)
        target = self.teacher[index.to(self.teacher.device)].to(out.device)
        if self.classes:
            t = self.temperature
            soft = F.kl_div(
                F.log_softmax(out / t, dim=-1),
                F.log_softmax(target / t, dim=-1),
                reduction="batchmean",
                log_target=True,
            ) * (t * t)
        else:
            soft = F.mse_loss(out, target)
        return self.alpha * soft + (1 - self.alpha) * self.loss(out, y)
