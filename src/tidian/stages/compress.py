"""Compression stages: ``prune``, ``quantize``, ``lowrank`` and the automatic ``compress``.

Each proposes candidates that *transform the incumbent's trained weights* (seed by seed) rather
than train from scratch; the pipeline applies the transform in its workers, measures the result
on the deployment runtime and gates it for non-inferiority. A compressed candidate must also be
faster or smaller on that runtime than the incumbent, or it is rejected as such.

``compress`` searches combinations — pruning amount × low-rank energy × quantisation mode —
with Optuna's multi-objective NSGA-II on the first seed (validation quality against measured
ONNX Runtime latency and/or file size), then sends to full evaluation the best Pareto point
within ``tolerance`` of the incumbent and a few other Pareto points; when no point is within
tolerance it sends the closest one, labelled so. Its gate margin is its tolerance.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tidian.compression.apply import StepContext, apply_steps, check_steps
from tidian.compression.finetune import check_distill
from tidian.compression.lowrank import LowRankConfig
from tidian.compression.prune import PruneConfig, example_batch
from tidian.compression.quantize import QuantizeConfig
from tidian.compression.traced import find_groups
from tidian.evaluation.cost import measure_onnx_cost
from tidian.exceptions import ConfigError, TidianError, bad_value, require
from tidian.executors import Job, execute, job_handler
from tidian.export import OnnxModel, export_onnx
from tidian.metrics import (
    check_amount,
    compute_metrics,
    default_amount,
    greater_is_better,
    quality_amount,
)
from tidian.models import model_spec
from tidian.models.io import load_model
from tidian.stages.base import Context, Proposal, Stage, register_stage
from tidian.stages.study import RETRIED, make_positional, open_study, places, retire_lost


def _label(kind: str, config: Any) -> str:
    changed = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != f.default
        and (f.default_factory is dataclasses.MISSING or getattr(config, f.name))
    }
    return kind + (" " + ", ".join(f"{k}={v}" for k, v in changed.items()) if changed else "")


def _transform(incumbent: Proposal, label: str, steps: list[dict[str, Any]]) -> Proposal:
    steps = check_steps(steps)
    return Proposal(
        label, dict(incumbent.model), dict(incumbent.train), {"transform": steps}, transform=steps
    )


class _OneStep(Stage):
    step = ""
    edits_model = True

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        config = dataclasses.asdict(self.config)
        return [_transform(incumbent, _label(self.step, self.config), [{self.step: config}])]


def _check_weights(model: Any, stage: str) -> None:
    """Refuse a stage that edits a network's weights on a model without any (a tree family,
    which its library trained), before training."""
    if not any(True for _ in model.parameters()):
        spec = model_spec(model)
        raise ConfigError(
            f"{stage} edits a network's weights, and {spec.name if spec else 'the model'} has "
            "none (a tree model); remove the stage, or put it after a stage that makes a network."
        )


def _check_structured(model: Any, task: Any, stage: str) -> None:
    """Refuse structured pruning of a model whose unit groups cannot be found, or that has
    none, before training."""
    try:
        if not find_groups(model, example_batch(model, task)):
            raise ConfigError(
                f"structured pruning found no removable units in {type(model).__name__}; use "
                "unstructured pruning (structured: false)."
            )
    except ConfigError as err:
        raise ConfigError(f"{err} (found before training: {stage} would fail on it)") from None


@register_stage("prune", config=PruneConfig, kind="cost")
class Prune(_OneStep):
    """Structured or unstructured pruning of the incumbent, fine-tuned, gated non-inferior."""

    keeps_model_class = True

    def check_model(self, model: Any, task: Any) -> None:
        _check_weights(model, "prune")
        if self.config.structured and self.config.amount > 0:
            _check_structured(model, task, "prune")

    step = "prune"
    example: ClassVar[dict[str, Any]] = {"amount": 0.5, "structured": True, "finetune_epochs": 1}


@register_stage("quantize", config=QuantizeConfig, kind="cost")
class Quantize(_OneStep):
    """int8 (dynamic, static, QAT) or fp16 on ONNX Runtime, gated non-inferior."""

    step = "quantize"
    example: ClassVar[dict[str, Any]] = {"mode": "dynamic"}
    edits_model = False  # it reads the torch model; a second quantize finds nothing to do
    requires = (("onnx", "onnx"), ("onnxruntime", "onnx"))

    def quantizes(self) -> bool:
        return True


@register_stage("lowrank", config=LowRankConfig, kind="cost")
class LowRankStage(_OneStep):
    """SVD factorisation of Linear/Conv layers, fine-tuned, gated non-inferior."""

    step = "lowrank"
    keeps_model_class = True
    example: ClassVar[dict[str, Any]] = {"energy": 0.9, "finetune_epochs": 1}

    def check_model(self, model: Any, task: Any) -> None:
        _check_weights(model, "lowrank")


TARGETS = ("latency", "size", "both")


@dataclass(frozen=True)
class CompressConfig:
    """tolerance: quality the result may lose — a number in the metric's units, points of a
    fraction metric ('0.5pt') or a percent of the incumbent's score ('1%'); default 0.5pt on a
    fraction metric, else 1% — also the gate's margin for this stage.
    target: latency | size | both. trials: Optuna trials (on the first seed).
    amounts / energies / modes: the search space (0 amount, energy 1 and mode none = off).
    finetune_epochs / finetune / distill: fine-tuning after pruning / factorising (as for
    prune). top_k: Pareto points besides the chosen one sent to full evaluation."""

    tolerance: float | str | None = None
    target: str = "latency"
    trials: int = 30
    amounts: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7, 0.8, 0.9])
    energies: list[float] = field(default_factory=lambda: [1.0, 0.95, 0.9, 0.8])
    modes: list[str] = field(default_factory=lambda: ["none", "dynamic", "static"])
    structured: bool = True
    finetune_epochs: int = 5
    finetune: dict[str, Any] = field(default_factory=dict)
    top_k: int = 2
    seed: int = 0
    distill: dict[str, Any] | None = None  # fine-tune towards the uncompressed model

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise bad_value("compress.target", f"one of {TARGETS}", self.target)
        if self.tolerance is not None:
            check_amount(self.tolerance, "compress.tolerance")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise bad_value("compress.trials", "a positive integer", self.trials)
        for a in self.amounts:
            PruneConfig(amount=a)
        for e in self.energies:
            if not 0 < e <= 1:
                raise bad_value("compress.energies[]", "fractions in (0, 1]", e)
        for m in self.modes:
            if m != "none":
                QuantizeConfig(mode=m)
        check_distill(self.distill, "compress")
        if not self.amounts or not self.energies or not self.modes:
            raise bad_value("compress", "non-empty amounts, energies and modes", self)

    def steps(self, amount: float, energy: float, mode: str) -> list[dict[str, Any]]:
        tune = {
            "finetune_epochs": self.finetune_epochs,
            "finetune": dict(self.finetune),
            "distill": self.distill,
        }
        steps: list[dict[str, Any]] = []
        if amount > 0:
            steps.append({"prune": {"amount": amount, "structured": self.structured, **tune}})
        if energy < 1:
            steps.append({"lowrank": {"energy": energy, **tune}})
        if mode != "none":
            steps.append({"quantize": {"mode": mode}})
        return steps


@job_handler("compress.trial")
def trial_job(job: Job) -> dict[str, float]:
    """Compress the first seed's model once (``config``: ``parent``, ``steps``, ``train``,
    ``metric``); its validation score and ONNX Runtime cost, or ``{"error": message}`` when
    this combination cannot be applied (the search goes on)."""
    c = job.config
    work = Path(tempfile.mkdtemp(prefix="tidian-compress-"))
    try:
        return _measure(c["parent"], c["steps"], job.task, c["train"], job.seed, c["metric"], work)
    except TidianError as err:
        return {"error": str(err)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(parent, steps, task, train, seed, metric, work: Path) -> dict[str, float]:
    model = load_model(parent)
    model, onnx, _ = apply_steps(model, steps, StepContext(task, train, seed, metric, work))
    if onnx is None:
        onnx = work / "f.onnx"
        export_onnx(model, task, onnx)
    split = task.val if len(task.val) else task.test
    score = compute_metrics(split.y, OnnxModel(onnx).predict(split.x), [metric])[metric]
    cost = measure_onnx_cost(onnx, task, repeats=100)
    return {"score": score, "latency_ms": cost.latency_ms, "bytes": cost.size_bytes}


@register_stage("compress", config=CompressConfig, kind="cost")
class Compress(Stage):
    """Accuracy-aware automatic compression (Optuna multi-objective)."""

    requires = (("optuna", "tune"), ("onnx", "onnx"), ("onnxruntime", "onnx"))
    edits_model = True

    def quantizes(self) -> bool:
        return any(m != "none" for m in self.config.modes)

    def check_model(self, model: Any, task: Any) -> None:
        _check_weights(model, "compress")
        if self.config.structured and any(a > 0 for a in self.config.amounts):
            _check_structured(model, task, "compress")

    example: ClassVar[dict[str, Any]] = {
        "trials": 2,
        "amounts": [0.0, 0.5],
        "energies": [1.0],
        "modes": ["none", "dynamic"],
        "finetune_epochs": 1,
        "top_k": 1,
    }

    def margin(self, metric: str) -> float:
        tolerance = self.config.tolerance
        return default_amount(metric, 0.5) if tolerance is None else tolerance

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        optuna = require("optuna", "tune", "the compress stage")
        require("onnxruntime", "onnx", "the compress stage")
        config, metric = self.config, ctx.metric
        if not ctx.artifacts:
            raise ConfigError(
                "compress needs the incumbent's saved weights (run it in a pipeline)."
            )
        seed = ctx.seeds[0]
        parent = ctx.artifacts[seed]
        sign = 1 if greater_is_better(metric) else -1
        objectives = {"latency": ["latency_ms"], "size": ["bytes"], "both": ["latency_ms", "bytes"]}
        costs = objectives[config.target]
        study = open_study(
            ctx.storage,
            ctx.study_name,
            ["maximize" if sign > 0 else "minimize"] + ["minimize"] * len(costs),
            make_positional(lambda seed: optuna.samplers.NSGAIISampler(seed=seed), config.seed),
            feature="the compress stage",
        )
        retire_lost(study)  # trials a killed run left asked and untold: drawn again

        def measure(plans: list[list[dict[str, Any]]]) -> list[dict[str, float]]:
            spec = {"parent": parent, "train": incumbent.train, "metric": metric}
            jobs = [
                Job("compress.trial", {**spec, "steps": p}, ctx.task, seed, resources=ctx.resources)
                for p in plans
            ]
            return ctx.executor.gather(jobs) if ctx.executor else [execute(j) for j in jobs]

        # The uncompressed incumbent on the same runtime: the reference point of the search.
        (reference,) = measure([[]])
        if "error" in reference:
            raise ConfigError(f"compress: the incumbent itself cannot run: {reference['error']}")
        done = sum(t.state.is_finished() and not t.user_attrs.get(RETRIED) for t in study.trials)
        batch = ctx.executor.workers if ctx.executor else 1
        while done < config.trials:
            trials = [study.ask() for _ in range(min(batch, config.trials - done))]
            plans = [
                config.steps(
                    t.suggest_categorical("amount", list(config.amounts)),
                    t.suggest_categorical("energy", list(config.energies)),
                    t.suggest_categorical("mode", list(config.modes)),
                )
                for t in trials
            ]
            results = measure(plans)
            for t, plan, r in zip(trials, plans, results):
                t.set_user_attr("steps", plan)
                t.set_user_attr("result", r)
                if "error" in r:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(t, [r["score"], *(r[c] for c in costs)])
            done += len(trials)
        return self._proposals(study, incumbent, ctx, reference, costs, sign)

    def _proposals(self, study, incumbent, ctx, reference, costs, sign) -> list[Proposal]:
        import optuna

        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        front = [t for t in study.best_trials if t.user_attrs["steps"]]
        tolerance = quality_amount(
            self.margin(ctx.metric),
            ctx.metric,
            reference["score"],
            "compress.tolerance",
            guard=True,
        )
        floor = reference["score"] - sign * tolerance

        def ok(t) -> bool:
            return sign * (t.values[0] - floor) >= 0

        def cost(t) -> tuple[float, ...]:
            return tuple(t.user_attrs["result"][c] for c in costs)

        within = sorted((t for t in front if ok(t)), key=cost)
        place = places(study.get_trials(deepcopy=False))
        notes: dict[str, Any] = {
            "trials": len(place),
            "retried": len(study.trials) - len(place),
            "complete": len(complete),
            "failed": [
                {"trial": place[t.number], "error": t.user_attrs["result"]["error"]}
                for t in study.trials
                if "error" in t.user_attrs.get("result", {}) and t.number in place
            ],
            "reference": reference,
            "objectives": [ctx.metric, *costs],
            "pareto": [
                {"trial": place[t.number], "steps": t.user_attrs["steps"], **t.user_attrs["result"]}
                for t in sorted(study.best_trials, key=lambda t: t.number)
            ],
        }
        picked: list[tuple[str, Any]] = []
        if within:
            picked.append(
                (f"compress best within tolerance (trial {place[within[0].number]})", within[0])
            )
            notes["choice"] = "within tolerance"
        else:
            pool = front or [t for t in complete if t.user_attrs["steps"]]
            if not pool:
                raise ConfigError("compress: no trial finished; check the search space.")
            closest = max(pool, key=lambda t: sign * t.values[0])
            picked.append(
                (f"compress closest, outside tolerance (trial {place[closest.number]})", closest)
            )
            notes["choice"] = (
                "no trial was within tolerance on validation; the closest one is sent to "
                "evaluation, labelled as such"
            )
        for t in sorted(front, key=lambda t: -sign * t.values[0]):
            if len(picked) > self.config.top_k:
                break
            # NSGA-II may sample one combination twice: evaluate each transform once
            if all(t.user_attrs["steps"] != p.user_attrs["steps"] for _, p in picked):
                picked.append((f"compress pareto (trial {place[t.number]})", t))
        ctx.notes.update(notes)
        return [_transform(incumbent, label, t.user_attrs["steps"]) for label, t in picked]
