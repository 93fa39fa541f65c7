"""Quality over seeds: train a model-making recipe k times and summarise the scores.

A *seed* fixes everything random in one training run: the initial weights, the data order and
dropout. Every candidate evaluated on the same seeds and the same task sees the same splits
and data orders, which is what makes paired comparisons (:func:`compare`) meaningful.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tidian.evaluation.cv import make_cv
from tidian.evaluation.stats import PairedComparison, Summary, paired_compare, summarize
from tidian.exceptions import ConfigError, bad_value
from tidian.executors import Executor, Job, LocalExecutor, job_handler, worker_info
from tidian.metrics import (
    DEFAULT_METRICS,
    bounds,
    check_metrics,
    compute_metrics,
    greater_is_better,
    predict,
    row_pseudo_values,
)
from tidian.models import model_spec, save_model
from tidian.store.artifacts import writing
from tidian.tasks import load_task
from tidian.tasks.task import require_scorable
from tidian.training.build import ModelMaker, train_new
from tidian.training.config import TrainConfig
from tidian.training.loop import History, process_group

ModelRecipe = str | dict[str, Any] | Callable[[Any], nn.Module] | nn.Module


@dataclass
class SeedRun:
    """One training run: its seed, scores per split, learning curves and (optionally) weights."""

    seed: int
    scores: dict[str, dict[str, float]]
    history: History
    seconds: float
    state: dict[str, torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what a transform reports
    worker: dict[str, Any] = field(default_factory=dict)  # where it ran (executors.worker_info)
    # {metric: test-row-group pseudo-values} (metrics.row_pseudo_values), when asked for
    rows: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Scores of one model recipe over several seeds, with per-metric summaries."""

    name: str
    task: str
    metric: str
    seeds: list[int]
    runs: list[SeedRun]
    confidence: float
    ci: str
    config: TrainConfig
    summary: dict[str, dict[str, Summary]] = field(default_factory=dict)
    folds: int | None = None  # cross-validation: ``seeds`` are CV units (tidian.evaluation.cv)
    correction: float = 0.0  # ρ of the corrected variance of CV units (0: independent seeds)

    def scores(self, metric: str | None = None, split: str = "test") -> list[float]:
        metric = metric or self.metric
        return [run.scores[split][metric] for run in self.runs]

    def row_table(self, metric: str | None = None) -> list[list[float]] | None:
        """Seeds × test-row-group pseudo-values of ``metric`` (None when a seed lacks them)."""
        metric = metric or self.metric
        if not all(metric in run.rows for run in self.runs):
            return None
        return [run.rows[metric] for run in self.runs]

    def __getitem__(self, metric: str) -> Summary:
        """``evaluation["accuracy"]`` → the test-split Summary of that metric."""
        return self.summary["test"][metric]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "metric": self.metric,
            "seeds": self.seeds,
            "confidence": self.confidence,
            "ci": self.ci,
            "folds": self.folds,
            "correction": self.correction,
            "config": self.config.to_dict(),
            "summary": {s: {m: v.to_dict() for m, v in d.items()} for s, d in self.summary.items()},
            "runs": [
                {
                    "seed": r.seed,
                    "scores": r.scores,
                    "seconds": r.seconds,
                    "history": r.history.to_dict(),
                }
                for r in self.runs
            ],
        }


@dataclass(frozen=True)
class TemplateFactory:
    """A copy of a user's module with fresh weights drawn from the current (seeded) RNG."""

    template: nn.Module

    def __call__(self, task: Any) -> nn.Module:
        model = copy.deepcopy(self.template)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return model


def model_factory(model: ModelRecipe) -> tuple[str, ModelMaker]:
    """Turn every accepted way of naming a model into (label, maker): a zoo spec
    ``{name, **options}`` (plain data) or, for a user's own module, a factory task -> module."""
    if isinstance(model, str):
        return model, {"name": model}
    if isinstance(model, dict):
        if "name" not in model:
            raise bad_value(
                "model", "a mapping with a 'name' key (a zoo model) and its options", model
            )
        return model["name"], dict(model)
    if isinstance(model, nn.Module):
        spec = model_spec(model)
        if spec is not None:
            return spec.name, {"name": spec.name, **spec.options}
        return type(model).__name__, TemplateFactory(model)
    if callable(model):
        return getattr(model, "__name__", "model"), model
    raise bad_value(
        "model",
        "a zoo name, a {name: ..., options} mapping, a factory task -> nn.Module, or an nn.Module",
        type(model).__name__,
    )


