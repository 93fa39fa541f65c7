"""A new stage, in one file: ``noop`` proposes the incumbent again, unchanged.

It is what a contributor writes to add a stage — a config dataclass, a Stage subclass with an
example, one decorator — and nothing else: the recipe schema, the validator, the pipeline,
the report and the stage conformance suite pick it up from the registry. (Inside
``src/tidian/stages/`` the package imports it by itself; here the tests import it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tidian.stages import Context, Proposal, Stage, register_stage


@dataclass(frozen=True)
class NoopConfig:
    """label: what the unchanged candidate is called."""

    label: str = "unchanged"


@register_stage("noop", config=NoopConfig, kind="quality")
class Noop(Stage):
    """The incumbent again, unchanged: a stage that cannot lift anything (the gate says so)."""

    example: ClassVar[dict[str, Any]] = {"label": "the incumbent again"}

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        return [Proposal(self.config.label, dict(incumbent.model), dict(incumbent.train))]
