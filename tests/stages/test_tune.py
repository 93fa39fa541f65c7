"""The tune stage: space syntax and its errors, samplers, pruners, multi-objective, resume."""

import optuna
import pytest

import tidian.pipeline as pipeline
from conftest import make_task
from tidian import ConfigError
from tidian.recipe import RecipeError, load_recipe
from tidian.stages import Context, Proposal
from tidian.stages.space import check_space, sample
from tidian.stages.tune import Tune, TuneConfig
from tidian.store import Store

TASK = make_task("vector", n=90)
INCUMBENT = Proposal("baseline", {"name": "linear"}, {"epochs": 2, "lr": 0.01, "batch_size": 16})
SPACE = {
    "lr": {"float": [1e-3, 1e-1], "log": True},
    "model": {
        "choice": [
            {"name": "mlp", "hidden": [8], "dropout": {"float": [0.0, 0.3]}},
            {"name": "linear"},
        ]
    },
}


def ctx(**kw):
    return Context(TASK, "accuracy", (0, 1), **kw)


def tune(**config):
    return Tune(TuneConfig(**{"space": SPACE, "trials": 4, **config}))


BAD = [
    ({"lr": {"float": [0.1, 0.01]}}, "space.lr.float: the range [0.1, 0.01] is empty or inverted"),
    ({"lr": {"float": [0, 1], "log": True}}, "space.lr: a log range must be above 0"),
    ({"lr": {"low": 0.001, "high": 0.1}}, "space.lr: {'low': 0.001, 'high': 0.1} is not a"),
    ({"lr": {"loguniform": [0.001, 0.1]}}, "space.lr: {'loguniform': [0.001, 0.1]} is not a"),
    ({"optimizer": {"choice": []}}, "space.optimizer.choice: must be a non-empty list"),
    ({"epochs": {"int": [1.5, 3]}}, "space.epochs.int: bounds must be integers"),
    ({"lr": {"float": [0.1, 1], "int": [1, 2]}}, "exactly one of float, int or choice"),
    ({"lr": {"float": [0.1, 1], "lg": True}}, "unknown key(s) ['lg']"),
]


@pytest.mark.parametrize(("space", "message"), BAD)
def test_bad_spaces_name_their_place(space, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(
            {"task": "iris", "model": {"name": "mlp"}, "stages": [{"tune": {"space": space}}]}
        )
    assert "stages[0].tune" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"trials": 0}, "trials must be a whole number in 1..100,000"),
        ({"objectives": ["speed"]}, "'speed' is not measured"),
        ({"sampler": "cmaes"}, "cmaes cannot sample categorical"),
        ({"objectives": ["accuracy", "latency_ms"]}, "cannot prune multi-objective"),
        ({"sampler": "grid"}, "grid search"),
        ({"sampler": "annealing"}, "sampler must be one of"),
    ],
)
def test_bad_tune_configs(config, message):
    with pytest.raises(RecipeError, match="stages\\[0\\].tune") as err:
        load_recipe(
            {
                "task": "iris",
                "model": {"name": "mlp"},
                "stages": [{"tune": {"space": SPACE, **config}}],
            }
        )
    assert message in str(err.value)


def test_space_names_are_resolved():
    with pytest.raises(RecipeError, match=r"space.lrr: not a training option \(did you mean 'lr'"):
        load_recipe(
            {
                "task": "iris",
                "model": {"name": "mlp"},
                "stages": [{"tune": {"space": {"lrr": {"float": [0.1, 1]}}}}],
            }
        )
    with pytest.raises(RecipeError, match=r"space.model.choice\[0\].name: unknown model 'cnn'"):
        load_recipe(
            {
                "task": "iris",
                "model": {"name": "mlp"},
                "stages": [{"tune": {"space": {"model": {"choice": [{"name": "cnn"}]}}}}],
            }
        )


def test_conditional_space_samples_only_the_active_branch():
    check_space(SPACE, "space")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        values = sample(trial, SPACE)
        branch = values["model"]["name"]
        seen.add(branch)
        names = set(trial.params)
        if branch == "mlp":
            assert names == {"lr", "model", "model.mlp.dropout"}
            assert 0 <= values["model"]["dropout"] <= 0.3
        else:
            assert names == {"lr", "model"} and values["model"] == {"name": "linear"}
        study.tell(trial, 0.0)
    assert seen == {"mlp", "linear"}


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp", "qmc", "nsga2"])
def test_each_sampler_runs_and_returns_the_best(sampler):
    context = ctx()
    proposals = tune(sampler=sampler, pruner="none", top_k=2).run(INCUMBENT, context)
    assert 1 <= len(proposals) <= 2 and context.notes["complete"] == 4
    assert all(p.label.startswith("trial ") for p in proposals)
    assert proposals[0].train["lr"] != INCUMBENT.train["lr"]  # sampled, not copied


