"""The ``apply`` stage: one given candidate, no search — a step of a run's final path.

``tidian recipe of RUN_ID`` writes a finished run's final model as a recipe of these: the
baseline, then each candidate the final model is made of, in order — one trained anew (a
model and its training set-up) or made from the one before by its transform (prune, quantize,
distill… applied to the trained weights seed by seed). Each is gated as its stage gated it
(superiority or non-inferiority, on the metric and margin it was judged on), so running the
recipe on the same seeds rebuilds the same model per seed and re-proves each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tidian.compression.apply import STEPS, check_steps
from tidian.evaluation.gate import TESTS
from tidian.exceptions import bad_value
from tidian.stages.base import Context, Proposal, Stage, register_stage


@dataclass(frozen=True)
class ApplyConfig:
    """label: the candidate's label. model / train: its zoo model and full training config.
    transform: steps applied to the incumbent's trained weights (omit: trained anew).
    changes: what it changes, for the ledger. gate: superiority (it must beat the incumbent)
    or non_inferiority (it may lose at most the margin, and must be faster or smaller).
    metric: the metric it is judged on (default: the run's). margin: the tolerance of a
    non-inferiority gate (default: evaluate.margin)."""

    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    transform: list[dict[str, Any]] | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    gate: str = "superiority"
    metric: str | None = None
    margin: float | str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, dict) or not isinstance(self.model.get("name"), str):
            raise bad_value("apply.model", "a zoo model {name: ..., options}", self.model)
        if not isinstance(self.train, dict):
            raise bad_value("apply.train", "a training config mapping", self.train)
        if self.gate not in TESTS:
            raise bad_value("apply.gate", f"one of {TESTS}", self.gate)
        if self.transform is not None:
            check_steps(self.transform)


@register_stage("apply", config=ApplyConfig, kind="quality")
class Apply(Stage):
    """One given candidate (a step of a written-out final path), gated as its stage was."""

    edits_model = True

    example: ClassVar[dict[str, Any]] = {
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 2},
        "label": "mlp [8]",
    }

    def gate_kind(self) -> str:
        return "quality" if self.config.gate == "superiority" else "cost"

    def gate_metric(self) -> str | None:
        return self.config.metric

    def margin(self, metric: str) -> float | str | None:
        return self.config.margin

    def quantizes(self) -> bool:
        # a step that must come last leaves an ONNX Runtime model (quantize)
        return any(STEPS.entry(next(iter(s))).meta["last"] for s in self.config.transform or [])

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        c = self.config
        label = c.label or ", ".join(f"{k}={v}" for k, v in c.model.items())
        return [
            Proposal(
                label,
                dict(c.model),
                dict(c.train),
                dict(c.changes),
                transform=[dict(s) for s in c.transform] if c.transform is not None else None,
            )
        ]
