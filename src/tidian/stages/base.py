"""The Stage contract and the stage registry.

A stage turns the incumbent into one or more *proposals*: a model recipe and a training
config to evaluate. The pipeline evaluates every proposal on the incumbent's seeds and splits,
gates it against the incumbent and records everything; a stage never prints, trains on its
own behalf or touches the store, so each stage is testable alone.

A stage is a frozen config dataclass (validated, serialisable, named in recipes) registered
with ``@register_stage(name, config=ConfigClass, kind="quality" | "cost")`` on a class
implementing :meth:`Stage.run`. ``kind`` picks the gate: superiority for stages meant to lift
quality, non-inferiority within a margin for stages meant to cut cost.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tidian.registry import Registry

STAGES: Registry[Any] = Registry("stage", listing="tidian recipe schema")


def register_stage(name: str, *, config: type, kind: str = "quality"):
    """Decorator registering a :class:`Stage` subclass under ``name`` with its config
    dataclass and its gate kind: ``quality`` (superiority) or ``cost`` (non-inferiority)."""
    if kind not in ("quality", "cost"):
        raise ValueError(f"a stage's kind is 'quality' or 'cost'; got {kind!r}")

    def decorator(cls: type) -> type:
        cls.name, cls.kind = name, kind
        STAGES.add(name, cls, config=config, kind=kind)
        return cls

    return decorator


@dataclass(frozen=True)
class Proposal:
    """One candidate to evaluate: a zoo model recipe, a full training config, and a label.

    ``changes`` says what differs from the incumbent, for the ledger and the report.
    ``transform``, when set, makes the candidate a compression of the incumbent's trained
    weights (steps such as ``[{"prune": {...}}, {"quantize": {...}}]``, applied seed by seed)
    instead of a model trained from scratch.
    """

    label: str
    model: dict[str, Any]
    train: dict[str, Any]
    changes: dict[str, Any] = field(default_factory=dict)
    transform: list[dict[str, Any]] | None = None


def unmeasured_pace(incumbent: float, families: dict[str, float]) -> float:
    """Seconds a seed of a model family a run has not trained yet is expected to take under a
    time limit: the slowest family it has trained (``families``: per family, its slowest mean
    seconds a seed), and never less than the incumbent's. Not the incumbent's alone: a family
    not trained yet is most often one the limit cut, a slow one (the suggested recipe lists
    families quickest first), and a solved baseline (glm) takes milliseconds — at its pace a
    tuned CatBoost's 10-unit re-evaluation started with seconds left."""
    return max([incumbent, *families.values()])


@dataclass(frozen=True)
class Context:
    """What a stage may read: the task, the recipe's evaluation settings, the run so far.

    ``history`` lists the proposals already evaluated in this run with their test means, so a
    stage can pick members or avoid repeats; ``incumbent`` is the incumbent's entry in it.
    Everything is read-only except ``notes``, where a stage may leave a report (a study's
    size, importances…) that the pipeline stores. A stage whose premise does not hold in this
    run returns :meth:`skip` instead of proposals: the stage is recorded with its reason.
    """

    task: Any
    metric: str
    seeds: tuple[int, ...]
    history: tuple[dict[str, Any], ...] = ()
    storage: str | None = None  # the store's URL, for stages that keep state (Optuna studies)
    study_name: str = ""  # unique per run and stage position
    notes: dict[str, Any] = field(default_factory=dict)  # what the stage reports; stored
    executor: Any = None  # where a stage runs its own jobs (tuning trials), never processes
    constraints: dict[str, Any] = field(default_factory=dict)  # the recipe's, e.g. max_params
    artifacts: dict[int, str] = field(default_factory=dict)  # seed -> incumbent's saved model
    baseline_train: dict[str, Any] = field(default_factory=dict)  # the recipe's training config
    progress: Any = None  # progress(what, done, total) for long work inside a stage
    resources: dict[str, Any] | None = None  # what one of this stage's jobs needs (a cluster)
    incumbent: dict[str, Any] | None = None  # the incumbent's entry in ``history``
    # under the run's time limit: seconds a search inside the stage may take (None: no limit)
    time_left: float | None = None
    # under the run's time limit: the incumbent's mean measured seconds a seed
    seed_seconds: float | None = None
    # under the run's time limit: per model family (name) this run trained, the slowest mean
    # seconds a seed of its candidates
    family_seconds: dict[str, float] = field(default_factory=dict)

    def skip(self, why: str) -> list:
        """No proposals, and why (a sentence): the run records and shows the stage as
        skipped and goes on with the same incumbent."""
        self.notes["skipped"] = why
        return []


