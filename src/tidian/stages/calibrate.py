"""The ``calibrate`` stage: post-hoc calibration fitted on the validation split.

Each method is one candidate, made from the incumbent's model of each seed (so it stays paired
with it): ``temperature`` scaling or ``vector`` scaling (``evaluation.calibration``), folded into
the output layer. The gate asks two things: expected calibration error lower beyond noise
(superiority on ``ece``), and the recipe's metric non-inferior within its margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from tidian.compression.apply import StepContext, transform_step
from tidian.evaluation.calibration import METHODS, fit_scaling, fold_scaling, output_layer
from tidian.exceptions import ConfigError, bad_value
from tidian.metrics import ece, log_loss, predict
from tidian.stages.base import Context, Proposal, Stage, register_stage


@dataclass(frozen=True)
class CalibrateConfig:
    """method: temperature (one T, never changes a prediction) | vector (a scale and a bias
    per class), or a list of both (one candidate each)."""

    method: str | list[str] = "temperature"

    def __post_init__(self) -> None:
        methods = self.methods
        if not methods or len(set(methods)) != len(methods) or set(methods) - set(METHODS):
            raise bad_value("calibrate.method", f"one of {METHODS}, or a list of them", self.method)

    @property
    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(self.method)


@register_stage("calibrate", config=CalibrateConfig, kind="quality")
class Calibrate(Stage):
    """Temperature or vector scaling on the validation split, gated on ECE (accuracy kept)."""

    edits_model = True
    fits_on_validation = True
    selects_on_validation = True

    example: ClassVar[dict[str, Any]] = {"method": ["temperature", "vector"]}

    def gate_metric(self) -> str:
        return "ece"

    def check_model(self, model: Any, task: Any) -> None:
        # a model without a head (a tree or svm family) is refused before the baseline trains
        if task.target_kind == "classes":
            output_layer(model)

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        task = ctx.task
        if task.target_kind != "classes":
            raise ConfigError("calibrate needs a classification task; this one predicts values.")
        if not len(task.val):
            raise ConfigError(
                "calibrate fits on the validation split, and this task has none; load it with "
                "val_size > 0."
            )
        return [
            Proposal(
                f"calibrate {method}",
                dict(incumbent.model),
                dict(incumbent.train),
                {"calibrate": method},
                transform=[{"calibrate": {"method": method}}],
            )
            for method in self.config.methods
        ]


def calibrate_(
    model: nn.Module, config: dict[str, Any], task: Any, *, train: Any = None, seed: int = 0
) -> tuple[nn.Module, dict[str, Any]]:
    """Fit the scaling on ``task.val`` and fold it into ``model`` (in place)."""

    method = CalibrateConfig(**config).method
    output_layer(model)  # a clear error before any work
    logits = predict(model, task.val.x)
    scale, bias = fit_scaling(logits, task.val.y, method)
    fold_scaling(model, scale, bias)
    after = predict(model, task.val.x)
    # The fit minimises the validation log loss; ECE (binned) is what the gate judges on test.
    report = {
        "method": method,
        "val_log_loss_before": log_loss(task.val.y, logits),
        "val_log_loss_after": log_loss(task.val.y, after),
        "val_ece_before": ece(task.val.y, logits),
        "val_ece_after": ece(task.val.y, after),
    }
    if method == "temperature":
        report["temperature"] = float(1.0 / scale[0])
    else:
        report.update(scale=scale.tolist(), bias=bias.tolist())
    return model, report


@transform_step("calibrate", config=CalibrateConfig)
def calibrate_step(model: nn.Module, config: dict[str, Any], ctx: StepContext):
    """The ``calibrate`` step: :func:`calibrate_` on the parent's model of the seed."""
    return calibrate_(model, config, ctx.task, train=ctx.train, seed=ctx.seed)
