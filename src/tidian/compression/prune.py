"""Pruning: unstructured (zeroed weights, made permanent) and structured (units removed).

``prune_(model, PruneConfig(...), task)`` is the one call. Structured pruning removes whole
units — Linear neurons, convolution channels, recurrent hidden units, attention heads and
feed-forward units — and leaves a smaller dense model that is faster on any runtime.
Unstructured pruning zeroes individual weights: the model keeps its shape, so dense runtimes
are *not* faster; only a sparse-aware format or compression of the stored file gains.

Importance: ``l1`` / ``l2`` norm of a unit's producing weights (or |w| per weight), or
``taylor``: the first-order estimate of the loss change when a unit is removed,
(Σ gradient × weight)² summed over a few training batches (Molchanov et al., 2019).
Schedule: ``oneshot``, or ``gradual`` — sparsity rises over ``steps`` steps along
s_t = s (1 − (1 − t/steps)³) (Zhu & Gupta, 2017) with fine-tuning after each step.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tidian.compression.apply import StepContext, transform_step
from tidian.compression.finetune import check_distill, finetune, teacher_outputs
from tidian.compression.surgery import Group, remove_units
from tidian.compression.traced import find_groups
from tidian.exceptions import ConfigError, bad_value
from tidian.models.structure import get_module
from tidian.training.config import TrainConfig
from tidian.training.losses import make_loss

IMPORTANCES = ("l1", "l2", "taylor")
SCHEDULES = ("oneshot", "gradual")
SCOPES = ("layer", "global")
NOT_PRUNED = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class PruneConfig:
    """amount: fraction of units (structured) or weights (unstructured) to remove, in [0, 1).
    structured: remove units (smaller dense model) or zero weights (same shape).
    importance: l1 | l2 | taylor. schedule: oneshot | gradual (``steps`` steps).
    scope: ``layer`` removes ``amount`` of each layer; ``global`` ranks all layers together
    (default: layer for structured, global for unstructured).
    layers: glob patterns; only matching layers are pruned. Structured pruning matches unit
    group names (``blocks.0``, ``layers.1``, ``encoder.layers.0.heads``), unstructured pruning
    parameter names (``blocks.0.0.weight``); an error lists the names when nothing matches.
    finetune_epochs: epochs of fine-tuning after pruning (split across gradual steps).
    finetune: training-config changes for fine-tuning (say, a lower lr).
    distill: ``{temperature: 4, alpha: 0.7}`` fine-tunes towards the unpruned model's outputs
    (knowledge distillation from the model before pruning); null: labels only.
    """

    amount: float = 0.5
    structured: bool = True
    importance: str = "l1"
    schedule: str = "oneshot"
    steps: int = 4
    scope: str | None = None
    layers: list[str] = field(default_factory=list)
    finetune_epochs: int = 0
    finetune: dict[str, Any] = field(default_factory=dict)
    taylor_batches: int = 8
    distill: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        a = self.amount
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a < 1:
            raise bad_value("prune.amount", "a fraction in [0, 1)", a)
        if self.importance not in IMPORTANCES:
            raise bad_value("prune.importance", f"one of {IMPORTANCES}", self.importance)
        if self.schedule not in SCHEDULES:
            raise bad_value("prune.schedule", f"one of {SCHEDULES}", self.schedule)
        if self.scope is not None and self.scope not in SCOPES:
            raise bad_value("prune.scope", f"one of {SCOPES}", self.scope)
        for name in ("steps", "finetune_epochs", "taylor_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad_value(f"prune.{name}", "a non-negative integer", value)
        if self.steps < 1:
            raise bad_value("prune.steps", "an integer >= 1", self.steps)
        check_distill(self.distill, "prune")

    @property
    def effective_scope(self) -> str:
        return self.scope or ("layer" if self.structured else "global")


def sparsity_schedule(amount: float, steps: int) -> list[float]:
    """Cumulative sparsity after each of ``steps`` gradual steps (cubic, ending at amount)."""
    return [amount * (1 - (1 - t / steps) ** 3) for t in range(1, steps + 1)]


def _matches(path: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(path, p) for p in patterns)


# -- importance ------------------------------------------------------------------------------


def example_batch(model: nn.Module, task: Any, n: int = 4) -> torch.Tensor | None:
    """A few training inputs of ``task`` on ``model``'s device (None without a task): what a
    model tidian does not know is traced on."""
    if task is None:
        return None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.as_tensor(task.train.x[:n]).to(device)


def taylor_scores(model: nn.Module, task: Any, batches: int, seed: int) -> dict[str, torch.Tensor]:
    """The gradient × weight products of each parameter, one per batch, stacked:
    ``{parameter path: (batches, *shape)}`` — the raw material of Taylor importance (a unit
    sums its products per batch before squaring, so batches are kept apart)."""

    if task is None:
        raise ConfigError("taylor importance needs the task's training data; pass task=.")
    loss_fn = make_loss(TrainConfig(), task.target_kind)
    x = torch.as_tensor(task.train.x)
    y = torch.as_tensor(task.train.y)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=generator)
    size = max(1, min(128, math.ceil(len(y) / max(1, batches))))
    products: dict[str, list[torch.Tensor]] = {}
    was_training = model.training
    model.eval()  # dropout off: the estimate is of the deployed function
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device
    for b in range(batches):
        index = order[b * size : (b + 1) * size]
        if len(index) == 0:
            break
        model.zero_grad(set_to_none=True)
        loss_fn(model(x[index].to(device)), y[index].to(device)).backward()
        for name, p in params.items():
            if p.grad is not None:
                products.setdefault(name, []).append((p.grad * p).detach().cpu())
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {k: torch.stack(v) for k, v in products.items()}


def _unit_importance(
    model: nn.Module, group: Group, importance: str, taylor: dict[str, torch.Tensor] | None
) -> torch.Tensor:
    score = torch.zeros(group.size)
    for member in group.members:
        if member.role != "out":
            continue
        module = get_module(model, member.module)
        tensor = getattr(module, member.tensor).detach()
        key = f"{member.module}.{member.tensor}" if member.module else member.tensor
        if importance == "taylor":
            if taylor is None or key not in taylor:
                continue
            values = taylor[key]  # (batches, *shape)
            axis = member.axis + 1
        else:
            values = tensor.abs() if importance == "l1" else tensor.pow(2)
            axis = member.axis
        moved = values.cpu().movedim(axis, 0)  # (units×blocks×repeat, ...)
        flat = moved.reshape(member.blocks, group.size, member.repeat, *moved.shape[1:])
        if importance == "taylor":
            # Sum g·w over the unit's weights per batch, square, then sum over batches.
            per_batch = flat.movedim(3, 0).reshape(flat.shape[3], member.blocks, group.size, -1)
            score += per_batch.sum(dim=(1, 3)).pow(2).sum(0)
        else:
            score += flat.transpose(0, 1).reshape(group.size, -1).sum(1)
    return score.sqrt() if importance == "l2" else score


# -- structured ------------------------------------------------------------------------------


def prune_structured(
    model: nn.Module,
    amount: float,
    *,
    importance: str = "l1",
    scope: str = "layer",
    layers: list[str] | None = None,
    task: Any = None,
    seed: int = 0,
    taylor_batches: int = 8,
) -> dict[str, Any]:
    """Remove ``amount`` of the units (per layer or globally ranked), in place.

    Returns a report ``{group: (before, after)}``. Every group keeps at least one unit.
    """
    found = find_groups(model, example_batch(model, task))
    groups = [g for g in found if _matches(g.name, layers or [])]
    if not groups:
        raise ConfigError(
            "structured pruning found no layer to prune"
            + (f" matching {layers}" if layers else "")
            + f"; prunable layers: {[g.name for g in found] or 'none'}."
        )
    taylor = taylor_scores(model, task, taylor_batches, seed) if importance == "taylor" else None
    scores = {g.name: _unit_importance(model, g, importance, taylor) for g in groups}
    keep: dict[str, torch.Tensor] = {}
    if scope == "layer":
        for g in groups:
            n_keep = max(1, g.size - round(amount * g.size))
            keep[g.name] = scores[g.name].argsort(descending=True)[:n_keep]
    else:
        # Scores of different layers live on different scales: compare each unit with its
        # own layer's mean importance.
        pooled = []
        for g in groups:
            s = scores[g.name]
            s = s / s.mean().clamp_min(1e-12)
            pooled += [(float(v), g.name, j) for j, v in enumerate(s)]
        pooled.sort()
        drop = round(amount * len(pooled))
        removed: dict[str, set[int]] = {g.name: set() for g in groups}
        sizes = {g.name: g.size for g in groups}
        for _, name, j in pooled:
            if drop == 0:
                break
            if sizes[name] - len(removed[name]) > 1:
                removed[name].add(j)
                drop -= 1
        for g in groups:
            keep[g.name] = torch.tensor(
                [j for j in range(g.size) if j not in removed[g.name]], dtype=torch.long
            )
    report = {}
    for g in groups:
        before = g.size
        if len(keep[g.name]) < before:
            remove_units(model, g, keep[g.name])
        report[g.name] = [before, g.size]
    return report


# -- unstructured ----------------------------------------------------------------------------


def prunable_weights(model: nn.Module, layers: list[str] | None = None) -> dict[str, nn.Parameter]:
    """Weight matrices and kernels (not biases, norms, embeddings' padding or positions)."""
    out = {}
    for path, module in model.named_modules():
        if isinstance(
            module, (nn.Embedding | nn.LayerNorm | nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
        ):
            continue
        for name, p in module.named_parameters(recurse=False):
            full = f"{path}.{name}" if path else name
            if p.ndim >= 2 and name != "position" and _matches(full, layers or []):
                out[full] = p
    return out


def magnitude_masks(
    model: nn.Module,
    amount: float,
    *,
    scope: str = "global",
    layers: list[str] | None = None,
    importance: str = "l1",
    task: Any = None,
    seed: int = 0,
    taylor_batches: int = 8,
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks removing ``amount`` of the weights with the smallest score."""
    weights = prunable_weights(model, layers)
    if not weights:
        raise ConfigError(
            f"unstructured pruning found no weight matrix to prune matching {layers}; "
            f"weights: {list(prunable_weights(model))[:12]}."
        )
    if importance == "taylor":
        taylor = taylor_scores(model, task, taylor_batches, seed)
        scores = {
            k: taylor[k].sum(0).abs() if k in taylor else w.detach().abs().cpu()
            for k, w in weights.items()
        }
    else:
        scores = {k: w.detach().abs().cpu() for k, w in weights.items()}
    masks = {}
    if scope == "global":
        flat = torch.cat([s.flatten() for s in scores.values()])
        k = round(amount * flat.numel())
        threshold = flat.kthvalue(k).values if k > 0 else flat.min() - 1
        for name, s in scores.items():
            masks[name] = s > threshold
    else:
        for name, s in scores.items():
            k = round(amount * s.numel())
            threshold = s.flatten().kthvalue(k).values if k > 0 else s.min() - 1
            masks[name] = s > threshold
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> list[Any]:
    """Zero masked weights and keep them at zero through training: a gradient hook zeroes
    their gradients, so optimiser updates (and decoupled weight decay of a zero) leave them
    at exactly 0. Returns the hook handles; remove them when done."""
    params = dict(model.named_parameters())
    handles = []
    with torch.no_grad():
        for name, mask in masks.items():
            p = params[name]
            m = mask.to(p.device, p.dtype)
            p.mul_(m)
            # the model may move to the training device after this (fine-tuning does)
            handles.append(p.register_hook(lambda g, m=m: g * m.to(g.device)))
    return handles


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries among the prunable weights."""
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / total if total else 0.0


# -- the one call ----------------------------------------------------------------------------


def prune_(
    model: nn.Module,
    config: PruneConfig | dict[str, Any],
    task: Any = None,
    *,
    train: Any = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune ``model`` in place by ``config``; fine-tune on ``task`` when asked.

    ``train`` is the training config fine-tuning starts from (the model's own, usually);
    ``finetune_epochs`` and ``finetune`` override it. Returns the model and a report.
    """
    config = config if isinstance(config, PruneConfig) else PruneConfig(**config)
    if (config.finetune_epochs or config.importance == "taylor") and task is None:
        raise ConfigError("pruning with fine-tuning or taylor importance needs task=.")
    steps = config.steps if config.schedule == "gradual" else 1
    targets = sparsity_schedule(config.amount, steps) if steps > 1 else [config.amount]
    per_step = math.ceil(config.finetune_epochs / steps) if config.finetune_epochs else 0
    teacher = teacher_outputs(model, task) if config.distill is not None and per_step else None
    before = sum(p.numel() for p in model.parameters())
    report: dict[str, Any] = {"steps": []}
    masks: dict[str, torch.Tensor] = {}
    for t, target in enumerate(targets):
        scoring = {
            "importance": config.importance,
            "scope": config.effective_scope,
            "layers": config.layers,
            "task": task,
            "seed": seed + t,
            "taylor_batches": config.taylor_batches,
        }
        if config.structured:
            # Units already removed are gone: the step removes the fraction of what is left
            # that brings the total to ``target`` of the original.
            done = targets[t - 1] if t else 0.0
            step_amount = 1 - (1 - target) / (1 - done)
            layers = prune_structured(model, step_amount, **scoring)
            report["steps"].append({"target": target, "layers": layers})
        else:
            masks = magnitude_masks(model, target, **scoring)
            report["steps"].append({"target": target})
        handles = apply_masks(model, masks) if masks else []
        try:
            finetune(model, task, train, config, per_step, seed + 1000 * (t + 1), teacher)
        finally:
            for h in handles:
                h.remove()
        if masks:
            for h in apply_masks(model, masks):  # exact zeros, whatever the optimiser did
                h.remove()
    model.eval()
    after = sum(p.numel() for p in model.parameters())
    report.update(
        params_before=before,
        params_after=after,
        sparsity=sparsity(model),
        structured=config.structured,
    )
    return model, report


@transform_step("prune", config=PruneConfig)
def prune_step(model: nn.Module, config: dict[str, Any], ctx: StepContext):
    """The ``prune`` step of a transform: :func:`prune_` on the parent's model."""
    return prune_(model, config, ctx.task, train=ctx.train, seed=ctx.seed)