class Stage:
    """Base class. Subclasses implement :meth:`run` and declare their facts here, beside
    their code — the pipeline, the recipe validator and the report hold no table of stages.

    ``run`` must be deterministic for a given incumbent and config (resume relies on it to
    match proposals with what the ledger already holds) and must not mutate its arguments.
    It raises :class:`~tidian.exceptions.ConfigError` for a config it cannot apply to this
    incumbent or task.

    Facts a stage declares (class attributes; methods where they depend on the config):

    * ``requires``: optional packages it always needs, as ``(module, extra)``; checked before
      a run starts (:meth:`requirements` adds those its config needs).
    * ``edits_model``: it changes or retrains a trained torch model, so it cannot come after
      a stage that quantises (:meth:`quantizes`) in a recipe.
    * ``keeps_model_class``: the model it passes on is of the class it received (retrained,
      pruned, re-weighted — not another family, a wrapper or a student), so the stages after it
      can be checked against the recipe's model before anything trains (:meth:`check_model`).
    * ``selects_on_validation``: it chooses (trials, a fitted scaling) on the validation
      split, so a task without validation rows is refused before the run starts.
    * ``fits_on_validation``: its candidates are fitted on the validation split (a scaling),
      so their validation scores are in-sample and no fair basis for choosing among them: the
      pipeline gates every one of them on test with Holm's correction instead of choosing one
      on validation first (``evaluate.select``). A stage that fits on validation but scores
      its candidates there out of fold (``StepContext.held_out``: the ensemble's combinations
      are cross-fitted) does not set it, and chooses like any other.
    * ``sections``: the report sections its results feed (keys of ``report.collect``'s data).
    * ``example``: a small config that runs on a tiny task, for the documentation and the
      stage conformance tests (``tests/stages/test_conformance.py``);
      :meth:`example_config` when it depends on the run (a path to a saved model, say).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "quality"
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    edits_model: ClassVar[bool] = False
    keeps_model_class: ClassVar[bool] = False
    selects_on_validation: ClassVar[bool] = False
    fits_on_validation: ClassVar[bool] = False
    sections: ClassVar[tuple[str, ...]] = ()
    example: ClassVar[dict[str, Any] | None] = None

    def __init__(self, config: Any) -> None:
        self.config = config

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        raise NotImplementedError

    @classmethod
    def example_config(cls, ctx: Context) -> dict[str, Any] | None:
        """The example config for a run at ``ctx`` (a copy of ``example`` by default)."""
        return copy.deepcopy(cls.example)

    def requirements(self) -> list[tuple[str, str]]:
        """Optional packages this stage needs with its config, as ``(module, extra)``."""
        return list(self.requires)

    def quantizes(self) -> bool:
        """Whether the model this stage may make is quantised for ONNX Runtime (nothing that
        edits a torch model can follow it)."""
        return False

    def check(self, task: Any) -> None:
        """Raise ConfigError when the config cannot apply to ``task`` (called before the run
        starts, so a bad setting fails before the baseline trains)."""

    def check_model(self, model: Any, task: Any) -> None:
        """Raise ConfigError when the config cannot apply to ``model``, an untrained model
        of the recipe's for ``task`` (called before the run starts, for the stages that every
        stage before them passes a model of that class: see ``keeps_model_class``)."""

    def gate_kind(self) -> str | None:
        """ "quality" or "cost" when the config picks the gate (None: the registered kind)."""
        return None

    def gate_metric(self) -> str | None:
        """A metric the gate judges instead of the recipe's (None: the recipe's). The recipe's
        metric is then still required to be non-inferior within the margin."""
        return None

    def margin(self, metric: str) -> float | str | None:
        """The non-inferiority margin for this stage's candidates as written (a number in the
        metric's units, ``'0.5pt'``, ``'1%'``: ``metrics.quality_amount``), None: the recipe's."""
        return None
