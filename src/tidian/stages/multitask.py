"""The ``multitask`` stage: train the incumbent's model on further targets of the same rows
(``models/multitask.py``), gated on the main target — the auxiliary-task use: a related target
kept only if it helps the one that matters.

Loss weighting (``weighting``):

* ``fixed`` — ``weights`` (main first; default all 1);
* ``uncertainty`` — Kendall, Gal & Cipolla (2018): ``Σ exp(−s_t) L_t + s_t`` with the log
  variances s_t learned with the model, so a noisy target weighs itself down;
* ``dwa`` — dynamic weight average (Liu, Johns & Davison, 2019): each target's weight follows
  how slowly its loss fell over the last two epochs, ``T · softmax(r_t / τ)``,
  r_t = L_t(e−1) / L_t(e−2).

For each seed the worker also trains the base model on each further target alone (same seed),
so the report shows, per target, the multi-task model against the single-task one: whether
sharing helped every target, not only the main one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from tidian.compression.apply import StepContext, transform_step
from tidian.exceptions import ConfigError, bad_value
from tidian.metrics import compute_metrics, predict
from tidian.models.moe import aux_loss
from tidian.stages.base import Context, Proposal, Stage, register_stage
from tidian.tasks.task import Split
from tidian.training.build import seeded_model, train_new
from tidian.training.config import TrainConfig
from tidian.training.loop import fit
from tidian.training.losses import make_loss

WEIGHTINGS = ("fixed", "uncertainty", "dwa")
# A self-supervised further target: the model's own (standardised) inputs, predicted back.
RECONSTRUCTION = "reconstruction"


def _values(split: Any, name: str) -> np.ndarray:
    """A further target's values on a split (the flattened inputs for reconstruction)."""
    if name in split.aux:
        return split.aux[name]
    if name == RECONSTRUCTION:
        return split.x.reshape(len(split), -1).astype(np.float32)
    raise KeyError(name)


@dataclass(frozen=True)
class MultitaskConfig:
    """targets: further target names (the task's ``aux_targets``); sharing: hard | soft;
    weighting: fixed | uncertainty | dwa; weights: fixed weights, main first; soft_penalty:
    the tower-distance weight for soft sharing; single_task: also train each further target
    alone for the per-target comparison; train: training overrides."""

    targets: list[str] = field(default_factory=list)
    sharing: str = "hard"
    weighting: str = "uncertainty"
    weights: list[float] | None = None
    soft_penalty: float = 1e-3
    single_task: bool = True
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.targets, list) or not self.targets:
            raise bad_value("multitask.targets", "a non-empty list of target names", self.targets)
        if self.sharing not in ("hard", "soft"):
            raise bad_value("multitask.sharing", "hard or soft", self.sharing)
        if self.weighting not in WEIGHTINGS:
            raise bad_value("multitask.weighting", f"one of {WEIGHTINGS}", self.weighting)
        if self.weights is not None:
            if self.weighting != "fixed":
                raise ConfigError("multitask.weights: only used with weighting: fixed.")
            if len(self.weights) != len(self.targets) + 1 or min(self.weights) < 0:
                raise bad_value(
                    "multitask.weights",
                    f"{len(self.targets) + 1} non-negative weights (the main target first)",
                    self.weights,
                )
        if self.soft_penalty < 0:
            raise bad_value("multitask.soft_penalty", "a non-negative number", self.soft_penalty)