def test_grid_and_cmaes_samplers():
    grid_space = {"lr": {"choice": [0.01, 0.05]}, "epochs": {"int": [2, 3]}}
    context = ctx()
    Tune(TuneConfig(space=grid_space, trials=4, sampler="grid", pruner="none")).run(
        INCUMBENT, context
    )
    assert context.notes["complete"] == 4
    context = ctx()
    Tune(
        TuneConfig(
            space={"lr": {"float": [1e-3, 1e-1], "log": True}},
            trials=3,
            sampler="cmaes",
            pruner="none",
        )
    ).run(INCUMBENT, context)
    assert context.notes["complete"] == 3


@pytest.mark.parametrize("pruner", ["median", "percentile", "successive_halving", "hyperband"])
def test_pruners_stop_bad_trials(pruner):
    incumbent = Proposal(
        "b", {"name": "mlp", "hidden": [16]}, {"epochs": 12, "lr": 0.01, "batch_size": 16}
    )
    space = {"lr": {"float": [1e-5, 3e-1], "log": True}}
    context = ctx()
    Tune(TuneConfig(space=space, trials=14, sampler="random", pruner=pruner)).run(
        incumbent, context
    )
    assert context.notes["pruned"] >= 1
    assert context.notes["pruned"] + context.notes["complete"] == 14


def test_multi_objective_returns_the_pareto_set(tmp_path):
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    context = ctx(storage=url, study_name="mo")
    space = {
        "model": {"choice": [{"name": "mlp", "hidden": [64]}, {"name": "linear"}]},
        "lr": {"float": [1e-3, 1e-1], "log": True},
    }
    proposals = Tune(
        TuneConfig(space=space, trials=6, pruner="none", top_k=6, objectives=["accuracy", "params"])
    ).run(INCUMBENT, context)
    trials = [
        t
        for t in optuna.load_study(study_name="mo", storage=url).trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]

    def dominates(a, b):  # maximise accuracy, minimise params
        return a.values[0] >= b.values[0] and a.values[1] <= b.values[1] and a.values != b.values

    front = {t.number for t in trials if not any(dominates(o, t) for o in trials)}
    assert {int(p.label.split()[1]) for p in proposals} <= front
    assert set(context.notes["pareto_trials"]) == front
    assert proposals and context.notes["objectives"] == ["accuracy", "params"]


def test_resume_keeps_finished_trials_and_retries_a_dead_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    context = ctx(storage=url, study_name="s")
    tune(trials=3, pruner="none").run(INCUMBENT, context)
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 3
    dead = study.ask()  # a trial a killed process left RUNNING
    dead.suggest_float("lr", 1e-3, 1e-1, log=True)
    dead.suggest_categorical("model", ["mlp", "linear"])
    context = ctx(storage=url, study_name="s")
    tune(trials=5, pruner="none").run(INCUMBENT, context)
    study = optuna.load_study(study_name="s", storage=url)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert states.count(optuna.trial.TrialState.COMPLETE) == 5


RESUME_SPACES = {
    "random": {"lr": {"float": [1e-3, 1e-1], "log": True}, "batch_size": {"choice": [8, 16]}},
    "tpe": {"lr": {"float": [1e-3, 1e-1], "log": True}, "epochs": {"int": [1, 3]}},
    "grid": {"lr": {"choice": [0.003, 0.01, 0.03]}, "batch_size": {"choice": [8, 16, 32]}},
}


def _counted_params(url: str, name: str) -> list[dict]:
    trials = optuna.load_study(study_name=name, storage=url).trials
    return [t.params for t in trials if not t.user_attrs.get("tidian_retried")]


