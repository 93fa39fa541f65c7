"""The headline: a holdout no stage sees, and the final path re-run on fresh seeds.

A run carves its holdout out of the task before anything trains; stages, tuning trials and
every job of the stages receive a task without those rows. After the last stage the baseline
and the final model's path are re-run on seeds no stage used and scored on the holdout; that
paired gain is the run's headline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import tidian.pipeline as pipeline
from tidian.evaluation.stats import paired_compare
from tidian.exceptions import DataError
from tidian.executors import LocalExecutor
from tidian.recipe import CONFIRM_STAGE, load_recipe
from tidian.stages import Context, Proposal, Stage, register_stage
from tidian.store import Store
from tidian.tasks.task import MIN_HOLDOUT_ROWS

SEEN: list = []  # every task a stage received, in this process


@dataclass(frozen=True)
class RowsSeenConfig:
    lr: float = 0.03


@register_stage("test_rows_seen", config=RowsSeenConfig, kind="quality")
class RowsSeen(Stage):
    """Records the task it is given, and proposes a learning rate."""

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        SEEN.append(ctx.task)
        train = {**incumbent.train, "lr": self.config.lr}
        return [Proposal(f"lr={self.config.lr}", dict(incumbent.model), train)]


class Recording(LocalExecutor):
    """The local executor (in this process) keeping every job it runs."""

    def __init__(self) -> None:
        super().__init__(1)
        self.jobs: list = []

    def run(self, jobs):
        self.jobs += list(jobs)
        yield from super().run(jobs)


RECIPE = {
    "task": "breast_cancer",
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"epochs": 4, "batch_size": 32, "lr": 0.0003},
    "evaluate": {"seeds": 3},
    "stages": [
        {"test_rows_seen": {"lr": 0.03}},
        {
            "tune": {
                "space": {"lr": {"float": [0.001, 0.05], "log": True}},
                "trials": 2,
                "sampler": "random",
                "pruner": "none",
            }
        },
    ],
}


def _candidate(job) -> int | None:
    """The ledger id of a job's candidate (None: a tuning trial, keyed by its number)."""
    return job.key["id"] if isinstance(job.key, dict) else None


def _rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(x)}


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """One run of RECIPE, recorded: (result, store, executor's jobs, holdout rows)."""
    SEEN.clear()
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('confirm') / 'ledger.db'}")
    executor = Recording()
    result = pipeline.run(RECIPE, store=store, executor=executor)
    _, holdout, why = load_recipe(RECIPE).load_tasks()
    assert why is None
    return result, store, executor.jobs, holdout


@pytest.mark.slow  # a whole pipeline run
def test_the_holdout_never_reaches_a_stage_or_a_stage_s_jobs(confirmed):
    result, _, jobs, holdout = confirmed
    held = _rows(holdout.x)
    assert len(held) == len(holdout) == round(0.15 * 569) == result.confirmation["rows"]
    assert SEEN, "the recording stage ran"
    for task in SEEN:
        for split in (task.train, task.val, task.test):
            assert not held & _rows(split.x)
    copies = {c["id"] for c in result.confirmations}
    confirming = [j for j in jobs if _candidate(j) in copies]
    staged = [j for j in jobs if _candidate(j) not in copies]
    # the seeds of the baseline, of the stage's candidate and of tuning's best configuration,
    # and the job that ran tuning's trials
    assert len(staged) == 3 + 3 + 3 + 1 and sum(_candidate(j) is None for j in staged) == 1
    for job in staged:
        for split in (job.task.train, job.task.val, job.task.test):
            assert not held & _rows(split.x), f"job {job.key} read holdout rows"
    # the confirmation alone scores on them, and trains on the same rows as the stages
    assert confirming and all(_rows(j.task.test.x) == held for j in confirming)
    assert all(_rows(j.task.train.x) == _rows(SEEN[0].train.x) for j in confirming)


