"""The upgrade pipeline: baseline, then each stage's candidates, gated, all in the ledger.

For every candidate: train it on the run's seeds (through the executor) — or, for a
compression stage, transform the incumbent's model of each seed — record each seed as it
finishes, save every seed's model, measure the cost on the deployment runtime, then gate the
stage's candidates against the incumbent on the test split. Among accepted candidates of a
quality stage the one with the best *validation* mean becomes the incumbent (selection on
validation, claims on test); for a cost stage, the fastest one that is non-inferior and
actually faster or smaller on the deployment runtime.

Resume re-plays the recipe: stages are deterministic, so each proposal maps to the same
ledger row; finished candidates and finished seeds are read back, not redone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tidian.compression.apply import step_modules
from tidian.environment import environment
from tidian.evaluation.cost import deployed_runner, deployment_cost, interleaved_latency
from tidian.evaluation.evaluate import own_executor
from tidian.evaluation.gate import gate, pareto_front
from tidian.evaluation.stats import paired_compare, summarize
from tidian.exceptions import ConfigError, DataError, require, stopping_on_signals
from tidian.executors import Executor, Job
from tidian.metrics import (
    DEFAULT_METRICS,
    check_metrics,
    default_amount,
    greater_is_better,
    quality_amount,
)
from tidian.metrics import bounds as metric_bounds
from tidian.models.io import candidate_folder, seed_folder
from tidian.recipe import (
    CONFIRM_STAGE,
    DEFAULT_RECIPE,
    Recipe,
    duration_text,
    load_recipe,
    parse_duration,
    stored_recipe,
)
from tidian.stages import STAGES, Context, Proposal, Stage
from tidian.stages.base import unmeasured_pace
from tidian.stages.study import storage as optuna_storage
from tidian.store import STALE_AFTER, Store, stale
from tidian.tasks.task import require_scorable
from tidian.training.augment import check_policy
from tidian.training.build import seeded_model
from tidian.training.config import TrainConfig

Events = Callable[[str, dict[str, Any]], None]


@dataclass
class RunResult:
    """What a run produced, read back from the ledger."""

    run_id: str
    status: str
    incumbent: dict[str, Any] | None
    baseline: dict[str, Any] | None
    candidates: list[dict[str, Any]]
    pareto: list[int]
    store: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    # the headline: the final path and the baseline on fresh seeds, scored on the holdout
    # (None until the confirmation ran; {"skipped": why} when there was nothing to confirm)
    confirmation: dict[str, Any] | None = None
    confirmations: list[dict[str, Any]] = field(default_factory=list)  # its re-runs' rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "incumbent": self.incumbent["id"] if self.incumbent else None,
            "confirmation": self.confirmation,
            "pareto": self.pareto,
            "stages": [
                {
                    k: st[k]
                    for k in (
                        "position",
                        "name",
                        "status",
                        "incumbent_before",
                        "incumbent_after",
                        "report",
                    )
                }
                for st in self.stages
            ],
            "candidates": [candidate_summary(c) for c in self.candidates],
            "confirmations": [candidate_summary(c) for c in self.confirmations],
        }


def candidate_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The stable JSON shape of a candidate (``tidian show --json``)."""
    quality = row.get("quality") or {}
    cost = row.get("cost") or {}
    return {
        "id": row["id"],
        "parent": row["parent_id"],
        "stage": row["stage"],
        "label": row["label"],
        "model": row["model"],
        "changes": row["changes"],
        "status": row["status"],
        "decision": row["decision"],
        "reason": row["reason"],
        "quality": {
            k: quality.get(k)
            for k in ("metric", "mean", "ci_low", "ci_high", "per_seed", "val_mean")
        },
        "cost": {
            "runtime": cost.get("runtime"),
            "params": cost.get("params"),
            "nonzero_params": cost.get("nonzero_params"),
            "bytes": cost.get("size_bytes"),
            "dense_bytes": cost.get("dense_bytes"),
            "gzip_bytes": cost.get("gzip_bytes"),
            "latency_ms": cost.get("latency_ms"),
            "latency_p95_ms": cost.get("latency_p95_ms"),
            "throughput": cost.get("throughput"),
            "macs": cost.get("macs"),
        },
        "gate": row.get("gate"),
    }


