"""The ``augment`` stage: the incumbent retrained with a data-augmentation policy applied to
each batch inside the training loop (``training/augment.py``), gated like any candidate.

``policy`` is one policy or a list (one candidate each). The policy is checked against the
task's input kind before the run starts (a flip on text is an error naming its place), and it
lives in the candidate's training config (``train.augment``), so ``tune`` can search its
strengths too: ``space: {augment: {shift: {int: [0, 6]}, noise: {float: [0, 0.2]}}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tidian.exceptions import bad_value
from tidian.stages.base import Context, Proposal, Stage, register_stage
from tidian.training.augment import check_policy


@dataclass(frozen=True)
class AugmentConfig:
    """policy: {operation: strength}, or a list of them (one candidate each)."""

    policy: dict[str, Any] | list[dict[str, Any]]

    def __post_init__(self) -> None:
        if not self.policies or not all(isinstance(p, dict) and p for p in self.policies):
            raise bad_value(
                "augment.policy", "a mapping {operation: strength} or a list", self.policy
            )

    @property
    def policies(self) -> list[dict[str, Any]]:
        return [self.policy] if isinstance(self.policy, dict) else list(self.policy)


@register_stage("augment", config=AugmentConfig, kind="quality")
class Augment(Stage):
    """The incumbent retrained with per-batch data augmentation."""

    keeps_model_class = True

    edits_model = True

    example: ClassVar[dict[str, Any]] = {"policy": [{"noise": 0.1}, {"mixup": 0.2}]}

    def check(self, task: Any) -> None:
        policies = self.config.policies
        for i, policy in enumerate(policies):
            where = f"policy[{i}]" if isinstance(self.config.policy, list) else "policy"
            check_policy(policy, task.input_kind, task.target_kind, where)

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        self.check(ctx.task)
        return [
            Proposal(
                "augment " + ", ".join(f"{k}={v}" for k, v in policy.items()),
                dict(incumbent.model),
                {**incumbent.train, "augment": dict(policy)},
                {"augment": dict(policy)},
            )
            for policy in self.config.policies
        ]
