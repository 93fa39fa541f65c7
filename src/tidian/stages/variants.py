"""The ``train_variants`` and ``architecture`` stages: alternative training set-ups and models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tidian.models.base import library_ignores
from tidian.stages.base import Context, Proposal, Stage, register_stage


def _label(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "same"


@dataclass(frozen=True)
class TrainVariantsConfig:
    """candidates: training-config changes, each one candidate (optimizer, lr, weight_decay,
    l1, loss, schedule, warmup_epochs, init, epochs, batch_size, clip_grad_norm…)."""

    candidates: list[dict[str, Any]] = field(default_factory=list)


@register_stage("train_variants", config=TrainVariantsConfig, kind="quality")
class TrainVariants(Stage):
    """Alternative optimizers, losses, regularisation, schedules or initialisations."""

    keeps_model_class = True

    example: ClassVar[dict[str, Any]] = {
        "candidates": [{"lr": 0.003}, {"optimizer": "adamw", "weight_decay": 0.01}]
    }

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        name = incumbent.model.get("name", "")
        if all(library_ignores(name, changes) for changes in self.config.candidates):
            return ctx.skip(
                f"the incumbent ({name}) is trained by its library, not tidian's training "
                "loop, so these training options would give the same model again; vary its "
                f"hyperparameters in an architecture or tune stage ({{name: {name}, ...}})"
            )
        return [
            Proposal(
                _label(changes),
                dict(incumbent.model),
                {**incumbent.train, **changes},
                changes=dict(changes),
            )
            for changes in self.config.candidates
        ]


@dataclass(frozen=True)
class ArchitectureConfig:
    """candidates: zoo models with their options ({name: cnn1d, width: 32}), each a candidate;
    train: optional training-config changes applied to every one of them."""

    candidates: list[dict[str, Any]] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)


@register_stage("architecture", config=ArchitectureConfig, kind="quality")
class Architecture(Stage):
    """Alternative zoo models (keeping the incumbent's training set-up)."""

    example: ClassVar[dict[str, Any]] = {
        "candidates": [{"name": "mlp", "hidden": [8]}, {"name": "linear"}]
    }

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        return [
            Proposal(
                _label(model),
                dict(model),
                {**incumbent.train, **self.config.train},
                changes={"model": dict(model), **self.config.train},
            )
            for model in self.config.candidates
        ]
