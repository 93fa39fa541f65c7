"""The run's time limit (``budget.time``, ``tidian run --time-limit``): stages share it in
order, a stage's candidates go in waves of whole candidates, the confirmation's time is kept
aside, and what the limit cut is recorded and said. The clock is the pipeline's own, moved by
the test when a candidate finishes: nothing here waits on real time."""

import pytest

import tidian.pipeline as pipeline
from tidian.cli import _stage_notes, main
from tidian.exceptions import ConfigError, DataError
from tidian.recipe import RecipeError, load_recipe
from tidian.report import write_report
from tidian.store import Store

RECIPE = {
    "task": {"name": "iris"},
    "model": {"name": "linear"},
    "train": {"epochs": 3, "lr": 0.01},
    "evaluate": {"seeds": 2},
    "confirm": {"seeds": 2},
    "stages": [
        {"train_variants": {"candidates": [{"epochs": 60}, {"epochs": 30}, {"lr": 0.0001}]}},
        {"architecture": {"candidates": [{"name": "mlp", "hidden": [8]}]}},
    ],
}


class Clock:
    """Stands still until told to jump."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_cuts_whole_candidates_then_stages_and_says_so(tmp_path, monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(pipeline, "_clock", clock)
    trained = []

    def events(kind, data):
        if kind == "candidate_done" and data["candidate"]["stage"] == "train_variants":
            trained.append(data["candidate"]["label"])
            clock.now = 10_000.0  # the first candidate of stage 1 used up the time

    store = Store(f"sqlite:///{tmp_path / 'budget.db'}", artifacts=tmp_path / "runs")
    result = pipeline.run(RECIPE, store=store, events=events, time_limit="15m")
    assert result.status == "finished"
    assert load_recipe(store.run(result.run_id)["recipe"]).budget.time == "15m"  # recorded
    # one worker: a wave is one candidate (every one of its seeds); the later ones are cut
    assert trained == ["epochs=60"]
    stage1 = [c for c in result.candidates if c["stage"] == "train_variants"]
    assert [c["label"] for c in stage1] == ["epochs=60"]
    assert len(store.seed_results(stage1[0]["id"])) == 2  # paired: both seeds
    first, second = (s for s in result.stages if s["position"] in (1, 2))
    assert first["report"]["cut"]["candidates"] == ["epochs=30", "lr=0.0001"]
    assert first["report"]["cut"]["why"].startswith("the time limit (15 min) is reached, with ")
    assert "kept for the confirmation" in first["report"]["cut"]["why"]
    # the next stage did not start; nothing of it is in the ledger
    assert second["report"]["skipped"].startswith("the time limit (15 min) is reached")
    assert not [c for c in result.candidates if c["stage"] == "architecture"]
    # the confirmation, whose time was kept aside, still ran when a change was kept
    if result.incumbent["id"] != result.baseline["id"]:
        assert result.confirmation["held"] in (True, False) and result.confirmations
    write_report(store, result.run_id, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert "not trained: epochs=30, lr=0.0001" in html and "skipped: the time limit" in html
    notes = _stage_notes(result.stages)
    assert notes[0].startswith("stage 1 train_variants: the time limit (15 min) is reached")
    assert notes[0].endswith(
        "not trained: epochs=30, lr=0.0001 (`tidian run --resume` trains them)"
    )
    assert notes[1].startswith("stage 2 architecture: skipped: the time limit")
    # a run the limit cut resumes, with another limit or none, and does the rest
    clock.now = 0.0
    again = pipeline.run(store=store, resume=result.run_id)
    assert again.status == "finished"
    labels = [c["label"] for c in again.candidates if c["stage"] == "train_variants"]
    assert labels == ["epochs=60", "epochs=30", "lr=0.0001"]
    assert [c["label"] for c in again.candidates if c["stage"] == "architecture"]
    assert not _stage_notes(again.stages)
    assert again.stages[2]["incumbent_before"] == again.stages[1]["incumbent_after"]
    with pytest.raises(DataError, match="already finished"):
        pipeline.run(store=store, resume=result.run_id)


def test_without_a_limit_nothing_is_cut(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(pipeline, "_clock", clock)
    clock.now = 1e9  # no limit: the clock is never read against a deadline
    recipe = {**RECIPE, "stages": RECIPE["stages"][:1]}
    store = Store(f"sqlite:///{tmp_path / 'free.db'}", artifacts=tmp_path / "runs")
    result = pipeline.run(recipe, store=store)
    assert len([c for c in result.candidates if c["stage"] == "train_variants"]) == 3
    assert not any((s["report"] or {}).get("cut") for s in result.stages)


def test_a_limit_smaller_than_the_baseline_keeps_the_baseline_and_skips_every_stage(
    tmp_path, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(pipeline, "_clock", clock)

    def events(kind, data):
        if kind == "candidate_done":
            clock.now += 120.0  # the baseline alone takes longer than the limit

    store = Store(f"sqlite:///{tmp_path / 'tiny.db'}", artifacts=tmp_path / "runs")
    result = pipeline.run({**RECIPE, "budget": {"time": 60}}, store=store, events=events)
    assert result.status == "finished" and result.incumbent["id"] == result.baseline["id"]
    assert [c["stage"] for c in result.candidates] == ["baseline"]
    assert all("time limit (1 min)" in s["report"]["skipped"] for s in result.stages[1:])
    assert result.confirmation == {"skipped": "no stage kept a change"}


@pytest.mark.parametrize("bad", ["", "soon", -5, 0, "2 days", True])
def test_a_limit_that_is_no_duration_is_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(RecipeError, match="budget.time: a (positive duration|number or text)"):
        load_recipe({**RECIPE, "budget": {"time": bad}})
    store = Store(f"sqlite:///{tmp_path / 'bad.db'}", artifacts=tmp_path / "runs")
    with pytest.raises(ConfigError, match="time limit: a positive duration"):
        pipeline.run(RECIPE, store=store, time_limit=bad)
    assert store.runs() == []


def test_the_cli_refuses_a_time_limit_that_is_no_duration(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: iris\nmodel: {name: linear}\n")
    with pytest.raises(SystemExit) as done:
        main(
            [
                "run",
                str(recipe),
                "--time-limit",
                "ten minutes",
                "--store",
                f"sqlite:///{tmp_path}/x.db",
            ]
        )
    assert done.value.code == 2
    assert "time limit: a positive duration" in capsys.readouterr().err
    assert Store(f"sqlite:///{tmp_path}/x.db").runs() == []


def test_a_misspelt_budget_key_is_named_with_the_budget_s_own_keys():
    with pytest.raises(
        RecipeError,
        match=r"budget.tim: unknown key 'tim' \(did you mean 'time'\?\); allowed: time$",
    ):
        load_recipe({**RECIPE, "budget": {"tim": "1m"}})


def _hundred_seconds_a_seed(tmp_path, monkeypatch) -> Store:
    """A store that records every seed as taking 100 s, with the pipeline's clock standing
    still: the time limit then depends on those seconds alone."""
    monkeypatch.setattr(pipeline, "_clock", Clock())
    store = Store(f"sqlite:///{tmp_path / 'slow.db'}", artifacts=tmp_path / "runs")
    record = store.add_seed_result
    monkeypatch.setattr(
        store,
        "add_seed_result",
        lambda cid, seed, scores, history, seconds, rows: record(
            cid, seed, scores, history, 100.0, rows
        ),
    )
    return store


@pytest.mark.parametrize(("spare", "trained"), [(150.0, False), (250.0, True)])
def test_a_stage_s_first_wave_starts_only_if_it_fits_at_the_incumbent_s_pace(
    tmp_path, monkeypatch, spare, trained
):
    # every seed is recorded as taking 100 s; the clock stands still. After the baseline, the
    # confirmation keeps 2 models × 2 fresh seeds × 100 s + its cost measurements aside; the
    # first candidate of stage 1 (2 seeds, one worker) is expected to take 200 s: with 150 s
    # left it does not start (the limit would be overrun by its whole length), with 250 s it does
    store = _hundred_seconds_a_seed(tmp_path, monkeypatch)
    limit = 2 * 2 * 100.0 + 2 * pipeline.COST_SECONDS + spare
    result = pipeline.run({**RECIPE, "budget": {"time": limit}}, store=store)
    stage1 = [c["label"] for c in result.candidates if c["stage"] == "train_variants"]
    assert stage1 == (["epochs=60", "epochs=30", "lr=0.0001"] if trained else [])
    if not trained:
        # a change of the trained weights has no pace to go by: its first wave still starts
        quick = {**RECIPE, "budget": {"time": limit}, "stages": [{"quantize": {"mode": "dynamic"}}]}
        again = pipeline.run(quick, store=store)
        assert [c["stage"] for c in again.candidates] == ["baseline", "quantize"]
        assert result.stages[1]["report"]["cut"]["candidates"] == [
            "epochs=60",
            "epochs=30",
            "lr=0.0001",
        ]


@pytest.mark.parametrize(("spare", "searched"), [(150.0, False), (250.0, True)])
def test_a_search_that_one_training_would_overrun_does_not_start(
    tmp_path, monkeypatch, spare, searched
):
    # seeds recorded as 100 s each, the clock standing still: after the baseline and the
    # confirmation's share, `spare` seconds are left, and a search may use half of them
    store = _hundred_seconds_a_seed(tmp_path, monkeypatch)
    recipe = {
        **RECIPE,
        "budget": {"time": 2 * 2 * 100.0 + 2 * pipeline.COST_SECONDS + spare},
        "stages": [{"tune": {"space": {"lr": {"float": [0.001, 0.1], "log": True}}, "trials": 2}}],
    }
    result = pipeline.run(recipe, store=store)
    report = result.stages[1]["report"] or {}
    if searched:
        assert "skipped" not in report
    else:
        assert report["skipped"] == (
            "the time limit leaves the search 75 s, less than one training of the incumbent "
            "takes (100 s)"
        )
        assert [c["stage"] for c in result.candidates] == ["baseline"]


def _slow_networks(tmp_path, monkeypatch) -> Store:
    """A store that records a seed of the linear model as taking 1 s and one of any other
    model as taking 100 s, with the pipeline's clock standing still."""
    monkeypatch.setattr(pipeline, "_clock", Clock())
    store = Store(f"sqlite:///{tmp_path / 'paces.db'}", artifacts=tmp_path / "runs")
    record = store.add_seed_result

    def timed(cid, seed, scores, history, seconds, rows):
        fast = store.get_candidate(cid)["model"]["name"] == "linear"
        return record(cid, seed, scores, history, 1.0 if fast else 100.0, rows)

    monkeypatch.setattr(store, "add_seed_result", timed)
    return store


