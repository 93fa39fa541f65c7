"""Transforms: steps applied to one seed of a trained candidate, registered where they are
defined, and the ``transform`` job that applies them.

A *transform* is plain data: a list of one-key steps, ``[{"prune": {...}}, {"quantize": {...}}]``,
applied in order to the parent's model of a seed (and fine-tuned with that seed), so the new
candidate is paired seed by seed with its parent — the gate's paired test stays valid.

Each step kind is registered beside its code with :func:`transform_step`: compression steps
(``prune``, ``lowrank``, ``quantize``) in ``compression/``, and the steps of stages that make
a new model from the parent or from nothing (``distill``, ``transfer``, ``ensemble``,
``clean``, ``multitask``) or change it otherwise (``calibrate``) in their stage's module.
Every handler has one signature::

    step(model: nn.Module | None, config: dict, ctx: StepContext) -> (model, report)

``model`` is the parent's model of the seed, or None when the step declares it does not need
it. The step returns the model it made (changed in place or new) and a JSON-ready report.

The unit of work, the ``transform`` job (:func:`transform_job`), runs in a worker: it loads
the parent seed's saved model when the first step needs it, applies the steps, scores
validation and test on the runtime the result is deployed on (ONNX Runtime for a quantised
model, torch otherwise) and writes the seed's artifact folder (a temporary folder renamed
into place).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tidian.evaluation.evaluate import SeedRun, seed_result
from tidian.exceptions import ConfigError, bad_value, require
from tidian.executors import Job, job_handler
from tidian.export import OnnxModel
from tidian.metrics import predict
from tidian.models import load_model
from tidian.registry import Registry
from tidian.store.artifacts import local, writing
from tidian.training.loop import History

ONNX_FILE = "model.onnx"
REPORT_FILE = "compression.json"

Step = Callable[[nn.Module | None, dict[str, Any], "StepContext"], tuple[nn.Module, dict]]
STEPS: Registry[Step] = Registry("transform step")


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides the model and its config.

    ``train``: the candidate's full training config (fine-tuning starts from it); ``seed``:
    everything random in the step comes from it; ``metric``: the run's metric; ``workdir``:
    the seed's artifact folder being written, where a step may put files (``quantize``
    writes ``model.onnx`` there). ``held_out``: a step that fits something on a split (an
    ensemble's weights on validation) puts there, by split name, its outputs on that split
    predicted out of fold; the seed is scored on them instead of the model's in-sample
    outputs, so its validation score stays an honest one to choose on — or None: the step
    trained on that split (a refit), which is then not scored at all. Only the last step's
    count (a later step changes the model)."""

    task: Any
    train: Any
    seed: int
    metric: str
    workdir: Path
    held_out: dict[str, Any] = field(default_factory=dict)


def transform_step(
    name: str,
    *,
    config: Callable[..., Any],
    new_model: bool = False,
    needs_parent: bool | Callable[[dict[str, Any]], bool] = True,
    last: str | None = None,
    requires: tuple[tuple[str, str], ...] = (),
) -> Callable[[Step], Step]:
    """Decorator registering a step handler under ``name``.

    ``config(**step_config)`` validates a step's config (a config dataclass, or a function
    that raises ConfigError). ``new_model``: the step trains a new model, so it must come
    first. ``needs_parent``: whether it reads the parent's model (or a function of its config
    saying so). ``last``: why it must be the last step, when it must. ``requires``: optional
    packages as ``(module, extra)``, checked before the step runs.
    """

    def decorator(fn: Step) -> Step:
        STEPS.add(
            name,
            fn,
            config=config,
            new_model=new_model,
            needs_parent=needs_parent,
            last=last,
            requires=tuple(requires),
            module=fn.__module__,
        )
        return fn

    return decorator


def step_modules(steps: list[dict[str, Any]]) -> tuple[str, ...]:
    """The modules that define a transform's steps: a worker imports them before it runs
    the transform (``Job.imports``)."""
    return tuple(dict.fromkeys(STEPS.entry(next(iter(s))).meta["module"] for s in steps))