@register_stage("multitask", config=MultitaskConfig, kind="quality")
class Multitask(Stage):
    """The incumbent's model trained on further targets too, gated on the main one."""

    sections = ("multitask",)

    example: ClassVar[dict[str, Any]] = {"targets": [RECONSTRUCTION], "train": {"epochs": 1}}

    def check(self, task: Any) -> None:
        if RECONSTRUCTION in self.config.targets and task.input_kind == "text":
            raise ConfigError("targets: reconstruction needs numeric inputs, not token ids.")
        missing = [
            t for t in self.config.targets if t not in task.aux_targets and t != RECONSTRUCTION
        ]
        if missing:
            have = sorted(task.aux_targets) or "none — load the task with targets=[...]"
            raise ConfigError(
                f"targets: {missing} are not further targets of this task (it has: {have})."
            )

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        c: MultitaskConfig = self.config
        self.check(ctx.task)
        aux = [
            {"name": t, "kind": "values", "n_outputs": int(np.prod(ctx.task.input_shape))}
            if t == RECONSTRUCTION and t not in ctx.task.aux_targets
            else {
                "name": t,
                "kind": ctx.task.aux_targets[t]["kind"],
                "n_outputs": len(ctx.task.aux_targets[t]["class_names"] or [0]),
            }
            for t in c.targets
        ]
        model = {
            "name": "multitask",
            "base": dict(incumbent.model),
            "aux": aux,
            "sharing": c.sharing,
        }
        train = {**incumbent.train, **c.train}
        step = {
            "model": model,
            "train": train,
            "weighting": c.weighting,
            "weights": c.weights,
            "soft_penalty": c.soft_penalty,
            "single_task": c.single_task,
        }
        label = f"multitask {c.sharing} ({c.weighting}) + {', '.join(c.targets)}"
        return [
            Proposal(
                label,
                model,
                train,
                {
                    "multitask": {
                        "targets": c.targets,
                        "sharing": c.sharing,
                        "weighting": c.weighting,
                    }
                },
                transform=[{"multitask": step}],
            )
        ]


class MultiTaskStep:
    """The loss over every target of a multi-task model (rows looked up by ``index``)."""

    def __init__(self, model, task, config: dict[str, Any]) -> None:
        self.names = model.names
        self.kinds = [task.target_kind] + [
            task.aux_targets[n]["kind"] if n in task.aux_targets else "values" for n in self.names
        ]
        self.aux = [torch.as_tensor(_values(task.train, n)) for n in self.names]
        self.main_loss = make_loss(TrainConfig.from_dict(config["train"]), task.target_kind)
        # further regression targets are compared in their own standard units
        self.scales = [
            float(np.std(_values(task.train, n)) or 1.0) if k == "values" else 1.0
            for n, k in zip(self.names, self.kinds[1:])
        ]
        self.weighting = config["weighting"]
        w = config.get("weights") or [1.0] * (len(self.names) + 1)
        self.weights = torch.as_tensor(w, dtype=torch.float32)
        self.penalty = float(config.get("soft_penalty") or 0.0)
        # an epoch ends when every training row has been through once (the loop draws each
        # row once per epoch), so epoch means need no knowledge of the loop's batching
        self.rows = len(task.train)
        self.seen, self.batches, self.sums, self.history = 0, 0, torch.zeros(len(w)), []

    def _losses(self, outs, y, index) -> list[torch.Tensor]:
        losses = [self.main_loss(outs[0], y)]
        for out, target, kind, scale in zip(outs[1:], self.aux, self.kinds[1:], self.scales):
            t = target[index.cpu()].to(out.device)
            if kind == "classes":
                losses.append(F.cross_entropy(out, t))
            else:
                losses.append(F.mse_loss(out.reshape(t.shape) / scale, t.float() / scale))
        return losses

    def _dwa(self) -> torch.Tensor:
        k = len(self.sums)
        if len(self.history) < 2:
            return torch.ones(k)
        rate = self.history[-1] / self.history[-2].clamp_min(1e-12)
        return k * torch.softmax(rate / 2.0, dim=0)

    def __call__(self, model, x, y, index):
        losses = torch.stack(self._losses(model.forward_all(x), y, index))
        if self.weighting == "uncertainty":
            s = model.log_vars
            loss = (torch.exp(-s) * losses + s).sum()
        elif self.weighting == "dwa":
            loss = (self._dwa().to(losses.device) * losses).sum()
        else:
            loss = (self.weights.to(losses.device) * losses).sum()
        # epoch means of each target's loss (for dwa and the report)
        self.sums += losses.detach().cpu()
        self.seen, self.batches = self.seen + len(index), self.batches + 1
        if self.seen >= self.rows:
            self.history.append(self.sums / self.batches)
            self.sums, self.seen, self.batches = torch.zeros_like(self.sums), 0, 0
        if self.penalty and model.sharing == "soft":
            loss = loss + self.penalty * model.tower_distance()
        return loss + aux_loss(model)


