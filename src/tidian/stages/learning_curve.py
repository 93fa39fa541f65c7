"""The ``learning_curve`` stage: an analysis, not an upgrade — "would more data help?".

It trains the incumbent's model and training settings from scratch on growing, stratified
shares of the training split (``evaluation.analysis.learning_curve``; every fraction on the
same seeds, each seed its own subset) and records quality ± CI per fraction in the stage's
report, which ``tidian report`` plots. It proposes no candidate, so the incumbent stays.
A curve still rising at fraction 1.0 says more data should pay; a flat one says look
elsewhere (capacity, features, regularisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tidian.evaluation.analysis import learning_curve
from tidian.exceptions import bad_value
from tidian.stages.base import Context, Proposal, Stage, register_stage


@dataclass(frozen=True)
class LearningCurveConfig:
    """fractions: shares of the training split in (0, 1]; seeds: how many of the run's seeds
    (default: all of them)."""

    fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    seeds: int | None = None

    def __post_init__(self) -> None:
        fr = self.fractions
        if (
            not isinstance(fr, list)
            or not fr
            or not all(isinstance(f, int | float) and 0 < f <= 1 for f in fr)
        ):
            raise bad_value("learning_curve.fractions", "a list of numbers in (0, 1]", fr)
        if self.seeds is not None and (not isinstance(self.seeds, int) or self.seeds < 1):
            raise bad_value("learning_curve.seeds", "a positive integer", self.seeds)


@register_stage("learning_curve", config=LearningCurveConfig, kind="quality")
class LearningCurve(Stage):
    """Quality against the share of training data used; no candidate."""

    keeps_model_class = True

    sections = ("learning_curves",)

    example: ClassVar[dict[str, Any]] = {"fractions": [0.5, 1.0]}

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        c: LearningCurveConfig = self.config
        seeds = list(ctx.seeds[: c.seeds] if c.seeds else ctx.seeds)
        step = (
            (lambda done, total: ctx.progress("learning curve", done, total))
            if (ctx.progress)
            else None
        )
        curve = learning_curve(
            dict(incumbent.model),
            ctx.task,
            incumbent.train,
            fractions=c.fractions,
            seeds=seeds,
            metric=ctx.metric,
            executor=ctx.executor,
            progress=step,
            resources=ctx.resources,
        )
        curve["model"] = dict(incumbent.model)
        curve["from_scratch"] = incumbent.transform is not None
        ctx.notes["learning_curve"] = curve
        return []