class _Run:
    """One execution (or resumption) of a recipe against a store."""

    def __init__(
        self,
        recipe: Recipe,
        store: Store,
        run_id: str,
        executor: Executor,
        events: Events | None,
        task: Any,
        holdout: Any = None,
        no_holdout: str | None = None,
        limit: float | None = None,
        started: float = 0.0,
    ) -> None:
        self.recipe, self.store, self.run_id, self.task = recipe, store, run_id, task
        # the holdout's rows: read by the confirmation alone (never part of a stage's task)
        self.holdout, self.no_holdout = holdout, no_holdout
        self.confirm_split = "holdout" if holdout is not None else "test"  # what it scores on
        self.proposals: dict[int, tuple[Proposal, int | None]] = {}  # id -> (proposal, parent)
        self.executor = executor
        self.emit = events or (lambda kind, data: None)
        self.metric = recipe.evaluate.metric or self.task.metric
        self.metrics = list(dict.fromkeys([self.metric, *DEFAULT_METRICS[self.task.target_kind]]))
        # the metrics a gate judges, whose test-row pseudo-values every seed keeps (none when
        # the recipe says its test rows are all it claims about: evaluate.test_rows: fixed)
        self.row_metrics = (
            list(
                dict.fromkeys(
                    [self.metric]
                    + [
                        m
                        for name, config in recipe.stage_entries()
                        if (m := STAGES.entry(name).obj(config).gate_metric()) is not None
                    ]
                )
            )
            if recipe.evaluate.test_rows == "sample"
            else []
        )
        self.greater = greater_is_better(self.metric)
        self.seeds = recipe.units()  # seeds, or cross-validation units (evaluation/cv.py)
        self.cv = recipe.cv()
        self.correction = self.cv.correction(task) if self.cv else 0.0
        self._unit_tasks: dict[int, Any] = {}
        self.directory = store.run(run_id)["directory"]  # a folder, or a URL (store.artifacts)
        # the time limit (budget.time, --time-limit): seconds and the clock time it ends
        self.limit = limit
        self.deadline = None if limit is None else started + limit
        self.reserve = 0.0  # seconds kept for the confirmation (re-estimated at each stage)
        self.cut: list[str] = []  # the last evaluate()'s proposals the limit left untrained

    def task_for(self, seed: int) -> Any:
        """The task seed ``seed`` trains and is scored on: the run's task, or with folds its
        cross-validation unit (made once per unit)."""
        if self.cv is None:
            return self.task
        if seed not in self._unit_tasks:
            self._unit_tasks[seed] = self.cv.task(self.task, seed)
        return self._unit_tasks[seed]

    # -- one stage's candidates ------------------------------------------------------------------
    def evaluate(
        self,
        position: int,
        stage: str,
        proposals: list[Proposal],
        parent: int | None,
        *,
        parents: list[int | None] | None = None,
        seeds: list[int] | None = None,
        task: Any = None,
        origins: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Train every missing seed of every proposal (all at once, so ``--jobs`` workers stay
        busy across candidates), then measure each finished candidate. Returns the rows.
        The confirmation gives each proposal its own parent, its fresh seeds, its task, and
        the stage position it came from (``origins``: whose resources its jobs need).

        Under a time limit a stage's proposals go in waves — whole candidates, enough jobs to
        keep every worker busy — and a wave starts only while the time left (after the
        confirmation's, re-estimated for every candidate that may become the final) is at
        least what the wave is expected to take: what the wave before it took, and its jobs
        of models trained anew at their family's pace in this run (a family not trained yet:
        ``unmeasured_pace``), over the workers. The rows of the waves that
        ran come back (the first proposals'), and ``self.cut`` names the others (never a
        candidate with some of its seeds: every kept candidate stays paired)."""
        seeds = self.seeds if seeds is None else seeds
        parents = [parent] * len(proposals) if parents is None else parents
        origins = [position] * len(proposals) if origins is None else origins
        self.cut = []
        if self.deadline is None or task is not None or position == 0:
            return self._evaluate(position, stage, proposals, parents, seeds, task, origins)
        rows: list[dict[str, Any]] = []
        start, last = 0, None
        incumbent = self.store.get_candidate(parent) if parent is not None else None
        # a seed of a model trained anew is expected to take as long as one of the slowest
        # this run trained of its family (tune's CatBoost trials after the architecture
        # stage's CatBoost); a family the run has not trained, as long as the slowest family
        # it has (one a limit cut is a slow one: suggest.ORDER puts those last), and never
        # less than the incumbent; a wave, at least as long as the one before it took
        paces = self._family_seconds()
        unmeasured = unmeasured_pace(
            self._seed_seconds(incumbent["id"]) if incumbent else 0.0, paces
        )
        while start < len(proposals):
            # the confirmation of whichever may become the final: the incumbent or a
            # candidate of this stage; a wave is expected to take as long as the one before
            if incumbent is not None:
                self.reserve = max(self._confirmation_estimate(r) for r in [incumbent, *rows])
            stop, jobs = start, 0
            while stop < len(proposals) and (jobs < self.executor.workers or stop == start):
                jobs += len(seeds)
                stop += 1
            # changes of trained weights (int8, pruning…) have no pace to go by
            wave = [
                paces.get(p.model.get("name"), unmeasured) if p.transform is None else 0.0
                for p in proposals[start:stop]
            ]
            expected = max(
                last or 0.0,
                max(wave),  # one job cannot be shared out
                sum(wave) * len(seeds) / self.executor.workers,
            )
            if self._time_left() <= expected:
                self.cut = [p.label for p in proposals[start:]]
                break
            began = _clock()
            rows += self._evaluate(
                position,
                stage,
                proposals[start:stop],
                parents[start:stop],
                seeds,
                task,
                origins[start:stop],
            )
            start, last = stop, _clock() - began
        return rows

    def _evaluate(
        self,
        position: int,
        stage: str,
        proposals: list[Proposal],
        parents: list[int | None],
        seeds: list[int],
        task: Any,
        origins: list[int],
    ) -> list[dict[str, Any]]:
        """:meth:`evaluate` for one batch of proposals, trained together."""
        rows = [
            self.store.candidate(
                self.run_id,
                position,
                stage,
                p.label,
                above,
                p.model,
                p.train,
                p.changes,
                p.transform,
            )
            for p, above in zip(proposals, parents)
        ]
        for proposal, row, above in zip(proposals, rows, parents):
            self.proposals[row["id"]] = (proposal, above)
        jobs, done_before = [], 0
        for proposal, row, above, origin in zip(proposals, rows, parents, origins):
            if row["status"] == "done":
                self.emit("candidate_cached", {"candidate": row})
                continue
            done = self.store.seed_results(row["id"])
            done_before += len(done)
            jobs += [
                self._job(proposal, row, above, seed, origin, task)
                for seed in seeds
                if seed not in done
            ]
        if jobs or done_before:
            self.emit("seeds_started", {"total": len(jobs) + done_before, "done": done_before})
        # Each worker writes its seed's model (weights first, then the row that says the seed
        # is done: a crash between the two leaves a folder that the resumed run overwrites).
        for job, result in self.executor.run(jobs):
            history = result.history.to_dict()
            if result.info:
                history["transform"] = result.info
            history["worker"] = result.worker  # where the seed ran (host, node, attempt)
            self.store.add_seed_result(
                job.key["id"], result.seed, result.scores, history, result.seconds, result.rows
            )
            self.emit(
                "seed_done",
                {
                    "candidate": job.key,
                    "seed": result.seed,
                    "metric": self.metric,
                    "scores": result.scores,
                    "seconds": result.seconds,
                },
            )
        for i, row in enumerate(rows):
            if row["status"] != "done":
                rows[i] = self._finish(row["id"], seeds, confirming=task is not None)
        return rows

    def _resources(self, position: int) -> dict[str, Any] | None:
        """What one job of the stage at ``position`` needs (0: the baseline, the recipe's)."""
        if position == 0:
            return (
                self.recipe.resources.model_dump(exclude_none=True)
                if self.recipe.resources
                else None
            )
        return self.recipe.stage_resources(position - 1)

    def _job(
        self,
        proposal: Proposal,
        row: dict[str, Any],
        parent: int | None,
        seed: int,
        position: int,
        task: Any = None,
    ) -> Job:
        """Seed ``seed`` of candidate ``row``: trained from scratch, or made from the parent's
        model of the same seed by the proposal's transform. The worker writes its model;
        ``task``: what it is trained and scored on (default: the seed's task)."""
        config: dict[str, Any] = {
            "train": TrainConfig.from_dict(proposal.train).to_dict(),
            "metrics": list(self.metrics),
            "metadata": {"run": self.run_id, "candidate": row["id"], "seed": seed},
            # every seed is scored on the same test rows, but a cross-validation unit on its own
            "rows": self.row_metrics if self.cv is None or task is not None else [],
        }
        if proposal.transform is not None:
            config["metadata"]["transform"] = proposal.transform
            config.update(parent=str(self._seed_dir(parent, seed)), steps=proposal.transform)
            handler, imports = "transform", step_modules(proposal.transform)
        else:
            handler, imports, config["model"] = "train", (), dict(proposal.model)
        out = str(self._seed_dir(row["id"], seed))
        return Job(
            handler,
            config,
            self.task_for(seed) if task is None else task,
            seed,
            out=out,
            key=row,
            imports=imports,
            resources=self._resources(position),
            # a model trained from scratch with train.distributed: that many processes
            processes=TrainConfig.from_dict(proposal.train).processes if handler == "train" else 1,
        )

    def _seed_dir(self, cid: int, seed: int) -> str | Path:
        """Every seed's model is kept: compression stages transform each seed's weights."""
        return seed_folder(self._candidate_dir(cid), seed)

    def _candidate_dir(self, cid: int) -> str | Path:
        return candidate_folder(self.directory, cid)

    def _finish(self, cid: int, seeds: list[int], confirming: bool = False) -> dict[str, Any]:
        """Summarise a candidate's seeds and measure its cost; mark it done (one transaction).
        The artifact is the first seed's model (the others sit beside it)."""
        quality = self._quality(self.store.seed_results(cid), seeds, confirming)
        artifact = self._seed_dir(cid, seeds[0])
        cost = deployment_cost(artifact, self.task, self.recipe.deploy)
        self.store.update_candidate(
            cid, status="done", quality=quality, cost=cost, artifact=str(artifact)
        )
        row = self.store.get_candidate(cid)
        self.emit("candidate_done", {"candidate": row})
        return row

    def _quality(
        self, results: dict[int, dict[str, Any]], seeds: list[int], confirming: bool = False
    ) -> dict[str, Any]:
        """The per-split summaries of a candidate's seeds; a confirmation's seeds are plain
        seeds on the holdout (no cross-validation correction)."""
        conf, ci = self.recipe.evaluate.confidence, self.recipe.evaluate.ci
        correction = 0.0 if confirming else self.correction
        summary = {}
        for split in ("val", "test"):
            if all(split in results[s]["scores"] for s in seeds):
                summary[split] = {
                    m: summarize(
                        [results[s]["scores"][split][m] for s in seeds],
                        conf,
                        ci,
                        correction,
                        metric_bounds(m),
                    ).to_dict()
                    for m in self.metrics
                }
        test = summary["test"][self.metric]
        val = summary.get("val", {}).get(self.metric)
        return {
            "metric": self.metric,
            "mean": test["mean"],
            "ci_low": test["low"],
            "ci_high": test["high"],
            "per_seed": test["values"],
            "val_mean": val["mean"] if val else None,
            "summary": summary,
            "units": list(seeds),
            "folds": self.cv.folds if self.cv and not confirming else None,
            "correction": correction,
            "scored_on": self.confirm_split if confirming else "test",
        }

    # -- the whole run ---------------------------------------------------------------------------
    def execute(self) -> None:
        base = Proposal(
            "baseline", dict(self.recipe.model), TrainConfig.from_dict(self.recipe.train).to_dict()
        )
        self.store.stage(self.run_id, 0, "baseline", {}, None)
        self.emit("stage_started", {"position": 0, "name": "baseline", "candidates": 1})
        (incumbent,) = self.evaluate(0, "baseline", [base], None)
        self.store.update_candidate(
            incumbent["id"], decision="baseline", reason="the recipe's baseline"
        )
        self.store.finish_stage(self.run_id, 0, incumbent["id"])
        self.store.update_run(self.run_id, incumbent_id=incumbent["id"])
        incumbent = self.store.get_candidate(incumbent["id"])
        self.emit(
            "stage_done",
            {"position": 0, "name": "baseline", "incumbent": incumbent, "candidates": [incumbent]},
        )
        proposal = base
        for position, (name, config) in enumerate(self.recipe.stage_entries(), start=1):
            entry = STAGES.entry(name)
            stage = entry.obj(config)
            history = tuple(
                {
                    "id": c["id"],
                    "label": c["label"],
                    "stage": c["stage"],
                    "mean": (c["quality"] or {}).get("mean"),
                    "val_mean": (c["quality"] or {}).get("val_mean"),
                    "model": c["model"],
                    "folder": str(self._candidate_dir(c["id"])),
                }
                for c in self.store.candidates(self.run_id)
                if c["status"] == "done" and c["stage"] != CONFIRM_STAGE
            )
            left = self._stage_time(incumbent)  # None: no time limit
            ctx = Context(
                # with folds, stages that search on one split (tune, compress) use unit 0's
                self.task_for(self.seeds[0]),
                self.metric,
                tuple(self.seeds),
                history,
                storage=self.store.url,
                study_name=f"tidian-{self.run_id}-stage{position}-{name}",
                executor=self.executor,
                constraints=self.recipe.constraints.model_dump(exclude_none=True)
                if self.recipe.constraints
                else {},
                artifacts={s: str(self._seed_dir(incumbent["id"], s)) for s in self.seeds},
                baseline_train=base.train,
                resources=self._resources(position),
                progress=lambda what, done, total, at=position: self.emit(
                    "stage_progress",
                    {"position": at, "what": what, "done": done, "total": total},
                ),
                incumbent=next((h for h in history if h["id"] == incumbent["id"]), None),
                # a search inside the stage (tune's trials) may use half of what is left: the
                # other half trains its proposals on the run's seeds
                time_left=None if left is None else max(left, 0.0) / 2,
                seed_seconds=None if left is None else self._seed_seconds(incumbent["id"]),
                family_seconds={} if left is None else self._family_seconds(),
            )
            if left is not None and left <= 0:
                ctx.notes["out_of_time"] = True
                proposals = ctx.skip(self._out_of_time())
            else:
                proposals = stage.run(proposal, ctx)
            if len({p.label for p in proposals}) != len(proposals):
                raise ConfigError(
                    f"stages[{position - 1}].{name}: two candidates are the same; "
                    "remove the duplicate."
                )
            self.store.stage(self.run_id, position, name, _plain(config), incumbent["id"])
            self.emit(
                "stage_started", {"position": position, "name": name, "candidates": len(proposals)}
            )
            rows = self.evaluate(position, name, proposals, incumbent["id"])
            if self.cut:
                ctx.notes["out_of_time"] = True
                ctx.notes["cut"] = {"candidates": self.cut, "why": self._out_of_time()}
                if not rows:
                    ctx.skip(f"{self._out_of_time()}; no candidate trained")
            winner = (
                self._decide(
                    stage.gate_kind() or entry.meta.get("kind", "quality"),
                    incumbent,
                    rows,
                    stage.margin(self.metric),
                    stage.gate_metric(),
                    choose=not stage.fits_on_validation,
                )
                if rows
                else None  # skipped (ctx.notes says why)
            )
            if winner is not None:
                incumbent = winner
                proposal = next(p for p, r in zip(proposals, rows) if r["id"] == winner["id"])
            self.store.finish_stage(self.run_id, position, incumbent["id"], ctx.notes)
            self.store.update_run(self.run_id, incumbent_id=incumbent["id"])
            self.emit(
                "stage_done",
                {
                    "position": position,
                    "name": name,
                    "incumbent": incumbent,
                    "candidates": [self.store.get_candidate(r["id"]) for r in rows],
                    "skipped": ctx.notes.get("skipped"),
                    "cut": (ctx.notes.get("cut") or {}).get("candidates"),
                },
            )
        self.store.update_run(self.run_id, pareto=self._pareto())
        self.confirm(self.store.get_candidate(incumbent["id"]), len(self.recipe.stages) + 1)
        self.store.update_run(self.run_id, status="finished")

    # -- the time limit ---------------------------------------------------------------------------
    def _stage_time(self, incumbent: dict[str, Any]) -> float | None:
        """Seconds a stage may use (None: no limit): to the deadline, less what the
        confirmation of ``incumbent`` would take (kept in ``self.reserve`` for the stage)."""
        if self.deadline is None:
            return None
        self.reserve = self._confirmation_estimate(incumbent)
        return self._time_left()

    def _seed_seconds(self, cid: int) -> float:
        """Candidate ``cid``'s mean measured seconds a seed (0 before any seed finished)."""
        done = self.store.seed_results(cid).values()
        return sum(r["seconds"] for r in done) / max(len(done), 1)

    def _family_seconds(self) -> dict[str, float]:
        """For each model family this run has trained anew (a model's name: ``catboost``,
        ``mlp``), the slowest of its candidates' mean seconds a seed: the pace a new model of
        that family is expected to train at (a tuned one may differ; an unmeasured family:
        ``unmeasured_pace``). Changes of trained weights (a transform) are not
        trainings of their family and are left out."""
        paces: dict[str, float] = {}
        for c in self.store.candidates(self.run_id):
            name = (c.get("model") or {}).get("name")
            if c["status"] == "done" and name and not c.get("transform"):
                paces[name] = max(paces.get(name, 0.0), self._seed_seconds(c["id"]))
        return paces

    def _time_left(self) -> float:
        return self.deadline - _clock() - self.reserve if self.deadline is not None else math.inf

    def _out_of_time(self) -> str:
        return (
            f"the time limit ({duration_text(self.limit or 0)}) is reached, with "
            f"{duration_text(self.reserve)} kept for the confirmation"
        )

    def _confirmation_estimate(self, final: dict[str, Any]) -> float:
        """How long the confirmation of ``final`` would take: every model it re-runs (the
        baseline, the final and what its jobs read; with no change kept yet, the baseline
        twice, for the candidate a later stage may keep) × the fresh seeds × the measured
        mean seconds of a seed of each, over the workers, plus a few seconds a candidate for
        its cost measurement."""
        seeds = len(self.recipe.confirm_seeds())
        if not seeds:
            return 0.0
        base = next(c for c in self.store.candidates(self.run_id) if c["stage"] == "baseline")
        plan = (
            [base["id"], base["id"]]
            if final["id"] == base["id"]
            else self._confirmation_plan(base["id"], final["id"])[0]
        )
        per_seed = sum(self._seed_seconds(cid) for cid in plan)
        workers = max(1, min(self.executor.workers, seeds))
        return per_seed * -(-seeds // workers) + COST_SECONDS * len(plan)

    # -- the confirmation: the headline ---------------------------------------------------------
    def _confirmation_plan(self, base: int, final: int) -> tuple[list[int], dict[int, list[int]]]:
        """What the confirmation re-runs, in order: the baseline, then the final and the
        models its jobs read, each after those it reads (a candidate trained anew on the path
        holds every change before it, so those before it need no copy); and what each reads."""
        folders = {str(self._candidate_dir(c)): c for c in self.proposals}
        needs: dict[int, list[int]] = {}
        needed: list[int] = []

        def visit(cid: int) -> None:
            if cid not in needed:
                needs[cid] = self._needs(cid, folders)
                for need in needs[cid]:
                    visit(need)
                needed.append(cid)

        visit(base)
        visit(final)
        return needed, needs

    def _needs(self, cid: int, folders: dict[str, int]) -> list[int]:
        """The candidates whose models candidate ``cid``'s jobs read: its parent when it is
        made from the parent's weights, and those named by folder in its transform (an
        ensemble's members, an ensemble teacher); ``folders``: candidate folder -> id."""
        proposal, parent = self.proposals[cid]
        if proposal.transform is None:
            return []
        named = [folders[text] for text in _strings(proposal.transform) if text in folders]
        return list(dict.fromkeys([*([parent] if parent is not None else []), *named]))

    def confirm(self, final: dict[str, Any], position: int) -> None:
        """Re-run the baseline and the final model's path (from the last candidate on it that
        was trained anew, every change after it, and the models its transforms read) on fresh
        seeds that no stage used, trained on the task's
        training rows and scored on the holdout (the test split when the task has none);
        gate the final against the baseline, paired by seed, and record the result on the
        run: its headline. Ledger rows ``#<id> <label>`` at ``position``, stage ``confirm``:
        a resumed run keeps their finished seeds."""
        seeds = self.recipe.confirm_seeds()
        ledger = self.store.candidates(self.run_id)
        base = next(c for c in ledger if c["stage"] == "baseline")
        if not seeds or final["id"] == base["id"]:
            why = (
                "confirm.seeds is 0"
                if not seeds
                else "no stage kept a change"
                if self.recipe.stages
                else "the recipe has no stages"
            )
            self.store.update_run(self.run_id, confirmation={"skipped": why})
            return
        path = [final["id"]]
        while path[-1] != base["id"]:
            path.append(self.proposals[path[-1]][1])
        needed, needs = self._confirmation_plan(base["id"], final["id"])
        task = self.task if self.holdout is None else self.task.replace(test=self.holdout)
        copies: dict[int, int] = {}  # candidate id -> its confirmation copy's id
        positions = {c["id"]: c["stage_position"] for c in ledger}
        pending = list(needed)
        self.emit(
            "stage_started",
            {"position": position, "name": CONFIRM_STAGE, "candidates": len(needed)},
        )
        while pending:  # in waves: a candidate whose inputs are confirmed, with its peers
            wave = [c for c in pending if all(n in copies for n in needs[c])]
            proposals = [self._confirming(c, copies) for c in wave]
            parents = [copies.get(self.proposals[c][1]) for c in wave]
            rows = self.evaluate(
                position,
                CONFIRM_STAGE,
                proposals,
                None,
                parents=parents,
                seeds=seeds,
                task=task,
                origins=[positions[c] for c in wave],
            )
            for cid, row in zip(wave, rows):
                copies[cid] = row["id"]
                self.store.update_candidate(
                    row["id"], decision="confirmation", reason=f"#{cid} on fresh seeds"
                )
            pending = [c for c in pending if c not in copies]
        tests = {(c["gate"] or {}).get("test") for c in ledger if c["id"] in path[:-1]}
        headline = self._headline(base, final, copies, seeds, "superiority" in tests)
        headline["path"] = list(reversed(path))
        self.store.update_run(self.run_id, confirmation=headline)
        self.emit("confirmed", {"confirmation": headline})

    def _confirming(self, cid: int, copies: dict[int, int]) -> Proposal:
        """Candidate ``cid``'s proposal for the confirmation: its transform reading the
        confirmation copies of the models it named."""
        proposal = self.proposals[cid][0]
        label = f"#{cid} {proposal.label}"[:400]
        if proposal.transform is None:
            return dataclasses.replace(proposal, label=label)
        folders = {
            str(self._candidate_dir(c)): str(self._candidate_dir(k)) for c, k in copies.items()
        }
        return dataclasses.replace(
            proposal, label=label, transform=_replace_strings(proposal.transform, folders)
        )

    def _headline(
        self,
        base: dict[str, Any],
        final: dict[str, Any],
        copies: dict[int, int],
        seeds: list[int],
        lifted: bool,
    ) -> dict[str, Any]:
        """The confirmation's record: the final's copy gated against the baseline's on the
        fresh seeds — superiority when a quality stage's change is on the path (``lifted``),
        else non-inferiority within the margin — beside the selection-time gain."""
        spec = self.recipe.evaluate
        test = "superiority" if lifted else "non_inferiority"
        b, f = (self.store.get_candidate(copies[c]) for c in (base["id"], final["id"]))
        reference = _per_seed_mean(b, self.metric)
        decision = gate(
            _per_seed(b, self.metric),
            {"final": _per_seed(f, self.metric)},
            incumbent_rows=self._row_table(b, self.metric),
            rows={"final": self._row_table(f, self.metric)},
            metric=self.metric,
            greater_is_better=self.greater,
            test=test,
            confidence=spec.confidence,
            min_effect=self._min_effect(reference),
            margin=self._margin(self.metric, reference),
        )["final"]
        selection = paired_compare(
            _per_seed(base, self.metric),
            _per_seed(final, self.metric),
            metric=self.metric,
            greater_is_better=self.greater,
            confidence=spec.confidence,
            correction=self.correction,
            rows=(self._row_table(base, self.metric), self._row_table(final, self.metric)),
        ).improvement
        scored = self.holdout if self.holdout is not None else self.task.test
        where = f"{len(seeds)} fresh seeds and {len(scored)} " + (
            "unseen rows (the holdout)"
            if self.holdout is not None
            else f"test rows (no holdout: {self.no_holdout})"
        )
        gain = f"{decision.gain:+.4g} [{decision.low:+.4g}, {decision.high:+.4g}] {self.metric}"
        if decision.accepted:
            verdict = (
                f"the lift held up on {where}: gain {gain}"
                if test == "superiority"
                else f"the final model kept the baseline's quality on {where}: change {gain}"
            )
        else:
            verdict = (
                f"the lift did not hold up on {where}: gain {gain}, p={decision.p_value:.3g}"
                if test == "superiority"
                else f"the final model may lose more than the margin on {where}: change {gain}"
            )
        return {
            "held": decision.accepted,
            "summary": verdict,
            "test": test,
            "seeds": seeds,
            "scored_on": self.confirm_split,
            "rows": len(scored),
            "no_holdout": self.no_holdout,
            "baseline": copies[base["id"]],
            "final": copies[final["id"]],
            "of": {"baseline": base["id"], "final": final["id"]},
            "copies": {str(k): v for k, v in copies.items()},
            "gate": decision.to_dict(),
            "baseline_mean": _per_seed_mean(b, self.metric),
            "final_mean": _per_seed_mean(f, self.metric),
            "selection_gain": {"mean": selection[0], "low": selection[1], "high": selection[2]},
            # how much the selection-time gain overstated the confirmed one
            "optimism": selection[0] - decision.gain,
        }

    def _row_table(self, row: dict[str, Any], metric: str) -> list[list[float]] | None:
        """A candidate's seeds × test-row groups pseudo-values of ``metric``, in its seeds'
        order; None when a seed has none (cross-validation units, runs recorded before they
        were kept): the gate then uses the seeds' variance alone."""
        return self.store.row_table(row["id"], metric, row["quality"].get("units") or self.seeds)

    def _violations(self, row: dict[str, Any]) -> list[str]:
        limits = self.recipe.constraints
        if limits is None:
            return []
        cost, out = row["cost"], []
        for limit, key, unit in (
            ("max_latency_ms", "latency_ms", " ms"),
            ("max_params", "params", ""),
            ("max_bytes", "size_bytes", " B"),
        ):
            bound = getattr(limits, limit)
            if bound is not None and cost[key] > bound:
                out.append(f"{key} {cost[key]:.4g}{unit} > {limit} {bound}")
        return out

    def _margin(self, metric: str, reference: float, margin: float | str | None = None) -> float:
        """The loss a non-inferiority gate allows, in ``metric``'s units (``'1%'`` of
        ``reference``, the incumbent's mean): a stage's tolerance ``margin`` as written (guarded,
        see metrics) or the recipe's ``evaluate.margin`` (default 1 point, else 1%)."""
        written = self.recipe.evaluate.margin if margin is None else margin
        amount = default_amount(metric, 1) if written is None else written
        where = "evaluate.margin" if margin is None else "the stage's tolerance"
        return quality_amount(amount, metric, reference, where, guard=margin is not None)

    def _min_effect(self, reference: float) -> float:
        """The gain a superiority gate requires on the recipe's metric, in its units."""
        spec = self.recipe.evaluate
        return quality_amount(spec.min_effect, self.metric, reference, "evaluate.min_effect")

    def _decide(
        self,
        kind: str,
        incumbent: dict[str, Any],
        rows: list[dict[str, Any]],
        margin: float | str | None = None,
        metric: str | None = None,
        *,
        choose: bool = True,
    ) -> dict[str, Any] | None:
        """Gate a stage's candidates against the incumbent and return the new incumbent (None:
        it stays). A quality stage with validation scores chooses first and gates only its
        choice (``evaluate.select: validation``; ``choose`` False: the stage's candidates were
        fitted on validation); otherwise every candidate is gated on test with Holm's
        correction and the best accepted on validation is chosen."""
        spec = self.recipe.evaluate
        judged = metric or self.metric

        def margin_on(metric: str) -> float:
            return self._margin(metric, _per_seed_mean(incumbent, metric), margin)

        def judge(group: list[dict[str, Any]], on: str, test: str) -> dict[str, Any]:
            return gate(
                _per_seed(incumbent, on),
                {str(r["id"]): _per_seed(r, on) for r in group},
                incumbent_rows=self._row_table(incumbent, on),
                rows={str(r["id"]): self._row_table(r, on) for r in group},
                metric=on,
                greater_is_better=greater_is_better(on),
                test=test,
                confidence=spec.confidence,
                min_effect=self._min_effect(_per_seed_mean(incumbent, on))
                if on == self.metric
                else 0.0,
                margin=margin_on(on),
                correction=self.correction,
            )

        test = "superiority" if kind == "quality" else "non_inferiority"
        choosing = (
            choose
            and kind == "quality"
            and spec.select == "validation"
            and len(rows) > 1
            and all(_validation(r, judged) is not None for r in rows)
        )

        def decide(on: str, test: str) -> dict[str, Any]:
            """Choosing: each candidate alone (only the chosen ones count); else all of them,
            Holm-corrected."""
            if choosing:
                return {k: v for r in rows for k, v in judge([r], on, test).items()}
            return judge(rows, on, test)

        decisions = decide(judged, test)
        # Judged on another metric (calibration error): the recipe's metric must hold too.
        kept = decide(self.metric, "non_inferiority") if judged != self.metric else {}
        sequence = self._chosen(rows, judged) if choosing else []
        ratios: dict[int, float] = {}
        said: dict[int, tuple[bool, str, dict]] = {}  # id -> (accepted, reason, gate record)
        threads = self.recipe.deploy.threads
        # The incumbent is loaded once; each candidate is timed against it side by side.
        reference = (
            deployed_runner(incumbent["artifact"], self.task, threads) if kind == "cost" else None
        )
        for row in rows:
            decision = decisions[str(row["id"])]
            reason, ok, extra = decision.reason, decision.accepted, {}
            guard = kept.get(str(row["id"]))
            if guard is not None:
                extra["kept"] = guard.to_dict()
                detail = guard.reason.split(": ", 1)[-1]
                if ok and not guard.accepted:
                    ok, reason = False, f"rejected: {self.metric} may drop: {detail}"
                else:
                    reason = f"{reason}; {self.metric} {detail}"
            if kind == "cost":
                ratio = ratios[row["id"]] = interleaved_latency(
                    reference, deployed_runner(row["artifact"], self.task, threads), threads=threads
                )
                gains = _cost_gains(incumbent["cost"], row["cost"], ratio)
                extra = {"latency_ratio": ratio}  # candidate / incumbent, timed together
                if not gains:
                    ok = False
                    reason = (
                        f"rejected: not faster or smaller than the incumbent on "
                        f"{row['cost'].get('runtime', 'torch')} "
                        f"({_cost_line(incumbent['cost'])} → {_cost_line(row['cost'])}); "
                        f"{decision.reason.split(': ', 1)[-1]}"
                    )
                else:
                    reason = f"{reason}; {', '.join(gains)}"
            broken = self._violations(row)
            if ok and broken:
                ok, reason = (
                    False,
                    f"rejected: violates constraints ({'; '.join(broken)}); "
                    f"{decision.reason.split(': ', 1)[1]}",
                )
            said[row["id"]] = (ok, reason, {**decision.to_dict(), **extra})
        chosen = None
        if choosing:
            chosen = self._gate_in_sequence(sequence, rows, said, judged)
        elif kind == "quality":
            passed = [row for row in rows if said[row["id"]][0]]
            if passed:
                chosen = max(passed, key=lambda r: _validation(r, judged, fallback=True))
                tie = self._cheaper_equal(chosen, passed, judged)
                if tie:
                    self._say_tie(chosen, tie, said)
                    chosen = tie[0]
        for row in rows:
            ok, reason, record = said[row["id"]]
            self.store.update_candidate(
                row["id"], decision="accepted" if ok else "rejected", reason=reason, gate=record
            )
        if kind == "cost":  # the fastest model that kept its quality, then the smallest
            passed = [row for row in rows if said[row["id"]][0]]
            if not passed:
                return None
            chosen = min(passed, key=lambda r: (ratios[r["id"]], r["cost"]["size_bytes"]))
        return None if chosen is None else self.store.get_candidate(chosen["id"])

    def _chosen(self, rows: list[dict[str, Any]], metric: str) -> list[tuple[dict, Any]]:
        """What a choosing stage gates, in order: the candidate with the best validation mean
        among those within the constraints, then (if any) the cheaper one it cannot be told
        from on validation — each with the tie's numbers (None for the first)."""
        eligible = [r for r in rows if not self._violations(r)]
        if not eligible:
            return []
        best = max(eligible, key=lambda r: _validation(r, metric))
        tie = self._cheaper_equal(best, eligible, metric)
        return [(best, None)] + ([(tie[0], tie)] if tie else [])

    def _gate_in_sequence(
        self,
        sequence: list[tuple[dict, Any]],
        rows: list[dict[str, Any]],
        said: dict[int, tuple[bool, str, dict]],
        metric: str,
    ) -> dict[str, Any] | None:
        """Gate a choosing stage's choice alone at the full level, then the cheaper equal one
        only if the first held (a fixed sequence: the chance of accepting anything that is no
        better stays α); every other candidate is turned down as not chosen. Returns the
        chosen candidate, or None."""
        gated = {r["id"] for r, _ in sequence}
        best = sequence[0][0] if sequence else None
        count = f"chosen on validation from {len(rows)} candidates and gated alone"
        for row in rows:
            _, reason, record = said[row["id"]]
            if row["id"] in gated or self._violations(row):
                continue
            said[row["id"]] = (
                False,
                f"rejected: not chosen: #{best['id']} has the better validation {metric} "
                f"({_validation(best, metric, sign=False):.4g} against "
                f"{_validation(row, metric, sign=False):.4g}); alone on test: {_numbers(reason)}",
                record,
            )
        chosen = None
        for step, (row, tie) in enumerate(sequence):
            ok, reason, record = said[row["id"]]
            if step and chosen is None:  # the first was not shown better: this is not gated
                said[row["id"]] = (
                    False,
                    f"rejected: not gated: as good on validation as #{best['id']}, which was "
                    f"not shown to be better; alone on test: {_numbers(reason)}",
                    record,
                )
                continue
            said[row["id"]] = (ok, f"{reason}; {count}", record)
            if ok:
                if tie is not None:
                    self._say_tie(chosen, tie, said)
                chosen = row
        return chosen

    def _cheaper_equal(
        self, best: dict[str, Any], pool: list[dict[str, Any]], metric: str
    ) -> tuple[dict[str, Any], Any, float, int] | None:
        """Among ``pool``'s candidates whose validation scores cannot be told from ``best``'s
        (the paired interval of their difference holds 0), the cheapest on the deployment
        runtime if it is at least 10% faster timed side by side with ``best``, or smaller and
        not 10% slower: (row, comparison, latency ratio, size); None if none is."""
        spec = self.recipe.evaluate

        def scores(row: dict[str, Any]) -> list[float]:
            val = row["quality"]["summary"].get("val", {}).get(metric)
            return list(val["values"]) if val else _per_seed(row, metric)

        equals = {}
        for row in pool:
            if row["id"] == best["id"]:
                continue
            cmp = paired_compare(
                scores(best),
                scores(row),
                metric=metric,
                greater_is_better=greater_is_better(metric),
                confidence=spec.confidence,
                correction=self.correction,
            )
            if cmp.low <= 0 <= cmp.high:
                equals[row["id"]] = (row, cmp)
        if not equals:
            return None
        threads = self.recipe.deploy.threads
        reference = deployed_runner(best["artifact"], self.task, threads)
        cheaper = []
        for row, cmp in equals.values():
            ratio = interleaved_latency(
                reference, deployed_runner(row["artifact"], self.task, threads), threads=threads
            )
            smaller = row["cost"]["size_bytes"] < best["cost"]["size_bytes"]
            if ratio <= FASTER or (smaller and ratio < 1 / FASTER):
                cheaper.append((row, cmp, ratio, row["cost"]["size_bytes"]))
        return min(cheaper, key=lambda c: (c[2], c[3])) if cheaper else None

    def _say_tie(
        self,
        best: dict[str, Any],
        tie: tuple[dict[str, Any], Any, float, int],
        said: dict[int, tuple[bool, str, dict]],
    ) -> None:
        """Write into both reasons that the cheaper equal candidate was chosen over ``best``."""
        chosen, cmp, ratio, size = tie
        gain = cmp.improvement
        what = ", ".join(
            part
            for part, shown in (
                (f"{1 / ratio:.2f}× faster", ratio <= FASTER),
                (
                    f"{best['cost']['size_bytes'] / size:.2f}× smaller",
                    size < best["cost"]["size_bytes"],
                ),
            )
            if shown
        )
        metric = cmp.metric
        same = (
            f"the same {metric} on validation as #{best['id']} "
            f"({gain[0]:+.4g} [{gain[1]:+.4g}, {gain[2]:+.4g}]) and {what} on "
            f"{chosen['cost'].get('runtime', 'torch')}"
        )
        for row, text in (
            (chosen, f"chosen: {same}"),
            (best, f"not chosen: #{chosen['id']} has {same}"),
        ):
            ok, reason, record = said[row["id"]]
            said[row["id"]] = (ok, f"{reason}; {text}", record)

    def _pareto(self) -> list[int]:
        """Candidates on the front of (quality, latency, parameters) that meet the constraints."""
        sign = -1 if self.greater else 1
        points = {}
        for row in self.store.candidates(self.run_id):
            if (
                row["status"] == "done"
                and row["stage"] != CONFIRM_STAGE
                and not self._violations(row)
            ):
                points[row["id"]] = (
                    sign * row["quality"]["mean"],
                    row["cost"]["latency_ms"],
                    row["cost"]["params"],
                )
        return sorted(pareto_front(points))


# A compressed model counts as faster only when its batch-1 latency is at least 10% below the
# incumbent's, timed against it in alternating blocks (``interleaved_latency``): two medians
# taken minutes apart on a shared machine differ by far more at microsecond scale (7.4 against
# 10.4 µs for one model, measured), so the costs recorded per candidate cannot decide this.
FASTER = 0.9

# Under a time limit: what a candidate's cost measurement (latency, throughput, size) takes,
# counted per model in the confirmation's estimate; the clock the limit is read on.
COST_SECONDS = 3.0
_clock = time.monotonic


def _cost_gains(before: dict[str, Any], after: dict[str, Any], ratio: float) -> list[str]:
    """What a compressed candidate gained on the deployment runtime (empty: nothing);
    ``ratio``: its latency over the incumbent's, timed together."""
    gains = []
    if ratio <= FASTER:
        gains.append(f"{1 / ratio:.2f}× faster")
    if after["size_bytes"] < before["size_bytes"]:
        gains.append(f"{before['size_bytes'] / after['size_bytes']:.2f}× smaller")
    elif after.get("gzip_bytes") and after["gzip_bytes"] < 0.9 * before.get("gzip_bytes", 0):
        # zeroed weights: the stored file compresses better; the model in memory is the same
        gains.append(
            f"{before['gzip_bytes'] / after['gzip_bytes']:.2f}× smaller gzip'd "
            "(same size in memory)"
        )
    return gains


def _strings(value: Any) -> list[str]:
    """Every string inside nested mappings and lists (a transform's steps)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _replace_strings(value: Any, mapping: dict[str, str]) -> Any:
    """``value`` with every string that is a key of ``mapping`` replaced by its value."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {k: _replace_strings(v, mapping) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_strings(v, mapping) for v in value]
    return value


def _numbers(reason: str) -> str:
    """A gate reason without its verdict: 'gain +0.01 [-0.02, +0.04] accuracy, … p=0.2 vs α'."""
    return reason.split(": ", 1)[-1].split("; ", 1)[-1]


def _validation(
    row: dict[str, Any], metric: str, *, fallback: bool = False, sign: bool = True
) -> float | None:
    """A candidate's validation mean of ``metric``, signed so that larger is better (``sign``);
    None without validation scores, or with ``fallback`` its test mean."""
    val = row["quality"]["summary"].get("val", {}).get(metric, {}).get("mean")
    if val is None and fallback:
        val = _per_seed_mean(row, metric)
    if val is None:
        return None
    return val if not sign or greater_is_better(metric) else -val


def _per_seed(row: dict[str, Any], metric: str) -> list[float]:
    """A candidate's per-seed test scores of ``metric``."""
    quality = row["quality"]
    if metric == quality["metric"]:
        return quality["per_seed"]
    return list(quality["summary"]["test"][metric]["values"])


def _per_seed_mean(row: dict[str, Any], metric: str) -> float:
    values = _per_seed(row, metric)
    return sum(values) / len(values)


def _cost_line(cost: dict[str, Any]) -> str:
    return f"{cost['latency_ms'] * 1000:.1f} µs, {cost['size_bytes']:,} B"


def _plain(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def _needs(recipe: Recipe) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each stage entry's optional packages, ``(stage name, [(module, extra)])``."""
    return [
        (name, STAGES.get(name)(config).requirements()) for name, config in recipe.stage_entries()
    ]


def _check_dependencies(recipe: Recipe) -> None:
    """Optional packages the recipe's stages (and its deployment runtime) need, checked
    before a run starts — not after the baseline has trained."""
    needs = [(m, x, f"the {name} stage") for name, modules in _needs(recipe) for m, x in modules]
    if recipe.deploy.runtime == "onnxruntime":
        needs += [(m, "onnx", "deploy.runtime onnxruntime") for m in ("onnx", "onnxruntime")]
    for module, extra, feature in needs:
        require(module, extra, feature)


def _check_against_task(recipe: Recipe, task: Any) -> None:
    """Settings that only the task can judge (an augmentation for its input kind), checked
    before the ledger gets a row; errors name the recipe place."""

    if recipe.train.get("augment"):
        check_policy(recipe.train["augment"], task.input_kind, task.target_kind, "train.augment")
    metric = recipe.evaluate.metric or task.metric
    for what in ("margin", "min_effect"):  # points on a metric that has none: refused now
        amount = getattr(recipe.evaluate, what)
        if amount is not None:
            quality_amount(amount, metric, 1.0, f"evaluate.{what}")
    stages = [STAGES.entry(name).obj(config) for name, config in recipe.stage_entries()]
    for i, stage in enumerate(stages):
        if stage.selects_on_validation and not len(task.val) and not recipe.evaluate.folds:
            raise ConfigError(
                f"stages[{i}].{stage.name}: chooses on the validation split, and the task has "
                "no validation rows (val_size: 0); give the task val_size above 0."
            )
        amount = stage.margin(metric)
        if amount is not None:
            quality_amount(amount, metric, 1.0, f"stages[{i}].{stage.name}.tolerance", guard=True)
    for i, stage in enumerate(stages):
        try:
            stage.check(task)
        except ConfigError as err:
            raise ConfigError(f"stages[{i}].{stage.name}: {err}") from None
    # Stages reached with a model of the recipe's class are checked against one (untrained):
    # a stage that cannot apply to it fails now, not after the baseline has trained.
    reached = []
    for stage in stages:
        reached.append(stage)
        if not stage.keeps_model_class:
            break
    checked = [s for s in reached if type(s).check_model is not Stage.check_model]
    if checked and isinstance(recipe.model, dict):
        with torch.random.fork_rng():  # the driver's random state is left as it was
            model = seeded_model(recipe.model, task, 0)
        for stage in checked:
            try:
                stage.check_model(model, task)
            except ConfigError as err:
                raise ConfigError(f"stages[{stages.index(stage)}].{stage.name}: {err}") from None


def run(
    recipe: str | Path | dict[str, Any] | Recipe | None = None,
    *,
    store: Store | str | None = None,
    resume: str | None = None,
    jobs: int = 1,
    threads: int | None = None,
    executor: Executor | None = None,
    events: Events | None = None,
    time_limit: float | str | None = None,
    constraints: dict[str, Any] | None = None,
) -> RunResult:
    """Run a recipe (or resume run ``resume``) and return what the ledger holds at the end.

    ``recipe`` may be a YAML path, a mapping or a Recipe; None runs the built-in default.
    On Ctrl-C, SIGTERM or SIGHUP the run is marked ``interrupted``; on an error, ``failed``
    with the message; either way ``resume=RUN_ID`` continues without redoing finished seeds
    or candidates.

    Jobs run on ``executor`` (the caller keeps and closes it); without one, ``jobs=N`` and
    ``threads=T`` are the shorthand for ``LocalExecutor(N, T)``, made and closed here
    (``threads``: torch threads per job; default every core in one process, 1 per worker).

    ``time_limit`` (seconds, or text like ``15m``) sets the recipe's ``budget.time``; on a
    resume it limits that session (without it, the recipe's limit does). ``constraints``
    (``max_bytes``, ``max_latency_ms``, ``max_params``) set those of the recipe's, which keeps
    its others; a resumed run keeps the ones it started with.
    """
    started = _clock()
    ledger = store if isinstance(store, Store) else Store(store)
    if resume is not None:
        if recipe is not None or constraints:
            raise ConfigError(
                "give either a recipe (or constraints) or resume=RUN_ID, not both: a resumed "
                "run uses the recipe it started with."
            )
        row = ledger.run(resume)
        if row["status"] == "finished" and not cut_by_time(ledger, resume):
            raise DataError(f"run {resume!r} already finished; start a new run instead.")
        if row["status"] == "running" and row.get("driver") and stale(row) is None:
            who = row["driver"]
            raise DataError(
                f"run {resume!r} is still running (pid {who.get('pid')} on {who.get('host')}, "
                f"heartbeat {row['heartbeat']:%H:%M:%S} UTC): stop it first; a run whose "
                f"driver died shows as stale in `tidian runs` (on another host after "
                f"{STALE_AFTER:.0f} s without a heartbeat) and can be resumed then."
            )
        parsed = stored_recipe(row["recipe"])
        run_id = resume
        ledger.take_over(run_id)
    else:
        parsed = load_recipe(DEFAULT_RECIPE if recipe is None else recipe)
        run_id = None
        if time_limit is not None:  # recorded with the recipe
            parsed = parsed.model_copy(
                update={"budget": parsed.budget.model_copy(update={"time": time_limit})}
            )
        if constraints:  # recorded with the recipe, checked as the recipe's own
            data = parsed.to_dict()
            parsed = load_recipe(
                {**data, "constraints": {**data.get("constraints", {}), **constraints}}
            )
    limit = (
        parse_duration(time_limit, "time limit")
        if time_limit is not None
        else parsed.budget.seconds()
    )
    # The task and its metric are checked before the ledger gets a row: a recipe whose data
    # cannot load leaves nothing behind.
    task, holdout, no_holdout = parsed.load_tasks()
    check_metrics([parsed.evaluate.metric or task.metric], task.target_kind)
    _check_dependencies(parsed)
    if any(m == "optuna" for _, c in _needs(parsed) for m, _ in c):
        optuna_storage(ledger.url)  # Optuna's tables made now, not after earlier stages' work
    if parsed.cv() is None:
        require_scorable(task)
    if holdout is not None:  # the confirmation's task: trained as the stages', scored on it
        require_scorable(task.replace(test=holdout))
    _check_against_task(parsed, task)
    # SIGTERM and SIGHUP stop the run as Ctrl-C does: marked interrupted, workers ended.
    with stopping_on_signals(), own_executor(executor, jobs, threads) as runner:
        # where the jobs run, checked before the ledger gets a row (a cluster's nodes must
        # reach the ledger and the artifacts, and run this tidian)
        where = runner.prepare(ledger.url, str(ledger.artifacts))
        if run_id is None:
            run_id = ledger.create_run(parsed.to_dict(), {**environment(), "executor": where})
        if events is not None:
            events(
                "run_started",
                {
                    "run_id": run_id,
                    "resumed": resume is not None,
                    "task": task.name,
                    "columns": task.columns_read,
                    "metric": parsed.evaluate.metric or task.metric,
                    "units": len(parsed.units()),
                    "stages": [name for name, _ in parsed.stage_entries()],
                    "workers": where.get("workers"),
                    "holdout": len(holdout) if holdout is not None else None,
                    "no_holdout": no_holdout,
                    "confirm_seeds": len(parsed.confirm_seeds()),
                },
            )
        try:
            with ledger.heartbeat(run_id):
                _Run(
                    parsed,
                    ledger,
                    run_id,
                    runner,
                    events,
                    task,
                    holdout,
                    no_holdout,
                    limit,
                    started,
                ).execute()
        except KeyboardInterrupt:
            ledger.update_run(run_id, status="interrupted")
            raise
        except BaseException as err:
            ledger.update_run(run_id, status="failed", error=f"{type(err).__name__}: {err}")
            raise
    return result(ledger, run_id)


def cut_by_time(store: Store, run_id: str) -> bool:
    """Whether the time limit left some of run ``run_id`` undone (a stage skipped or
    candidates not trained for it): such a finished run can be resumed to do the rest."""
    return any((st.get("report") or {}).get("out_of_time") for st in store.stages(run_id))


def result(store: Store, run_id: str) -> RunResult:
    row = store.run(run_id)
    every = store.candidates(run_id)
    candidates = [c for c in every if c["stage"] != CONFIRM_STAGE]
    by_id = {c["id"]: c for c in candidates}
    baseline = next((c for c in candidates if c["stage"] == "baseline"), None)
    return RunResult(
        run_id,
        row["status"],
        by_id.get(row["incumbent_id"]),
        baseline,
        candidates,
        row["pareto"] or [],
        store.url,
        store.stages(run_id),
        row.get("confirmation"),
        [c for c in every if c["stage"] == CONFIRM_STAGE],
    )


def path_recipe(store: Store, run_id: str) -> dict[str, Any]:
    """The final model of finished run ``run_id`` as a standalone recipe (``tidian recipe of``):
    the run's task, baseline and settings, and an ``apply`` stage for each candidate the
    final model is made of — the last one trained anew, then each transform of the one before
    — gated as its stage gated it. Running it on the same seeds rebuilds the same model per
    seed, without the search. Raises ConfigError for a run that cannot be written so."""
    run = store.run(run_id)
    if run["status"] != "finished":
        raise ConfigError(
            f"run {run_id} is {run['status']}; only a finished run has a final model."
        )
    written = run["recipe"]
    if "select" not in (written.get("evaluate") or {}):
        raise ConfigError(
            f"run {run_id} was recorded before candidates kept their transforms in the ledger; "
            "its final path cannot be read back. Run its recipe again with this tidian."
        )
    rows = {c["id"]: c for c in store.candidates(run_id) if c["stage"] != CONFIRM_STAGE}
    folders = {candidate_folder(run["directory"], cid): cid for cid in rows}
    path = [rows[run["incumbent_id"]]]  # the final, back to the last one trained anew
    while path[-1]["transform"] is not None:
        row = path[-1]
        named = sorted({folders[t] for t in _strings(row["transform"]) if t in folders})
        if named:
            raise ConfigError(
                f"#{row['id']} ({row['label']}) is made from the models of other candidates "
                f"({', '.join(f'#{n}' for n in named)}); a recipe cannot name them yet. "
                f"`tidian export {run_id}` writes the final model itself."
            )
        path.append(rows[row["parent_id"]])
    if path[-1]["stage"] != "baseline":
        path.append(next(r for r in rows.values() if r["stage"] == "baseline"))
    parsed = stored_recipe(written)
    built = [STAGES.entry(name).obj(config) for name, config in parsed.stage_entries()]
    metric = path[-1]["quality"]["metric"]  # the run's (the baseline's summary names it)
    entries = []
    for row in reversed(path[:-1]):  # the baseline is the recipe's own
        judged = row["gate"] or {}
        entry: dict[str, Any] = {
            "label": row["label"],
            "model": row["model"],
            "train": row["train"],
            "changes": row["changes"],
            "gate": judged.get("test", "superiority"),
        }
        if row["transform"] is not None:
            entry["transform"] = row["transform"]
        if judged.get("metric", metric) != metric:
            entry["metric"] = judged["metric"]
        margin = built[row["stage_position"] - 1].margin(metric)
        if margin is not None:
            entry["margin"] = margin
        entries.append({"apply": entry})
    # without the run's time limit: a limit could cut a step and the rebuild would differ
    return {**{k: v for k, v in written.items() if k != "budget"}, "stages": entries}