# the linear baseline stays the incumbent (nothing can gain 50 points); stage 1 trains an MLP
# at "100 s" a seed; the confirmation keeps the baseline twice × 2 fresh seeds × 1 s aside
PACED = {
    **RECIPE,
    "evaluate": {"seeds": 2, "min_effect": "50pt"},
    "stages": [{"architecture": {"candidates": [{"name": "mlp", "hidden": [8]}]}}],
}
KEPT = 2 * 2 * 1.0 + 2 * pipeline.COST_SECONDS


@pytest.mark.parametrize(("spare", "trained"), [(150.0, False), (250.0, True)])
def test_a_family_the_run_has_timed_is_expected_at_its_own_pace(
    tmp_path, monkeypatch, spare, trained
):
    # stage 2's MLP (2 seeds, one worker) is expected to take 2 × 100 s, as stage 1's did —
    # not 2 × 1 s, the incumbent's pace: with 150 s left it does not start
    store = _slow_networks(tmp_path, monkeypatch)
    stages = [*PACED["stages"], {"architecture": {"candidates": [{"name": "mlp", "hidden": [16]}]}}]
    recipe = {**PACED, "budget": {"time": KEPT + spare}, "stages": stages}
    result = pipeline.run(recipe, store=store)
    assert [c["stage"] for c in result.candidates][:2] == ["baseline", "architecture"]
    later = [c["label"] for c in result.candidates if c["stage_position"] == 2]
    assert later == (["name=mlp, hidden=[16]"] if trained else [])
    assert result.incumbent["stage"] == "baseline"


