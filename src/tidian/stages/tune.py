"""The ``tune`` stage: hyperparameter and architecture search on Optuna.

Trials train one model each (the run's first seed) and are judged on the *validation*
split; the best ``top_k`` configurations go back to the pipeline as proposals, which re-trains
them on every seed and gates them on the test split like any candidate (the best validation
trial is often a lucky one). The study lives in the run's own store database, so
``optuna-dashboard <store-url>`` shows it, and a resumed run continues it: finished trials are
kept and a trial left RUNNING by a dead process is marked failed and retried.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tidian.evaluation.cost import measure_cost
from tidian.exceptions import ConfigError, TidianError, require
from tidian.executors import Job, job_handler
from tidian.metrics import METRICS, greater_is_better, predict
from tidian.models.base import library_ignores
from tidian.stages.base import Context, Proposal, Stage, register_stage, unmeasured_pace
from tidian.stages.space import check_space, grid, has_categorical, sample
from tidian.stages.study import RETRIED, load_study, make_positional, open_study, places, quiet
from tidian.training.build import train_new
from tidian.training.config import TrainConfig

SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "qmc", "nsga2")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")
COSTS = {"latency_ms": "latency_ms", "params": "params", "bytes": "size_bytes", "macs": "macs"}
LIMITS = {"latency_ms": "max_latency_ms", "params": "max_params", "bytes": "max_bytes"}


MAX_TRIALS = 100_000


@dataclass(frozen=True)
class TuneConfig:
    """trials / timeout_s: the budget; sampler; pruner; objectives (validation metrics and
    measured costs: latency_ms, params, bytes, macs); space (see stages/space.py); top_k
    configurations sent to re-evaluation; seed of the sampler."""

    space: dict[str, Any] = field(default_factory=dict)
    trials: int = 20
    timeout_s: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    objectives: list[str] = field(default_factory=list)
    top_k: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}."
            )
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}; got {self.pruner!r}.")
        if not isinstance(self.trials, int) or not 1 <= self.trials <= MAX_TRIALS:
            raise ConfigError(
                f"trials must be a whole number in 1..{MAX_TRIALS:,} (each trains a model); "
                f"got {self.trials!r}."
            )
        if self.timeout_s is not None and not (
            isinstance(self.timeout_s, int | float) and 0 < self.timeout_s < math.inf
        ):
            raise ConfigError(f"timeout_s must be a positive number; got {self.timeout_s!r}.")
        if not isinstance(self.top_k, int) or not 1 <= self.top_k <= self.trials:
            raise ConfigError(
                f"top_k must be a whole number from 1 to trials ({self.trials}); "
                f"got {self.top_k!r}."
            )
        check_space(self.space, "space")
        for name in self.objectives:
            if name not in COSTS and name not in METRICS:
                raise ConfigError(
                    f"objectives: {name!r} is not measured; use a metric "
                    f"(`tidian metrics`) or one of {', '.join(COSTS)}."
                )
        if len(self.objectives) > 1 and self.pruner != "none":
            raise ConfigError(
                "pruner: Optuna cannot prune multi-objective studies; set pruner: none."
            )
        if self.sampler == "cmaes" and has_categorical(self.space):
            raise ConfigError(
                "sampler: cmaes cannot sample categorical (choice) parameters; "
                "use tpe, random or gp for this space."
            )
        if self.sampler == "grid":
            grid(self.space, "space")


def _sampler(config: TuneConfig):
    """The stage's sampler, drawing each trial from its place in the budget (a resumed study
    draws what an uninterrupted one would)."""
    return make_positional(lambda seed: _seeded_sampler(config, seed), config.seed)


def _seeded_sampler(config: TuneConfig, seed: int):
    optuna = require("optuna", "tune", "the tune stage")
    s = config.sampler
    if s == "grid":
        return optuna.samplers.GridSampler(grid(config.space, "space"), seed=seed)
    if s == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s == "tpe":
        with warnings.catch_warnings():  # multivariate/group are "experimental" since 2.2; stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if s == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if s == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if s == "qmc":
        return optuna.samplers.QMCSampler(
            seed=seed, scramble=True
        )  # seeded, not one fixed sequence
    return optuna.samplers.NSGAIISampler(seed=seed)


def _pruner(name: str):
    optuna = require("optuna", "tune", "the tune stage")
    return {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=3),
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }[name]()


_FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
# User attribute naming the trial worker that ran a trial: "<dispatch>:<index>", where the
# dispatch is one run of the stage (a resumed stage dispatches anew; a worker job run again
# after its node died keeps its name, and so recognises its own trials).
WORKER = "tidian_worker"


def _directions(objectives: list[str]) -> list[str]:
    return [
        "minimize" if name in COSTS or not greater_is_better(name) else "maximize"
        for name in objectives
    ]


def _spent(study) -> int:
    """Trials that count against the budget: finished ones, except failures that were retried."""
    import optuna

    states = tuple(getattr(optuna.trial.TrialState, s) for s in _FINISHED_STATES)
    return sum(
        not t.user_attrs.get(RETRIED) for t in study.get_trials(deepcopy=False, states=states)
    )


def _objective(
    config: TuneConfig,
    incumbent: dict[str, Any],
    task: Any,
    seed: int,
    objectives: list[str],
    worker: str | None = None,
):
    """The trial function: sample, train one seed with pruning on validation, score.
    ``worker``: the trial worker's name, recorded with the trial (a retried worker counts
    what it already did against its share)."""
    import optuna

    def objective(trial):
        if worker is not None:
            trial.set_user_attr(WORKER, worker)
        values = sample(trial, config.space)
        model = dict(values.pop("model", incumbent["model"]))
        train = {**incumbent["train"], **values}
        trial.set_user_attr("model", model)
        trial.set_user_attr("train", train)
        try:

            def report(epoch: int, row: dict[str, float]) -> None:
                if len(objectives) == 1 and f"val_{objectives[0]}" in row:
                    trial.report(row[f"val_{objectives[0]}"], epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned()

            train_config = TrainConfig.from_dict(train)
            module, history = train_new(model, task, train_config, seed, on_epoch=report)
            # Without early stopping the final model is the last epoch's, whose validation
            # score the loop has just computed: reuse it rather than predict again.
            # (a tree family has no epochs: its library trained it)
            last = history.epochs[-1] if history.epochs and train_config.patience is None else {}
            results, cost, out = [], None, None
            for name in objectives:
                if name in COSTS:
                    cost = (
                        cost
                        or measure_cost(module, task, repeats=30, warmup=5, batch_size=64).to_dict()
                    )
                    results.append(float(cost[COSTS[name]]))
                elif f"val_{name}" in last:
                    results.append(float(last[f"val_{name}"]))
                else:
                    out = predict(module, task.val.x) if out is None else out
                    results.append(METRICS.get(name)(task.val.y, out))
            if any(not math.isfinite(v) for v in results):
                raise ConfigError(f"an objective is not finite: {results}")
        except optuna.TrialPruned:
            raise
        except Exception as err:  # recorded with its reason; the study goes on
            trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}")
            raise
        return results if len(results) > 1 else results[0]

    return objective


def _optimize(
    study,
    config: TuneConfig,
    incumbent: dict[str, Any],
    task: Any,
    seed: int,
    objectives: list[str],
    n_trials: int,
    worker: str | None = None,
) -> None:
    import optuna

    if n_trials <= 0:
        return
    quiet(optuna)
    study.optimize(
        _objective(config, incumbent, task, seed, objectives, worker),
        n_trials=n_trials,
        timeout=config.timeout_s,
        catch=(TidianError, RuntimeError, ValueError, FloatingPointError),
        gc_after_trial=False,
    )


@job_handler("tune.trials")
def trials_job(job: Job) -> int:
    """A trial worker: runs ``config.trials`` trials of the run's study (shared through the
    store's database). ``config``: ``storage``, ``study``, ``tune`` (the stage's config),
    ``incumbent`` ({model, train}), ``objectives``, ``index`` (the worker's number),
    ``dispatch`` (the stage run it belongs to)."""
    optuna = require("optuna", "tune", "the tune stage")
    c = job.config
    index = c["index"]
    name = f"{c['dispatch']}:{index}"
    config = TuneConfig(**c["tune"])
    study = load_study(
        c["storage"],
        c["study"],
        _sampler(config),  # workers draw distinct samples: each trial from its own place
        _pruner(config.pruner),
        heartbeat=True,
    )
    # A worker run again (its first attempt was lost with its node) goes on where that one
    # stopped: the trials it finished count against its share; one it left running, or
    # that the heartbeat failed, is flagged as retried and its parameters queued again.
    states = optuna.trial.TrialState
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(WORKER) == name]
    lost = [
        t
        for t in mine
        if not t.user_attrs.get(RETRIED)
        and (t.state == states.RUNNING or (t.state == states.FAIL and _stale(t)))
    ]
    _requeue(study, lost)
    done = sum(
        t.state.is_finished() and not t.user_attrs.get(RETRIED) and t not in lost for t in mine
    )
    _optimize(
        study,
        config,
        c["incumbent"],
        job.task,
        job.seed,
        c["objectives"],
        c["trials"] - done,
        worker=name,
    )
    return index


def _stale(trial) -> bool:
    """A failed trial that did not fail for its own reasons (no reason recorded): one that
    Optuna's heartbeat failed because its worker stopped beating."""
    return "fail_reason" not in trial.user_attrs


def _requeue(study, trials) -> None:
    """Mark ``trials`` failed and retried (not counted against the budget) and queue their
    parameters again."""
    import optuna

    storage = study._storage
    for trial in trials:
        storage.set_trial_user_attr(trial._trial_id, RETRIED, True)
        if trial.state == optuna.trial.TrialState.RUNNING:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)


