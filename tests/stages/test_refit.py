"""The ``refit`` stage: the incumbent's configuration on training + validation rows, as long
as each seed of the incumbent trained, paired and gated like any candidate."""

import pytest

import tidian
from tidian.models import model_spec
from tidian.models.io import read_spec
from tidian.stages import Context, Proposal
from tidian.stages.refit import Refit, RefitConfig, refit_step


class _Ctx:
    def __init__(self, task, seed=0):
        self.task, self.seed, self.train, self.metric, self.workdir = task, seed, None, "", None
        self.held_out = {}


def test_a_network_refits_on_every_labelled_row_for_its_seed_s_epochs(vector_task, monkeypatch):
    import tidian.stages.refit as refit

    seen, real = [], refit.train_new

    def spy(model, task, train, seed, *, data):
        seen.append((len(data.train), len(data.val), train.epochs, train.patience, seed))
        return real(model, task, train, seed, data=data)

    monkeypatch.setattr(refit, "train_new", spy)
    step = {
        "model": {"name": "linear"},
        "train": {"epochs": 30, "patience": 3},
        "lengths": {"0": {"epochs": 4}, "1": {}},
    }
    rows = len(vector_task.train) + len(vector_task.val)
    ctx = _Ctx(vector_task, 0)
    _, info = refit_step(None, step, ctx)
    assert info == {"rows": rows, "epochs": 4}
    assert ctx.held_out == {"val": None}  # it trained on validation: no score there
    refit_step(None, step, _Ctx(vector_task, 1))  # nothing recorded: the config's epochs
    assert seen == [(rows, 0, 4, None, 0), (rows, 0, 30, None, 1)]


def test_a_boosting_family_refits_with_its_seed_s_rounds(tiny_tasks):
    task = tiny_tasks["vector"]
    step = {"model": {"name": "lightgbm", "min_child_samples": 3}, "train": {}, "lengths": {}}
    step["lengths"]["2"] = {"rounds": 7}
    model, info = refit_step(None, step, _Ctx(task, 2))
    options = model_spec(model).options
    assert info["rows"] == len(task.train) + len(task.val)
    # 7 rounds of one tree per class, early stopping off (no validation rows left)
    assert options["rounds"] == 7 and options["trees"] == 7 * task.n_classes


def test_refit_says_why_it_cannot_apply(vector_task):
    stage = Refit(RefitConfig())
    made = Proposal("ensemble", {"name": "ensemble"}, {}, transform=[{"ensemble": {}}])
    ctx = Context(vector_task, "accuracy", (0, 1))
    assert stage.run(made, ctx) == [] and "made by a transform (ensemble)" in ctx.notes["skipped"]
    ctx = Context(vector_task.replace(val=vector_task.val.take([])), "accuracy", (0,))
    assert stage.run(Proposal("b", {"name": "linear"}, {}), ctx) == []
    assert "no validation rows" in ctx.notes["skipped"]
    with pytest.raises(tidian.ConfigError, match="refit.epochs"):
        RefitConfig(epochs=0)


@pytest.mark.slow  # a whole pipeline run (about 15 s)
def test_a_refit_is_paired_and_gated_like_any_candidate(tmp_path):
    from tidian.store import Store

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    recipe = {
        "task": "breast_cancer",
        "model": {"name": "xgboost", "n_estimators": 200, "max_depth": 3},
        "evaluate": {"seeds": 3},
        "stages": [{"refit": {}}],
    }
    result = tidian.run(recipe, store=store)
    base, refit = result.candidates[:2]
    assert refit["stage"] == "refit" and refit["decision"] in ("accepted", "rejected")
    assert refit["quality"]["units"] == base["quality"]["units"]  # paired seed by seed
    assert "gain" in refit["reason"] and "test rows" in refit["reason"]
    # scored on test only: its validation rows were training rows
    assert base["quality"]["val_mean"] is not None and refit["quality"]["val_mean"] is None
    assert "val" not in refit["quality"]["summary"]
    for seed in (0, 1, 2):
        [b] = list(tmp_path.rglob(f"candidate-{base['id']}/seed-{seed}"))
        [r] = list(tmp_path.rglob(f"candidate-{refit['id']}/seed-{seed}"))
        # the refit trains as many rounds as that seed's early stopping chose
        assert read_spec(r)["options"]["rounds"] == read_spec(b)["options"]["rounds"]