@pytest.mark.parametrize(("spare", "trained"), [(150.0, False), (250.0, True)])
def test_a_family_the_run_has_not_timed_is_expected_at_the_slowest_pace_it_has(
    tmp_path, monkeypatch, spare, trained
):
    # stage 1's MLP took 100 s a seed; stage 2's glm, a family this run has not trained, is
    # expected at that pace (2 seeds × 100 s) — not at the linear incumbent's 1 s, which let a
    # slow family cut from one stage start in the next with seconds left
    store = _slow_networks(tmp_path, monkeypatch)
    stages = [*PACED["stages"], {"architecture": {"candidates": [{"name": "glm"}]}}]
    result = pipeline.run(
        {**PACED, "budget": {"time": KEPT + spare}, "stages": stages}, store=store
    )
    later = [c["label"] for c in result.candidates if c["stage_position"] == 2]
    assert later == (["name=glm"] if trained else [])
    if not trained:
        assert result.stages[2]["report"]["cut"]["candidates"] == ["name=glm"]


# a search over the MLPs (trained in stage 1 at "100 s" a seed), or over glm, which this run
# has not trained: expected at the slowest pace it has measured, those MLPs' 100 s
DRAWN = [
    {"name": "mlp", "hidden": [16]},
    {"name": "glm", "C": {"float": [0.1, 10.0], "log": True}},
]


@pytest.mark.parametrize("drawn", DRAWN, ids=["timed", "not-timed"])
@pytest.mark.parametrize(("spare", "searched"), [(150.0, False), (250.0, True)])
def test_a_search_is_expected_at_the_pace_of_the_families_it_draws(
    tmp_path, monkeypatch, spare, searched, drawn
):
    # the search may use half of what is left; one trial trains one model of its family
    store = _slow_networks(tmp_path, monkeypatch)
    stages = [*PACED["stages"], {"tune": {"space": {"model": {"choice": [drawn]}}, "trials": 1}}]
    result = pipeline.run(
        {**PACED, "budget": {"time": KEPT + spare}, "stages": stages}, store=store
    )
    report = result.stages[2]["report"] or {}
    if searched:
        assert "skipped" not in report and report["trials"] == 1
    else:
        assert report["skipped"] == (
            "the time limit leaves the search 75 s, less than one training of the models it "
            "searches takes (100 s)"
        )