def _pace(space: dict[str, Any], ctx: Context) -> tuple[float, str]:
    """Under a time limit, how long one trial is expected to train, and of what: the slowest
    of the model families the space draws from at the pace this run measured for each (the
    architecture stage's CatBoost for tune's CatBoost trials), a family it has not trained at
    the slowest the run has trained (``unmeasured_pace``); a space that keeps the incumbent's
    model, the incumbent's pace."""
    own = ctx.seed_seconds or 0.0
    model = space.get("model")
    if isinstance(model, dict) and isinstance(model.get("choice"), list):
        names = [o.get("name") for o in model["choice"] if isinstance(o, dict)]
    elif isinstance(model, dict) and isinstance(model.get("name"), str):
        names = [model["name"]]
    else:
        return own, "the incumbent"
    unmeasured = unmeasured_pace(own, ctx.family_seconds)
    paces = [ctx.family_seconds.get(n, unmeasured) for n in names if isinstance(n, str)]
    return max(paces, default=own), "the models it searches"


@register_stage("tune", config=TuneConfig, kind="quality")
class Tune(Stage):
    """Hyperparameter and architecture search on Optuna; the top_k go to re-evaluation."""

    requires = (("optuna", "tune"),)
    selects_on_validation = True
    sections = ("tuning",)

    example: ClassVar[dict[str, Any]] = {
        "space": {"lr": {"float": [0.001, 0.05], "log": True}, "batch_size": {"choice": [16, 32]}},
        "trials": 3,
        "sampler": "random",
        "pruner": "none",
        "top_k": 2,
    }

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        optuna = require("optuna", "tune", "the tune stage")
        config = self.config
        name = incumbent.model.get("name", "")
        if "model" not in config.space and library_ignores(name, config.space):
            return ctx.skip(
                f"the incumbent ({name}) is trained by its library, not tidian's training "
                f"loop, and this space searches only training options ({', '.join(config.space)})"
                f" that do not change it; search its hyperparameters instead: space: {{model: "
                f"{{choice: [{{name: {name}, ...}}]}}}}"
            )
        pace, whose = _pace(config.space, ctx)
        if ctx.time_left is not None and ctx.time_left < pace:
            # a trial is one training: one that starts now would end after the search's share
            return ctx.skip(
                f"the time limit leaves the search {ctx.time_left:.0f} s, less than one "
                f"training of {whose} takes ({pace:.0f} s)"
            )
        if ctx.time_left is not None:  # the run's time limit: the search stops in time
            limit = min(config.timeout_s or math.inf, max(ctx.time_left, 1.0))
            config = dataclasses.replace(config, timeout_s=limit)
        objectives = list(config.objectives) or [ctx.metric]
        study = open_study(
            ctx.storage,
            ctx.study_name,
            _directions(objectives),
            _sampler(config),
            _pruner(config.pruner),
            feature="the tune stage",
        )
        # Trials run only while this stage runs: a RUNNING trial is one a killed run left.
        # It is marked failed, flagged as retried (so it does not count against the budget)
        # and its parameters are queued again.
        _requeue(study, study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
        task, seed = ctx.task, ctx.seeds[0]
        # The remaining budget, shared out: every trial a worker starts counts (failures too),
        # so together they run exactly the budget.
        remaining = config.trials - _spent(study)
        start = {"model": dict(incumbent.model), "train": dict(incumbent.train)}
        workers = min(ctx.executor.workers if ctx.executor else 1, max(remaining, 1))
        # Trials run as jobs wherever the run's jobs run (a cluster's nodes too), sharing the
        # study through the store; only a study kept in memory (no store) runs here.
        if ctx.executor is not None and ctx.storage is not None and remaining > 0:
            shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
            spec = {
                "storage": ctx.storage,
                "study": study.study_name,
                "tune": dataclasses.asdict(config),
                "incumbent": start,
                "objectives": objectives,
                "dispatch": uuid.uuid4().hex[:8],
            }
            ctx.executor.gather(
                [
                    Job(
                        "tune.trials",
                        {**spec, "index": i, "trials": share},
                        task,
                        seed,
                        key=i,
                        resources=ctx.resources,
                    )
                    for i, share in enumerate(shares)
                ]
            )
        else:
            _optimize(study, config, start, task, seed, objectives, remaining)
        return self._proposals(study, objectives, ctx)

    def _proposals(self, study, objectives: list[str], ctx: Context) -> list[Proposal]:
        import optuna

        complete = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE
        ]
        if not complete:
            raise ConfigError(
                "tune: no trial finished (all failed or were pruned); check the "
                "space and the training settings."
            )
        if len(objectives) == 1:
            reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
            ranked = sorted(complete, key=lambda t: t.value, reverse=reverse)
        else:
            # The Pareto front, less trials whose measured costs break the recipe's limits.
            limits = {
                i: ctx.constraints.get(LIMITS.get(name, "")) for i, name in enumerate(objectives)
            }
            ranked = [
                t
                for t in sorted(study.best_trials, key=lambda t: t.number)
                if all(bound is None or t.values[i] <= bound for i, bound in limits.items())
            ]
            if not ranked:
                raise ConfigError(
                    f"tune: no trial on the Pareto front meets the constraints "
                    f"{ctx.constraints}; relax them or widen the space."
                )
        place = places(study.get_trials(deepcopy=False))
        notes = {
            "study": study.study_name,
            "trials": len(place),
            "retried": len(study.trials) - len(place),
            "complete": len(complete),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
            "objectives": objectives,
        }
        if len(objectives) > 1:
            notes["pareto_trials"] = sorted(place[t.number] for t in study.best_trials)
        if len(objectives) == 1 and len(complete) >= 2:
            try:
                notes["importances"] = dict(optuna.importance.get_param_importances(study))
            except (RuntimeError, ValueError) as err:  # e.g. a single distinct value
                notes["importances_error"] = str(err)
        ctx.notes.update(notes)
        proposals, seen = [], set()
        for t in ranked:
            key = repr((t.user_attrs["model"], sorted(t.user_attrs["train"].items())))
            if key in seen:
                continue
            seen.add(key)
            changes = dict(t.params)
            proposals.append(
                Proposal(
                    f"trial {place[t.number]}",
                    t.user_attrs["model"],
                    t.user_attrs["train"],
                    changes=changes,
                )
            )
            if len(proposals) == self.config.top_k:
                break
        return proposals