def needs_parent(step: dict[str, dict[str, Any]]) -> bool:
    """Whether a transform's step reads the parent's model."""
    ((kind, config),) = step.items()
    rule = STEPS.entry(kind).meta["needs_parent"]
    return bool(rule(config or {}) if callable(rule) else rule)


def check_steps(steps: Any, allow_empty: bool = False) -> list[dict[str, dict[str, Any]]]:
    """Validate a transform: registered step kinds, valid configs, order (new-model steps
    first, steps that must be last last)."""
    if not isinstance(steps, list) or not (steps or allow_empty):
        raise bad_value("transform", f"a non-empty list of {{{'|'.join(STEPS)}: {{...}}}}", steps)
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or len(step) != 1:
            raise bad_value(f"transform[{i}]", "a one-key mapping {kind: config}", step)
        ((kind, config),) = step.items()
        if kind not in STEPS:
            raise bad_value(f"transform[{i}]", f"one of {tuple(STEPS)}", kind)
        meta = STEPS.entry(kind).meta
        if meta["new_model"] and i:
            raise ConfigError(
                f"{kind} must be the first step of a transform: it trains a new model."
            )
        if meta["last"] and i != len(steps) - 1:
            raise ConfigError(f"{kind} must be the last step of a transform: {meta['last']}.")
        meta["config"](**(config or {}))
        out.append({kind: dict(config or {})})
    return out


def apply_steps(
    model: nn.Module | None, steps: list[dict[str, dict[str, Any]]], ctx: StepContext
) -> tuple[nn.Module, Path | None, list[dict[str, Any]]]:
    """Apply ``steps`` to ``model``; returns (model, its ONNX file when a step made the
    deployed model an ONNX Runtime one, the steps' reports)."""
    reports = []
    for step in check_steps(steps, allow_empty=True):
        ((kind, config),) = step.items()
        entry = STEPS.entry(kind)
        for module, extra in entry.meta["requires"]:
            require(module, extra, f"the {kind} step")
        ctx.held_out.clear()  # an earlier step's out-of-fold outputs are not this model's
        model, report = entry.obj(model, config, ctx)
        reports.append({kind: report})
    onnx = ctx.workdir / ONNX_FILE
    return model, (onnx if onnx.exists() else None), reports


@job_handler("transform")
def transform_job(job: Job) -> SeedRun:
    """Make seed ``job.seed`` of a candidate by transforming its parent's model of that seed.

    ``config``: ``parent`` (the parent seed's saved model folder), ``steps``, ``train`` (the
    candidate's training config), ``metrics`` (the first is the run's); writes ``job.out``."""
    config = job.config
    start = time.perf_counter()
    torch.manual_seed(job.seed)
    steps = config["steps"]
    model = None
    if not steps or needs_parent(steps[0]):
        parent = local(config["parent"])  # a remote artifact: fetched once into the cache
        if (parent / ONNX_FILE).exists():
            first = next(iter(steps[0])) if steps else "a transform"
            raise ConfigError(
                "this candidate's parent is already quantised (an ONNX Runtime model), which "
                f"{first} cannot start from; put quantize last in the recipe."
            )
        model = load_model(parent)
    with writing(job.out) as folder:
        ctx = StepContext(job.task, config["train"], job.seed, config["metrics"][0], folder)
        model, onnx, reports = apply_steps(model, steps, ctx)
        # Scored on the runtime it deploys on: ONNX Runtime for a quantised model.
        outputs = OnnxModel(onnx).predict if onnx else partial(predict, model)
        report = json.dumps(reports, indent=2, default=str)
        return seed_result(
            job,
            model,
            outputs,
            History(None),
            start,
            {"steps": reports},
            files={REPORT_FILE: report},
            folder=folder,
            held_out=ctx.held_out,
        )