@pytest.mark.parametrize("sampler", ["random", "tpe", "grid"])
def test_a_resumed_study_draws_what_an_uninterrupted_one_draws(tmp_path, sampler):
    from tidian.stages.tune import _sampler

    # TPE models the history after its 10 random start-up trials: 12 trials reach the model.
    trials = 12 if sampler == "tpe" else 6
    config = {"space": RESUME_SPACES[sampler], "trials": trials, "sampler": sampler}
    config["pruner"] = "none"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proposed = Tune(TuneConfig(**config)).run(INCUMBENT, ctx(storage=url, study_name="reference"))
    reference = _counted_params(url, "reference")
    assert len(reference) == trials and len({repr(p) for p in reference}) > 1
    for k in (1, 3, trials - 1):
        name = f"killed-after-{k}"
        Tune(TuneConfig(**{**config, "trials": k})).run(
            INCUMBENT, ctx(storage=url, study_name=name)
        )
        # The killed process had drawn its next trial and was training it.
        study = optuna.load_study(
            study_name=name, storage=url, sampler=_sampler(TuneConfig(**config))
        )
        sample(study.ask(), RESUME_SPACES[sampler])
        assert study.trials[-1].state == optuna.trial.TrialState.RUNNING
        resumed = Tune(TuneConfig(**config)).run(INCUMBENT, ctx(storage=url, study_name=name))
        assert _counted_params(url, name) == reference, f"killed after {k} trials"
        # the same candidates, named alike: trials are named by place, not by Optuna's
        # number (which counts the lost trial too)
        assert [p.label for p in resumed] == [p.label for p in proposed]
        assert [p.train for p in resumed] == [p.train for p in proposed]


@pytest.mark.slow  # a whole pipeline run
def test_pipeline_keeps_the_study_in_its_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    recipe = {
        "task": {"name": "iris"},
        "model": {"name": "linear"},
        "train": {"epochs": 3, "lr": 0.01},
        "evaluate": {"seeds": 2},
        "stages": [
            {
                "tune": {
                    "trials": 3,
                    "pruner": "none",
                    "space": {
                        "lr": {"float": [1e-3, 1e-1], "log": True},
                        "epochs": {"int": [5, 20]},
                    },
                }
            }
        ],
    }
    result = pipeline.run(recipe, store=Store(url))
    (name,) = optuna.get_all_study_names(url)
    assert name == f"tidian-{result.run_id}-stage1-tune"
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 3
    stage = result.to_dict()["stages"][1]
    assert stage["name"] == "tune" and stage["report"]["trials"] == 3
    assert "importances" in stage["report"]
    tuned = result.candidates[1]
    assert tuned["stage"] == "tune" and tuned["decision"] in ("accepted", "rejected")


def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    from tidian.executors import LocalExecutor

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    Store(url)  # the ledger's database (WAL mode), where the study lives beside the runs
    with LocalExecutor(2) as executor:
        context = ctx(storage=url, study_name="shared", executor=executor)
        tune(trials=8, pruner="none").run(INCUMBENT, context)
    trials = optuna.load_study(study_name="shared", storage=url).trials
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 8 == len(trials)


def test_a_failing_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path, capfd):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    space = {"lr": {"choice": [1e4, 0.01]}}  # lr 1e4 diverges: the loop raises
    incumbent = Proposal(
        "b", {"name": "mlp", "hidden": [8]}, {"epochs": 2, "optimizer": "sgd", "batch_size": 16}
    )
    context = ctx(storage=url, study_name="f")
    Tune(TuneConfig(space=space, trials=6, sampler="random", pruner="none")).run(incumbent, context)
    trials = optuna.load_study(study_name="f", storage=url).trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("diverged" in t.user_attrs["fail_reason"] for t in failed)
    assert context.notes["failed"] == len(failed) and context.notes["complete"] >= 1
    printed = capfd.readouterr().err
    # each failed trial is one warning line, without Optuna's traceback
    assert printed.count("failed with parameters") == len(failed)
    assert "Traceback" not in printed


@pytest.mark.slow  # a whole pipeline run
def test_a_killed_tuning_run_resumes_with_the_right_trial_count(tmp_path):
    import signal

    from test_pipeline import _start_and_signal

    recipe = {
        "task": {"name": "iris"},
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"epochs": 60, "lr": 0.01, "batch_size": 8},
        "evaluate": {"seeds": 2},
        "stages": [
            {
                "tune": {
                    "trials": 6,
                    "pruner": "none",
                    "sampler": "random",
                    "space": {"lr": {"float": [1e-3, 1e-1], "log": True}},
                }
            }
        ],
    }
    url, _, _ = _start_and_signal(
        tmp_path, recipe, "SELECT count(*) FROM trials WHERE state = 'COMPLETE'", signal.SIGKILL
    )
    store = Store(url)
    (run,) = store.runs()
    (name,) = optuna.get_all_study_names(url)
    before = optuna.load_study(study_name=name, storage=url).trials
    assert 1 <= sum(t.state == optuna.trial.TrialState.COMPLETE for t in before) < 6
    result = pipeline.run(store=store, resume=run["id"])
    assert result.status == "finished"
    trials = optuna.load_study(study_name=name, storage=url).trials
    counted = [t for t in trials if not t.user_attrs.get("tidian_retried")]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in counted) == 6
    assert len(counted) == 6
    assert [c["stage"] for c in result.candidates] == ["baseline", "tune"]


