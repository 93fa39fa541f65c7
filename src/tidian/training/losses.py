"""Losses, registered by name. Each builder takes the TrainConfig and returns ``loss(out, y)``.

Model outputs are ``(N, n_outputs)``; regression targets are ``(N,)``, so value losses squeeze.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from tidian.exceptions import ConfigError
from tidian.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Any] = Registry("loss")


@LOSSES.register("cross_entropy", target="classes")
def cross_entropy(config) -> LossFn:
    """Softmax cross-entropy on class logits."""
    return F.cross_entropy


@LOSSES.register("label_smoothing", target="classes")
def label_smoothing(config) -> LossFn:
    """Cross-entropy against targets smoothed by ``label_smoothing``."""
    eps = config.label_smoothing
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=eps)


@LOSSES.register("focal", target="classes")
def focal(config) -> LossFn:
    """Focal loss (Lin et al. 2017): cross-entropy down-weighted by (1 - p_true)^gamma."""
    gamma = config.focal_gamma

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(out.float(), dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        return (-((1 - log_p.exp()) ** gamma) * log_p).mean()

    return loss


@LOSSES.register("hinge", target="classes")
def hinge(config) -> LossFn:
    """Multi-class hinge loss (Crammer-Singer style margins via multi_margin_loss)."""
    return F.multi_margin_loss


@LOSSES.register("mse", target="values")
def mse(config) -> LossFn:
    """Mean squared error."""
    return lambda out, y: F.mse_loss(out.squeeze(1), y)


@LOSSES.register("mae", target="values")
def mae(config) -> LossFn:
    """Mean absolute error."""
    return lambda out, y: F.l1_loss(out.squeeze(1), y)


@LOSSES.register("huber", target="values")
def huber(config) -> LossFn:
    """Huber loss with threshold ``huber_delta``."""
    delta = config.huber_delta
    return lambda out, y: F.huber_loss(out.squeeze(1), y, delta=delta)


def make_loss(config, target_kind: str) -> LossFn:
    name = config.loss
    if name == "auto":
        name = "cross_entropy" if target_kind == "classes" else "mse"
    entry = LOSSES.entry(name)
    if entry.meta["target"] != target_kind:
        fits = [e.name for e in LOSSES.entries() if e.meta["target"] == target_kind]
        raise ConfigError(
            f"loss {name!r} is for {entry.meta['target']} targets but the task has "
            f"{target_kind}; use one of {', '.join(fits)}."
        )
    return entry.obj(config)
