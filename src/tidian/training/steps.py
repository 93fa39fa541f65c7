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