def test_constraints_pick_from_the_pareto_front():
    space = {
        "model": {"choice": [{"name": "mlp", "hidden": [64]}, {"name": "linear"}]},
        "lr": {"float": [1e-3, 1e-1], "log": True},
    }
    config = TuneConfig(
        space=space, trials=6, pruner="none", top_k=6, objectives=["accuracy", "params"]
    )
    linear_params = 5 * 3 + 3
    context = ctx(constraints={"max_params": linear_params})
    proposals = Tune(config).run(INCUMBENT, context)
    assert proposals and all(p.model["name"] == "linear" for p in proposals)
    with pytest.raises(ConfigError, match="no trial on the Pareto front meets"):
        Tune(config).run(INCUMBENT, ctx(constraints={"max_params": 5}))


def test_a_trial_worker_run_again_after_its_node_died_keeps_to_its_share(tmp_path):
    """A worker's first attempt finished one trial and died in a second (left RUNNING); run
    again, it fails and requeues that trial, counts the finished one, and runs the rest of
    its share: the study holds exactly the budget."""
    import dataclasses

    from tidian.executors import Job, execute
    from tidian.stages.study import open_study
    from tidian.stages.tune import WORKER, _directions, _spent

    url = f"sqlite:///{tmp_path / 'study.db'}"
    config = TuneConfig(
        space={"lr": {"float": [0.001, 0.1], "log": True}}, trials=3, sampler="random"
    )
    open_study(url, "s", _directions(["accuracy"]), None, feature="test")
    spec = {
        "storage": url,
        "study": "s",
        "tune": dataclasses.asdict(config),
        "incumbent": {"model": {"name": "linear"}, "train": {"epochs": 2}},
        "objectives": ["accuracy"],
        "index": 0,
        "dispatch": "d1",
    }
    task = make_task("vector")
    execute(Job("tune.trials", {**spec, "trials": 1}, task, 0))  # the first attempt's trial
    study = optuna.load_study(study_name="s", storage=url)
    lost = study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)})
    lost.set_user_attr(WORKER, "d1:0")  # ... and the one it was running when its node died
    execute(Job("tune.trials", {**spec, "trials": 3}, task, 0))  # the worker, run again
    trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert _spent(optuna.load_study(study_name="s", storage=url)) == 3  # exactly the share
    gone = next(t for t in trials if t.number == lost.number)
    assert gone.state == optuna.trial.TrialState.FAIL and gone.user_attrs["tidian_retried"]
    redone = [t for t in trials if t.number != lost.number and t.params == gone.params]
    assert len(redone) == 1 and redone[0].state == optuna.trial.TrialState.COMPLETE


def test_a_choice_of_lists_searches_layer_shapes():
    """``hidden: {choice: [[8], [16, 8]]}``: Optuna draws the lists' JSON, the trial gets the
    list (before: TypeError unhashable type 'list' once the run had trained its baseline)."""
    space = {"model": {"name": "mlp", "hidden": {"choice": [[8], [16, 8]]}}}
    check_space(space, "space")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(12):
        trial = study.ask()
        values = sample(trial, space)
        drawn.append(values["model"]["hidden"])
        assert trial.params["model.hidden"] in ("[8]", "[16, 8]")
        study.tell(trial, 0.0)
    assert {tuple(h) for h in drawn} == {(8,), (16, 8)}
    context = ctx()
    proposals = Tune(
        TuneConfig(space=space, trials=4, sampler="random", pruner="none", top_k=4)
    ).run(INCUMBENT, context)
    assert context.notes["complete"] == 4  # every trial trained its drawn shape
    assert all(p.model["hidden"] in ([8], [16, 8]) for p in proposals)


def test_the_run_s_time_limit_stops_the_search():
    """Under a time limit the pipeline gives the stage ``ctx.time_left`` (half of what is
    left); the search stops starting trials then, whatever ``trials`` says (at least one)."""
    context = ctx(time_left=0.0)  # no time: one second, the least a search is given
    proposals = tune(trials=10_000, pruner="none", sampler="random").run(INCUMBENT, context)
    assert proposals and 1 <= context.notes["complete"] < 10_000