@pytest.mark.slow
def test_the_headline_is_the_paired_gain_on_fresh_seeds(confirmed):
    result, store, jobs, _ = confirmed
    c = result.confirmation
    assert result.incumbent["stage"] != "baseline", "the stage's learning rate was accepted"
    stage_seeds = {s for row in result.candidates for s in row["quality"]["units"]}
    assert stage_seeds == {0, 1, 2}
    assert c["seeds"] == [10_000 + i for i in range(5)]  # 3 seeds, so the default's 5
    # the trials of tuning used none of them either
    copies = {r["id"] for r in result.confirmations}
    assert all(j.seed not in c["seeds"] for j in jobs if _candidate(j) not in copies)
    base, final = (store.get_candidate(c[k]) for k in ("baseline", "final"))
    assert base["label"] == f"#{result.baseline['id']} baseline"
    assert final["label"].startswith(f"#{result.incumbent['id']} ")
    assert base["quality"]["units"] == final["quality"]["units"] == c["seeds"]
    # a final trained anew holds every change before it: the baseline and it, nothing else
    assert result.incumbent["transform"] is None
    assert sorted(r["id"] for r in result.confirmations) == sorted([base["id"], final["id"]])
    gains = np.subtract(final["quality"]["per_seed"], base["quality"]["per_seed"])
    assert c["gate"]["gain"] == pytest.approx(gains.mean())
    assert c["gate"]["n"] == 5 and c["test"] == "superiority"
    # the holdout is a sample of rows too: its rows' pseudo-values are in the interval
    holdout_rows = [
        [store.seed_results(r["id"])[s]["rows"]["accuracy"] for s in c["seeds"]]
        for r in (base, final)
    ]
    assert len(holdout_rows[0][0]) == min(50, c["rows"])
    crossed = paired_compare(
        base["quality"]["per_seed"], final["quality"]["per_seed"], rows=tuple(holdout_rows)
    )
    assert c["gate"]["low"] == pytest.approx(crossed.low) and crossed.row_groups
    assert c["held"] == c["gate"]["accepted"]
    assert c["summary"].startswith("the lift held up" if c["held"] else "the lift did not")
    # beside it, the selection-time gain and the optimism of selection
    selection = np.subtract(
        result.incumbent["quality"]["per_seed"], result.baseline["quality"]["per_seed"]
    )
    assert c["selection_gain"]["mean"] == pytest.approx(selection.mean())
    assert c["optimism"] == pytest.approx(selection.mean() - gains.mean())
    # the confirmation's rows are not candidates of a stage, nor on the Pareto front
    assert {r["stage"] for r in result.confirmations} == {CONFIRM_STAGE}
    assert not {r["id"] for r in result.confirmations} & set(result.pareto)
    assert all(r["stage"] != CONFIRM_STAGE for r in result.candidates)


@pytest.mark.slow
def test_a_run_killed_during_confirmation_resumes_without_redoing_its_seeds(tmp_path):
    recipe = {**RECIPE, "stages": [{"test_rows_seen": {"lr": 0.03}}]}
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    confirming = []

    def kill_on_second(kind, data):
        if kind == "seed_done" and data["candidate"]["stage"] == CONFIRM_STAGE:
            confirming.append((data["candidate"]["id"], data["seed"]))
            if len(confirming) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.run(recipe, store=store, events=kill_on_second)
    (run,) = store.runs()
    assert run["status"] == "interrupted" and run["confirmation"] is None
    again = []

    def count(kind, data):
        if kind == "seed_done" and data["candidate"]["stage"] == CONFIRM_STAGE:
            again.append((data["candidate"]["id"], data["seed"]))

    result = pipeline.run(store=store, resume=run["id"], events=count)
    fresh = [10_000 + i for i in range(5)]
    assert result.status == "finished" and result.confirmation["seeds"] == fresh
    assert len(again) == 8 and not set(again) & set(confirming)  # 10 seeds in all, none twice
    for row in result.confirmations:
        assert sorted(store.seed_results(row["id"])) == fresh


def test_a_task_too_small_for_a_holdout_runs_without_one_and_says_why():
    task, holdout, why = load_recipe({"task": "iris", "model": {"name": "linear"}}).load_tasks()
    assert holdout is None and len(task.test) == 30
    assert f"at least {MIN_HOLDOUT_ROWS} rows" in why and "150 rows is 22" in why
    # asked for explicitly, it is an error that says what to do
    explicit = {"task": "iris", "model": {"name": "linear"}, "evaluate": {"holdout": 0.15}}
    with pytest.raises(DataError, match=r"evaluate.holdout 0.15: .*holdout: 0"):
        load_recipe(explicit).load_tasks()


def test_the_holdout_is_drawn_from_validation_and_test_rows_stratified():
    full, _, _ = load_recipe(
        {"task": "breast_cancer", "model": {"name": "linear"}, "evaluate": {"holdout": 0}}
    ).load_tasks()
    task, holdout, why = load_recipe(
        {"task": "breast_cancer", "model": {"name": "linear"}}
    ).load_tasks()
    assert why is None and len(holdout) == 85
    # the training rows (and the preprocessing fitted on them) are those of the full task
    assert np.array_equal(task.train.x, full.train.x)
    assert len(task.val) + len(task.test) + len(holdout) == len(full.val) + len(full.test)
    held, rest = _rows(holdout.x), _rows(task.val.x) | _rows(task.test.x)
    assert not held & rest and held | rest == _rows(full.val.x) | _rows(full.test.x)
    # stratified: the holdout's class shares are those of the rows it came from
    pooled = np.concatenate([full.val.y, full.test.y])
    assert abs(holdout.y.mean() - pooled.mean()) < 0.02
    # the same rows every time the recipe is loaded (a resumed run, the report)
    _, again, _ = load_recipe({"task": "breast_cancer", "model": {"name": "linear"}}).load_tasks()
    assert np.array_equal(again.x, holdout.x)


