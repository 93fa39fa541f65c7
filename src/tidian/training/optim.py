"""Optimizers (registered by name), parameter groups, learning-rate schedules, initialisation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tidian.registry import Registry

OPTIMIZERS: Registry[Any] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(groups, config) -> torch.optim.Optimizer:
    """Stochastic gradient descent with momentum."""
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


@OPTIMIZERS.register("nesterov")
def nesterov(groups, config) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum."""
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum or 0.9, nesterov=True)


@OPTIMIZERS.register("adam")
def adam(groups, config) -> torch.optim.Optimizer:
    """Adam; weight decay is an L2 term in the gradient."""
    return torch.optim.Adam(groups, lr=config.lr)


@OPTIMIZERS.register("adamw")
def adamw(groups, config) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay."""
    return torch.optim.AdamW(groups, lr=config.lr)


@OPTIMIZERS.register("rmsprop")
def rmsprop(groups, config) -> torch.optim.Optimizer:
    """RMSprop with momentum."""
    return torch.optim.RMSprop(groups, lr=config.lr, momentum=config.momentum)


def penalized(model: nn.Module) -> list[nn.Parameter]:
    """Weights that take weight decay and the L1 penalty: matrices and kernels, not biases,
    norm scales or embeddings' padding — the usual practice, since shrinking a bias or a norm
    scale regularises nothing."""
    return [
        p
        for n, p in model.named_parameters()
        if (p.requires_grad or getattr(p, UNFREEZE_LATER, False))
        and p.ndim >= 2
        and not n.endswith("position")
    ]


# Per-parameter attributes a stage may set before training (transfer learning uses them):
# a learning-rate multiplier (layer-wise decay), and "frozen for now, unfrozen later" (gradual
# unfreezing: the optimizer must hold the parameter from the start; until it has a gradient,
# the optimizer skips it).
LR_SCALE, UNFREEZE_LATER = "_tidian_lr_scale", "_tidian_unfreeze_later"


def make_optimizer(model: nn.Module, config) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad or getattr(p, UNFREEZE_LATER, False)]
    decay = {id(p) for p in penalized(model)} if config.weight_decay else set()
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for p in params:
        key = (id(p) in decay, float(getattr(p, LR_SCALE, 1.0)))
        groups.setdefault(key, []).append(p)
    # Few groups: each one costs an optimizer pass per step.
    out = []
    for (decayed, scale), members in sorted(
        groups.items(), key=lambda kv: (-kv[0][1], not kv[0][0])
    ):
        group = {"params": members, "weight_decay": config.weight_decay if decayed else 0.0}
        if scale != 1.0:
            group["lr"] = config.lr * scale
        out.append(group)
    return OPTIMIZERS.get(config.optimizer)(out, config)


class Schedule:
    """Per-step learning-rate control for every schedule name, with optional linear warm-up.

    constant/step/cosine are one LambdaLR (warm-up × main factor); onecycle is PyTorch's
    OneCycleLR (its own warm-up: ``warmup_epochs`` sets the rising fraction); plateau is a
    LambdaLR for the warm-up steps and then ReduceLROnPlateau, stepped once per epoch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config,
        steps_per_epoch: int,
        greater_is_better: bool,
    ) -> None:
        total = max(1, config.epochs * steps_per_epoch)
        warmup = round(config.warmup_epochs * steps_per_epoch)
        self.kind = config.schedule
        self.step_count = 0
        self.warmup = warmup
        self.plateau = None
        if self.kind == "onecycle":
            pct = min(0.9, max(warmup / total, 0.05)) if warmup else 0.3
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[g["lr"] for g in optimizer.param_groups],
                total_steps=total,
                pct_start=pct,
            )
            return

        def factor(step: int) -> float:
            ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
            if self.kind == "step":
                return ramp * config.gamma ** ((step // steps_per_epoch) // config.step_size)
            if self.kind == "cosine":
                progress = min(1.0, max(0, step - warmup) / max(1, total - warmup))
                return ramp * 0.5 * (1 + math.cos(math.pi * progress))
            return ramp

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        if self.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="max" if greater_is_better else "min",
                factor=config.gamma,
                patience=config.plateau_patience,
            )

    def after_batch(self) -> None:
        self.step_count += 1
        if self.kind == "constant" and not self.warmup:
            return  # nothing to change; skipping the scheduler call saves time on tiny models
        if self.plateau is None or self.step_count <= self.warmup:
            self.scheduler.step()

    def after_epoch(self, monitored: float | None) -> None:
        if self.plateau is not None and self.step_count > self.warmup and monitored is not None:
            self.plateau.step(monitored)


def initialize(model: nn.Module, scheme: str) -> None:
    """Re-initialise weight matrices and kernels by ``scheme``; biases to zero. ``default`` keeps
    PyTorch's own initialisation (and whatever weights the model already has)."""
    if scheme == "default":
        return
    init = {
        "xavier": nn.init.xavier_uniform_,
        "kaiming": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "orthogonal": nn.init.orthogonal_,
    }[scheme]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(
                module,
                (nn.Embedding | nn.LayerNorm | nn.GroupNorm, nn.modules.batchnorm._BatchNorm),
            ):
                continue
            for name, param in module.named_parameters(recurse=False):
                if param.ndim >= 2 and name != "position":
                    init(param)
                elif name.startswith("bias"):
                    param.zero_()