def _aux_task(task: Any, name: str) -> Any:
    """The task with further target ``name`` as its only target."""

    info = task.aux_targets[name]
    return task.replace(
        name=f"{task.name}[{name}]",
        train=Split(task.train.x, task.train.aux[name]),
        val=Split(task.val.x, task.val.aux[name]),
        test=Split(task.test.x, task.test.aux[name]),
        target_kind=info["kind"],
        class_names=tuple(info["class_names"]) if info["class_names"] else None,
        metric="",
        aux_targets={},
    )


def multitask_(
    parent: Any, config: dict[str, Any], task: Any, *, train: Any = None, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Train the multi-task model (seed ``seed``); report each target's test score beside
    the same base model trained on that target alone."""

    spec = dict(config["model"])
    names = [a["name"] for a in spec["aux"]]
    missing = [n for n in names if n not in task.train.aux and n != RECONSTRUCTION]
    if missing:
        raise ConfigError(
            f"multitask: the training rows carry no values for {missing} here (a stage before "
            "this one changed the rows); put multitask before it."
        )
    train_config = TrainConfig.from_dict(config["train"])
    model = seeded_model({**spec, "name": "multitask"}, task, seed)
    with torch.no_grad():
        for head, n in zip(model.aux_heads(), names):
            if head.regression:  # the further target's own scale (per output)
                values = _values(task.train, n).reshape(len(task.train), -1)
                std = values.std(0)
                head.shift.copy_(torch.as_tensor(values.mean(0)))
                head.scale.copy_(torch.as_tensor(np.where(std > 0, std, 1.0)))
    step = MultiTaskStep(model, task, config)
    fit(model, task, train_config, seed=seed, step=step)
    report: dict[str, Any] = {"targets": {}, "loss_history": [h.tolist() for h in step.history]}
    if config["weighting"] == "uncertainty":
        report["log_vars"] = model.log_vars.detach().tolist()
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        outs = [o.cpu() for o in model.forward_all(torch.as_tensor(task.test.x).to(device))]
    for i, n in enumerate(names, start=1):
        if n == RECONSTRUCTION and n not in task.aux_targets:
            wanted = _values(task.test, n)
            error = float(np.sqrt(((outs[i].numpy() - wanted) ** 2).mean()))
            report["targets"][n] = {"metric": "rmse", "multitask": error}
            continue
        single_task = _aux_task(task, n)
        metric = single_task.metric
        row = {
            "metric": metric,
            "multitask": compute_metrics(task.test.aux[n], outs[i].numpy(), [metric])[metric],
        }
        if config.get("single_task", True):
            alone, _ = train_new(spec["base"], single_task, train_config, seed)
            row["single_task"] = compute_metrics(
                single_task.test.y, predict(alone, single_task.test.x), [metric]
            )[metric]
        report["targets"][n] = row
    return model, report


def _check_step(**config: Any) -> None:
    if not isinstance(config.get("model"), dict) or "weighting" not in config:
        raise bad_value("multitask step", "{model: ..., train: ..., weighting: ...}", config)


@transform_step("multitask", config=_check_step, new_model=True, needs_parent=False)
def multitask_step(parent: Any, config: dict[str, Any], ctx: StepContext):
    """The ``multitask`` step: :func:`multitask_` for the seed."""
    return multitask_(parent, config, ctx.task, train=ctx.train, seed=ctx.seed)