@pytest.mark.slow
def test_show_runs_and_the_json_lead_with_the_confirmed_headline(confirmed, capsys):
    import json

    from tidian.cli import main

    result, store, _, _ = confirmed
    c = result.confirmation

    def cli(*argv):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--store", store.url])
        assert exit_.value.code == 0
        return capsys.readouterr().out

    shown = " ".join(cli("show", result.run_id).split())  # lines wrap at the console width
    assert f"headline: {c['summary']} (#{c['final']} vs #{c['baseline']})" in shown
    assert f"optimism of selection {c['optimism']:+.4g}" in shown
    assert "3. confirm" in shown  # its re-runs, listed after the stages
    assert json.loads(cli("show", result.run_id, "--json"))["confirmation"] == c
    (line,) = [r for r in json.loads(cli("runs", "--json")) if r["run_id"] == result.run_id]
    assert line["gain"]["confirmed"] and line["gain"]["mean"] == c["gate"]["gain"]
    assert line["confirmation"] == c["summary"]
    mark = "✓" if c["held"] else "✗"
    assert cli("runs").count(mark) == 2  # after the status (the cell may wrap) and in the caption


def test_confirm_and_holdout_settings_are_checked_by_name():
    from tidian.recipe import RecipeError

    base = {"task": "iris", "model": {"name": "linear"}}
    for bad, message in (
        ({"confirm": {"seed": 3}}, r"confirm.seed: unknown key 'seed' \(did you mean 'seeds'"),
        ({"confirm": {"seeds": -1}}, r"confirm.seeds: .*greater than or equal to 0"),
        ({"confirm": {"seeds": True}}, r"confirm.seeds: a number"),
        ({"evaluate": {"holdout": 0.9}}, r"evaluate.holdout: .*less than or equal to 0.5"),
    ):
        with pytest.raises(RecipeError, match=message):
            load_recipe({**base, **bad})
    # fresh seeds lie above every seed the stages use, explicit ones included
    recipe = load_recipe({**base, "evaluate": {"seeds": [3, 20_000]}, "confirm": {"seeds": 2}})
    assert recipe.confirm_seeds() == [20_001, 20_002]
    seven = load_recipe({**base, "evaluate": {"seeds": 7}}).confirm_seeds()
    assert seven == [10_000 + i for i in range(7)]  # as many as the stages' seeds...
    three = load_recipe({**base, "evaluate": {"seeds": 3}}).confirm_seeds()
    assert three == [10_000 + i for i in range(5)]  # ...and at least 5


def _a_a(run: int) -> dict:
    """bench/pipeline_aa.py's A/A recipe for run ``run`` (five candidates, then one): each
    candidate is the baseline with its randomness re-drawn (``train.seed_stream``), a true
    gain of zero; runs share no seed."""
    return {
        "task": "breast_cancer",
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 4, "batch_size": 32, "lr": 0.003},
        "evaluate": {"seeds": [20_000 + 23 * run + i for i in range(3)]},
        "deploy": {"runtime": "torch"},
        "confirm": {"seeds": 5},
        "stages": [
            {"train_variants": {"candidates": [{"seed_stream": 1 + k} for k in range(5)]}},
            {"train_variants": {"candidates": [{"seed_stream": 6}]}},
        ],
    }


@pytest.mark.slow  # three whole pipeline runs
def test_an_a_a_miniature_claims_no_confirmed_lift(tmp_path):
    """The three of the 200 A/A runs of the benchmark (``--candidates 5``) whose stages
    accepted a re-drawn baseline (a lift that is not there) at selection time, test rows
    counted: the confirmation does not confirm it."""
    for run in (41, 140, 188):
        store = Store(f"sqlite:///{tmp_path / f'{run}.db'}", artifacts=tmp_path / str(run))
        result = pipeline.run(_a_a(run), store=store, threads=1)
        assert result.incumbent["id"] != result.baseline["id"], f"run {run} claimed no lift"
        c = result.confirmation
        assert c["selection_gain"]["low"] > 0  # claimed at selection, beyond noise
        assert not c["held"] and c["summary"].startswith("the lift did not hold up")
        assert c["optimism"] > 0