def score_splits(
    task: Any, outputs: Callable[[Any], Any], metrics: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{split: {metric: value}}`` on the validation and test splits that have rows;
    ``outputs(x)`` gives a model's outputs (torch or any runtime)."""
    return {
        split: compute_metrics(part.y, outputs(part.x), metrics)
        for split, part in scorable_splits(task)
    }


def scorable_splits(task: Any) -> list[tuple[str, Any]]:
    """The validation and test splits of ``task`` that have rows, by name."""
    return [(s, getattr(task, s)) for s in ("val", "test") if len(getattr(task, s))]


def seed_result(
    job: Job,
    model: nn.Module,
    outputs: Callable[[Any], Any],
    history: History,
    start: float,
    info: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
    folder: Path | None = None,
    held_out: dict[str, Any] | None = None,
) -> SeedRun:
    """The end every seed job shares: score ``outputs`` (the model on the runtime it deploys
    on) on validation and test, then save the model (with ``files`` beside it) into
    ``folder`` — a job's temporary artifact folder that the caller renames into place — or,
    without one, to ``job.out`` when the job keeps a model. ``config.metrics`` names the
    metrics; with ``config.keep_state`` the weights come back too, ``config.outputs``
    lists splits whose raw outputs do, and ``config.rows`` metrics whose test-row pseudo-values
    do (what a gate needs to count the test set's sampling). ``held_out``: outputs of a split
    predicted out of fold (``StepContext.held_out``), scored instead of ``outputs`` there; a
    split given None is not scored (the model trained on its rows)."""
    config = job.config
    held_out = held_out or {}
    raw = {
        split: held_out[split] if split in held_out else outputs(part.x)
        for split, part in scorable_splits(job.task)
        if split not in held_out or held_out[split] is not None
    }
    scores = {
        split: compute_metrics(getattr(job.task, split).y, out, config["metrics"])
        for split, out in raw.items()
    }
    info = dict(info or {})
    for split in config.get("outputs", ()):
        info.setdefault("outputs", {})[split] = (
            raw[split] if split in raw else outputs(getattr(job.task, split).x)
        )
    rows = (
        row_pseudo_values(job.task.test.y, raw["test"], config["rows"])
        if config.get("rows") and "test" in raw
        else {}
    )
    seconds = time.perf_counter() - start
    state = (
        {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if config.get("keep_state")
        else None
    )
    metadata = dict(config.get("metadata") or {})
    if history.epochs:  # how long it trained: what a refit on more rows repeats
        metadata["training"] = {"epochs": len(history.epochs), "best_epoch": history.best_epoch}
    if process_group()[0] != 0:
        pass  # one model trained by several processes: rank 0 writes it
    elif folder is not None:
        save_artifact(model, folder, metadata, files)
    elif job.out is not None:
        with writing(job.out) as tmp:
            save_artifact(model, tmp, metadata, files)
    return SeedRun(job.seed, scores, history, seconds, state, info, worker_info(), rows)


def save_artifact(
    model: nn.Module, folder: Path, metadata: dict[str, Any] | None, files: dict[str, str] | None
) -> None:
    save_model(model, folder, metadata=metadata)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)


@job_handler("train")
def train_job(job: Job) -> SeedRun:
    """Train seed ``job.seed`` of a model from scratch on ``job.task`` and score it.

    ``config``: ``model`` (a zoo spec, or a picklable factory task -> module), ``train`` (a
    TrainConfig mapping), ``metrics``; see :func:`seed_result` for what else it may ask."""
    start = time.perf_counter()
    config = TrainConfig.coerce(job.config["train"])
    model, history = train_new(job.config["model"], job.task, config, job.seed)
    return seed_result(
        job, model, partial(predict, model, batch_size=config.eval_batch_size), history, start
    )


@contextlib.contextmanager
def own_executor(
    executor: Executor | None, workers: int, threads: int | None = None
) -> Iterator[Executor]:
    """``executor`` as it is (the caller closes it), or a new LocalExecutor(``workers``,
    ``threads``) that is closed on exit: the ``n_jobs`` shorthand."""
    if executor is not None:
        yield executor
        return
    with LocalExecutor(workers, threads) as own:
        yield own


def train_jobs(
    model: ModelMaker,
    tasks: Sequence[tuple[Any, Any, int]],
    config: TrainConfig,
    metrics: Sequence[str],
    *,
    resources: dict[str, Any] | None = None,
    **extra: Any,
) -> list[Job]:
    """One ``train`` job per ``(key, task, seed)``: the unit of every seeded evaluation.
    ``resources``: what each needs on a cluster; ``extra`` goes into each job's config."""
    spec = {"model": model, "train": config.to_dict(), "metrics": list(metrics), **extra}
    return [
        Job("train", spec, task, seed, key=key, resources=resources, processes=config.processes)
        for key, task, seed in tasks
    ]


def evaluate(
    model: ModelRecipe,
    task: Any,
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    seeds: int | Sequence[int] = 5,
    metrics: Sequence[str] | None = None,
    metric: str | None = None,
    confidence: float = 0.95,
    ci: str = "t",
    n_jobs: int = 1,
    keep_models: bool = False,
    name: str | None = None,
    folds: int | None = None,
    repeated: bool = False,
    on_seed: Callable[[SeedRun], None] | None = None,
    executor: Executor | None = None,
) -> Evaluation:
    """Train ``model`` once per seed on ``task`` and summarise validation and test scores.

    ``model``: a zoo name, ``{"name": ..., **options}``, a factory ``task -> nn.Module`` or a
    module (re-initialised per seed). ``seeds``: a count (seeds 0..k-1) or explicit seeds.
    ``n_jobs > 1`` trains seeds in that many worker processes, each on one thread (shorthand
    for ``executor=LocalExecutor(n_jobs)``); ``executor`` runs them wherever it runs jobs. A
    factory must then be picklable (zoo names and mappings always are).

    ``on_seed(run)`` is called as each seed (or unit) finishes, for progress displays.

    ``folds=k`` evaluates by cross-validation: every seed gives k units (all rows pooled, each
    unit tested on one fold; ``repeated`` reshuffles the folds per seed), and intervals use
    the corrected variance for overlapping training sets (see ``tidian.evaluation.cv``).
    """
    task = load_task(task) if isinstance(task, str) else task
    config = TrainConfig.coerce(config)
    label, make = model_factory(model)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise bad_value("seeds", "a positive count or a list of distinct integers", seeds)
    metric = metric or task.metric
    names = check_metrics(
        list(dict.fromkeys([metric, *(metrics or DEFAULT_METRICS[task.target_kind])])),
        task.target_kind,
    )
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise bad_value("n_jobs", "a positive integer", n_jobs)
    cv = make_cv(folds, repeated)
    correction = 0.0
    if cv is None:
        require_scorable(task)
    if cv is not None:
        if ci != "t":
            raise bad_value("ci", "'t' with folds (the corrected t-interval)", ci)
        seed_list, correction = cv.units(seed_list), cv.correction(task)
    jobs = train_jobs(
        make,
        [(s, cv.task(task, s) if cv else task, s) for s in seed_list],
        config,
        names,
        keep_state=keep_models,
        # the judged metric's test-row pseudo-values, for compare(): with folds every unit has
        # its own test rows, and the corrected variance already counts them
        rows=[] if cv else [metric],
    )
    done: dict[int, SeedRun] = {}
    with own_executor(executor, min(n_jobs, len(seed_list))) as runner:
        for _, r in runner.run(jobs):
            done[r.seed] = r
            if on_seed is not None:
                on_seed(r)
    runs = [done[s] for s in seed_list]
    evaluation = Evaluation(
        label if name is None else name,
        task.name,
        metric,
        seed_list,
        runs,
        confidence,
        ci,
        config,
        folds=cv.folds if cv else None,
        correction=correction,
    )
    for split in ("val", "test"):
        if all(split in r.scores for r in runs):
            evaluation.summary[split] = {
                m: summarize(
                    [r.scores[split][m] for r in runs], confidence, ci, correction, bounds(m)
                )
                for m in names
            }
    return evaluation


def compare(
    baseline: Evaluation, candidate: Evaluation, *, metric: str | None = None, split: str = "test"
) -> PairedComparison:
    """Paired comparison of two evaluations made on the same task and seeds; on the test split
    the interval counts the sampling of its rows as well as the seeds' (``stats.mean_variance``)
    when both kept the metric's row pseudo-values (the judged metric, without folds)."""
    metric = metric or baseline.metric
    if baseline.seeds != candidate.seeds:
        raise ConfigError(
            f"paired comparison needs the same seeds; got {baseline.seeds} and "
            f"{candidate.seeds}. Evaluate both with the same seeds=."
        )
    if baseline.task != candidate.task:
        raise ConfigError(
            f"paired comparison needs the same task; got {baseline.task!r} and {candidate.task!r}."
        )
    return paired_compare(
        baseline.scores(metric, split),
        candidate.scores(metric, split),
        metric=metric,
        greater_is_better=greater_is_better(metric),
        confidence=baseline.confidence,
        method=baseline.ci,
        correction=max(baseline.correction, candidate.correction),
        rows=(baseline.row_table(metric), candidate.row_table(metric)) if split == "test" else None,
    )


__all__ = ["Evaluation", "SeedRun", "compare", "evaluate"]
