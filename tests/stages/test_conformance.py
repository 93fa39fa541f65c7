"""Conformance over every registered stage, in the style of scikit-learn's estimator checks:
each declares an example config that validates and round-trips through YAML, runs on a tiny
task with deterministic proposals (resume matches them to ledger rows by label), proposes
only registered transform steps, refuses a bad config naming the field, and declares its
facts (kind, optional packages, report sections). A slow check runs every stage's example in
a whole pipeline. A new stage gets all of this without writing a test."""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace
from typing import Any

import noop_stage  # noqa: F401  (a stage added in one file; it gets this suite too)
import pytest
import yaml

import tidian.pipeline as pipeline
from conftest import make_task
from tidian.compression.apply import STEPS, check_steps
from tidian.executors import Job, LocalExecutor
from tidian.models import MODELS, seed_folder
from tidian.recipe import RecipeError, validate_recipe
from tidian.report.collect import SECTIONS
from tidian.stages import STAGES, Context, Proposal, Stage
from tidian.store import Store
from tidian.training.config import TrainConfig

NAMES = STAGES.names()
BASELINE = {"name": "mlp", "hidden": [8]}
TRAIN = {"epochs": 2, "batch_size": 16, "lr": 0.01}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """What a stage sees mid-run: a tiny task, an incumbent trained and saved for two seeds
    (by the same job the pipeline uses), and two finished candidates in the history."""
    folder = tmp_path_factory.mktemp("stage-conformance")
    task = make_task("vector", n=90)
    seeds = (0, 1)
    incumbent = Proposal("baseline", dict(BASELINE), TrainConfig.from_dict(TRAIN).to_dict())
    history = []
    with LocalExecutor(1) as executor:
        for cid, model in ((1, BASELINE), (2, {"name": "linear"})):
            config = {"model": model, "train": incumbent.train, "metrics": ["accuracy"]}
            jobs = [
                Job("train", config, task, s, out=str(seed_folder(folder / f"c{cid}", s)))
                for s in seeds
            ]
            runs = executor.gather(jobs)
            val = sum(r.scores["val"]["accuracy"] for r in runs) / len(runs)
            history.append(
                {
                    "id": cid,
                    "label": str(model),
                    "stage": "baseline",
                    "mean": val,
                    "val_mean": val,
                    "model": model,
                    "folder": str(folder / f"c{cid}"),
                }
            )
    return SimpleNamespace(
        task=task, seeds=seeds, incumbent=incumbent, history=tuple(history), folder=folder
    )


def context(world, name: str, executor=None) -> Context:
    return Context(
        world.task,
        "accuracy",
        world.seeds,
        world.history,
        storage=f"sqlite:///{world.folder / 'studies.db'}",
        study_name=f"conformance-{name}",
        executor=executor,
        artifacts={s: str(seed_folder(world.folder / "c1", s)) for s in world.seeds},
        baseline_train=world.incumbent.train,
    )


def config_of(name: str, raw: dict[str, Any]) -> Any:
    """The stage config the recipe validator makes of ``raw`` (or its RecipeError)."""
    recipe = validate_recipe({"task": "iris", "model": BASELINE, "stages": [{name: raw}]})
    ((_, config),) = recipe.stage_entries()
    return config


@pytest.mark.parametrize("name", NAMES)
def test_declares_its_facts(name, world):
    cls = STAGES.get(name)
    entry = STAGES.entry(name)
    assert issubclass(cls, Stage) and cls.name == name
    assert entry.meta["kind"] in ("quality", "cost") and entry.meta["kind"] == cls.kind
    assert dataclasses.is_dataclass(entry.meta["config"]) and entry.description
    assert isinstance(cls.edits_model, bool)
    assert set(cls.sections) <= set(SECTIONS), "a section the report does not know"
    example = cls.example_config(context(world, name))
    assert isinstance(example, dict), f"{name} declares no example config (Stage.example)"
    stage = cls(config_of(name, example))
    for module, extra in stage.requirements():
        assert isinstance(module, str) and isinstance(extra, str)
    assert isinstance(stage.quantizes(), bool)


@pytest.mark.parametrize("name", NAMES)
def test_example_config_round_trips_through_yaml(name, world):
    config = config_of(name, STAGES.get(name).example_config(context(world, name)))
    text = yaml.safe_dump({name: dataclasses.asdict(config)})
    assert config_of(name, yaml.safe_load(text)[name]) == config


@pytest.mark.parametrize("name", NAMES)
def test_runs_on_a_tiny_task_with_deterministic_proposals(name, world, capsys):
    cls = STAGES.get(name)
    config = config_of(name, cls.example_config(context(world, name)))
    incumbent = copy.deepcopy(world.incumbent)
    with LocalExecutor(1) as executor:
        ctx = context(world, name, executor)
        first = cls(config).run(incumbent, ctx)
        # a resumed run replays the stage: same proposals (studies continue, not restart)
        again = cls(config).run(incumbent, context(world, name, executor))
    assert incumbent == world.incumbent, "run must not change its arguments"
    assert [dataclasses.asdict(p) for p in first] == [dataclasses.asdict(p) for p in again]
    assert len({p.label for p in first}) == len(first), "labels must be unique"
    assert first or ctx.notes, "a stage that proposes nothing must report something"
    for p in first:
        assert p.model["name"] in MODELS
        TrainConfig.from_dict(p.train)
        if p.transform is not None:
            assert check_steps(p.transform) == p.transform
            assert all(next(iter(step)) in STEPS for step in p.transform)
    out = capsys.readouterr()
    assert out.out == "" and out.err == "", "stages must not print"


# Values of the wrong type for any field: a mapping, a list, a number, a string. Every field
# must refuse at least one of them, with the field's name in the message.
WRONG = ({"wrong": [1]}, [[1]], 12345, "not-a-valid-value")


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_config_is_refused_naming_the_field(name, world):
    cls = STAGES.get(name)
    example = cls.example_config(context(world, name))
    with pytest.raises(RecipeError, match=r"unknown option 'no_such_option'"):
        config_of(name, {**example, "no_such_option": 1})
    for field in dataclasses.fields(STAGES.entry(name).meta["config"]):
        for value in WRONG:
            try:
                config_of(name, {**example, field.name: value})
            except RecipeError as err:
                assert f"{name}.{field.name}" in str(err), str(err)
                break
        else:
            pytest.fail(f"{name}.{field.name} accepted every one of {WRONG}")


@pytest.mark.slow  # a whole pipeline per stage (about 5-20 s each)
@pytest.mark.parametrize("name", NAMES)
def test_the_example_runs_in_a_pipeline(name, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    base = {
        "task": "iris",
        "model": BASELINE,
        "train": TRAIN,
        "evaluate": {"seeds": 2, "margin": 0.05},
        "deploy": {"runtime": "onnxruntime"},
    }
    first = pipeline.run(base, store=store)  # a finished model to start from (transfer)
    folder = first.baseline["artifact"].rsplit("/", 1)[0]
    ctx = SimpleNamespace(artifacts={s: str(seed_folder(folder, s)) for s in (0, 1)}, seeds=(0, 1))
    example = STAGES.get(name).example_config(ctx)
    result = pipeline.run({**base, "stages": [{name: example}]}, store=store)
    assert result.status == "finished"
    made = [c for c in result.candidates if c["stage"] == name]
    for row in made:
        assert sorted(store.seed_results(row["id"])) == [0, 1]
        assert row["status"] == "done" and row["decision"] in ("accepted", "rejected")
    (stage_row,) = [s for s in result.stages if s["name"] == name]
    assert made or stage_row["report"], "a stage that proposes nothing reports something"
