"""Ensembles: each combination on constructed outputs, greedy selection, stacking on
validation only, bad input, and the stage end to end (members top, seeds, bagging, snapshot)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tidian
import tidian.pipeline as pipeline
from tidian import ConfigError, load_model, save_model
from tidian.compression.apply import REPORT_FILE
from tidian.metrics import METRICS
from tidian.models.ensemble import Ensemble
from tidian.models.io import seed_folder
from tidian.recipe import RecipeError, validate_recipe
from tidian.stages import ensemble as ens
from tidian.store import Store


class Fixed(nn.Module):
    """A member whose outputs are given: row i of x (an index) → logits[i]."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits[x[:, 0].long()]


def _ens(members, combine, classes=True):
    return Ensemble([Fixed(m) for m in members], combine, classes, len(members[0][0]))


def test_average_is_the_mean_of_the_members_probabilities():
    rng = np.random.default_rng(0)
    members = [rng.normal(size=(5, 3)) for _ in range(3)]
    out = _ens(members, "average")(torch.arange(5.0)[:, None])
    hand = np.mean([np.exp(m) / np.exp(m).sum(1, keepdims=True) for m in members], axis=0)
    np.testing.assert_allclose(out.softmax(-1).numpy(), hand, atol=1e-6)


def test_vote_majority_and_ties_broken_by_the_averaged_probability():
    a = [[5.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # row 0: class 0; row 1: class 1 (weakly)
    b = [[4.0, 0.0, 0.0], [0.0, 0.0, 9.0]]  # row 1: class 2 (strongly)
    c = [[0.0, 3.0, 0.0], [2.0, 0.0, 0.0]]  # row 1: class 0
    out = _ens([a, b, c], "vote")(torch.arange(2.0)[:, None])
    assert out.argmax(1).tolist()[0] == 0  # two votes of three
    assert out.softmax(-1)[0, 0] == pytest.approx(2 / 3, abs=1e-3)
    # row 1: one vote each — the tie goes to class 2, the highest averaged probability
    assert out.argmax(1).tolist()[1] == 2


def test_regression_average_and_vote_refused():
    out = Ensemble([Fixed([[1.0], [2.0]]), Fixed([[3.0], [6.0]])], "average", False, 1)
    assert out(torch.arange(2.0)[:, None]).reshape(-1).tolist() == [2.0, 4.0]
    task = tidian.load_task("iris")
    sig = {**task.signature(), "target_kind": "values", "n_outputs": 1}
    with pytest.raises(ConfigError, match="vote"):
        tidian.create_model("ensemble", sig, members=[{"name": "linear"}] * 2, combine="vote")


def test_weights_are_fitted_towards_the_better_member():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    good = np.eye(3)[y] * 3 + rng.normal(size=(300, 3))
    bad = rng.normal(size=(300, 3))
    w = ens.fit_weights(np.stack([good, bad]), y, True)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.8


@pytest.mark.parametrize("seed", range(5))
def test_greedy_selection_never_worsens_the_best_single_member(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 200)
    outs = np.stack(
        [np.eye(4)[y] * rng.uniform(0, 2) + rng.normal(size=(200, 4)) for _ in range(6)]
    )
    accuracy = METRICS.get("accuracy")
    w, path = ens.greedy_selection(outs, y, True, accuracy, True)
    best_single = max(accuracy(y, o) for o in outs)
    combined = ens._combined(outs, w, True)
    assert accuracy(y, np.log(combined)) >= best_single
    assert accuracy(y, np.log(combined)) == max(path)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()


def test_stacking_is_fitted_on_validation_outputs_only(vector_task, monkeypatch):
    seen = []
    real = ens.fit_stacking

    def spy(outs, y, classes, seed):
        seen.append((outs.shape, y.copy()))
        return real(outs, y, classes, seed)

    monkeypatch.setattr(ens, "fit_stacking", spy)
    step = {
        "members": "bagging",
        "k": 2,
        "combine": "stacking",
        "folders": [],
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 5},
    }
    model, report = ens.ensemble_(None, step, vector_task, seed=0)
    ((shape, y),) = seen
    assert shape[:2] == (2, len(vector_task.val)) and np.array_equal(y, vector_task.val.y)
    assert model.meta is not None and report["members"] == 2


@pytest.mark.parametrize("combine", ["weighted", "greedy", "stacking"])
def test_a_fitted_combination_is_scored_on_validation_out_of_fold(combine):
    """Members that are pure noise: a combination fitted on the validation rows looks better
    than chance there (it fits the noise); scored out of fold it does not."""
    accuracy = METRICS.get("accuracy")
    in_sample, crossed = [], []
    for r in range(12):
        rng = np.random.default_rng(r)
        outs = rng.normal(size=(8, 60, 2)).astype(np.float32)
        y = rng.integers(0, 2, 60)

        def fit(o, t, r=r):
            return ens.fit_combination(o, t, combine, True, metric="accuracy", seed=r)

        in_sample.append(accuracy(y, ens.combined_outputs(fit(outs, y), outs, True)))
        out = ens.cross_fitted(outs, y, True, fit, seed=r)
        assert out.shape == (60, 2)
        crossed.append(accuracy(y, out))
    assert np.mean(in_sample) - np.mean(crossed) > 0.04
    assert abs(np.mean(crossed) - 0.5) < 0.06


@pytest.mark.parametrize("combine", ["weighted", "stacking", "average"])
def test_the_ensemble_reports_its_cross_fitted_validation_outputs(vector_task, combine):
    step = {
        "members": "bagging",
        "k": 3,
        "combine": combine,
        "folders": [],
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 5},
    }
    held: dict = {}
    model, report = ens.ensemble_(None, step, vector_task, seed=0, held_out=held)
    accuracy = METRICS.get("accuracy")
    y = vector_task.val.y
    if combine == "average":  # nothing fitted: the model's own validation outputs count
        assert held == {} and "validation" not in report
        return
    assert held["val"].shape == (len(y), vector_task.n_outputs)
    said = report["validation"]
    assert said["folds"] == 5 and said["cross_fitted"] == pytest.approx(accuracy(y, held["val"]))
    # the in-sample figure is the saved model's own score on validation
    in_sample = accuracy(y, tidian.metrics.predict(model, vector_task.val.x))
    assert said["in_sample"] == pytest.approx(in_sample)
    # fixed weights are not fitted: nothing to cross-fit
    fixed: dict = {}
    if combine == "weighted":
        ens.ensemble_(None, {**step, "weights": [1, 1, 2]}, vector_task, seed=0, held_out=fixed)
        assert fixed == {}


def test_bad_ensembles_are_clear_errors():
    with pytest.raises(ConfigError, match="at least 2 members"):
        ens.EnsembleConfig(k=1)
    with pytest.raises(ConfigError, match="positive sum"):
        ens.EnsembleConfig(k=2, combine="weighted", weights=[0, 0])
    with pytest.raises(ConfigError, match="one weight per member"):
        ens.EnsembleConfig(k=3, combine="weighted", weights=[1, 2])
    with pytest.raises(ConfigError, match="at least two members"):
        tidian.create_model("ensemble", tidian.load_task("iris"), members=[{"name": "mlp"}])
    model = _ens([[[1.0, 0.0]], [[0.0, 1.0]]], "weighted")
    with pytest.raises(ConfigError, match="non-negative"):
        model.set_weights([1.0, -1.0])
    with pytest.raises(RecipeError, match="stages\\[0\\].ensemble"):
        validate_recipe(
            {"task": "iris", "model": {"name": "mlp"}, "stages": [{"ensemble": {"k": 1}}]}
        )


def test_members_with_different_outputs_are_refused(vector_task, monkeypatch):
    class Wide(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 7)

    loads = iter([tidian.create_model("linear", vector_task), Wide()])
    monkeypatch.setattr(ens, "_member_spec", lambda folder: {"name": "linear"})
    monkeypatch.setattr(ens, "load_model", lambda folder: next(loads))
    step = {"members": "top", "k": 2, "combine": "average", "folders": ["a", "b"], "model": {}}
    with pytest.raises(ConfigError, match="different shapes"):
        ens.ensemble_(None, step, vector_task, seed=0)


@pytest.mark.parametrize("members", ["seeds", "bagging", "snapshot"])
def test_trained_members_build_a_saveable_ensemble(vector_task, members, tmp_path):
    step = {
        "members": members,
        "k": 3,
        "combine": "average",
        "folders": [],
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 6, "lr": 0.01},
    }
    torch.manual_seed(0)
    parent = tidian.create_model("mlp", vector_task, hidden=[8])
    model, report = ens.ensemble_(parent, step, vector_task, seed=0)
    model.cpu()  # members come back on the training device
    assert report["members"] == 3 and len(model.members) == 3
    if members == "seeds":
        assert model.members[0] is parent
    outs = [m(torch.from_numpy(vector_task.test.x)) for m in model.members]
    assert not torch.equal(outs[0], outs[1])  # members differ
    restored = load_model(save_model(model, tmp_path / "e"))
    x = torch.from_numpy(vector_task.test.x)
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)


@pytest.mark.slow  # a whole pipeline run
def test_ensemble_stage_end_to_end_then_distilled(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    recipe = {
        "task": {"name": "iris"},
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 20, "lr": 0.01},
        "evaluate": {"seeds": 3},
        "stages": [
            {"architecture": {"candidates": [{"name": "mlp", "hidden": [16]}, {"name": "linear"}]}},
            {"ensemble": {"members": "top", "k": 3, "combine": ["average", "greedy", "vote"]}},
            {
                "distill": {
                    "student": {"name": "linear"},
                    "teacher": "incumbent",
                    "compare_alone": False,
                }
            },
        ],
    }
    result = pipeline.run(recipe, store=store)
    rows = [r for r in result.candidates if r["stage"] == "ensemble"]
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
    for row in rows:
        assert len(row["quality"]["per_seed"]) == 3 and row["gate"]["n"] == 3
        assert row["cost"]["runtime"] == "onnxruntime"  # one ONNX graph, measured as such
        assert row["cost"]["export_check"]["passed"]
        assert "adjusted for" not in row["reason"]  # no Holm: one combination is gated
    # greedy is fitted on validation, yet its validation scores are cross-fitted: the stage
    # chooses one combination on them and gates it alone
    chosen = [r for r in rows if "chosen on validation from 3 candidates" in r["reason"]]
    assert len(chosen) == 1
    assert all("not chosen" in r["reason"] for r in rows if r is not chosen[0])
    greedy = next(r for r in rows if r["label"].endswith("greedy"))
    recorded = greedy["quality"]["summary"]["val"]["accuracy"]["values"]
    crossed = [
        json.loads((seed_folder(Path(greedy["artifact"]).parent, s) / REPORT_FILE).read_text())[0][
            "ensemble"
        ]["validation"]["cross_fitted"]
        for s in greedy["quality"]["units"]
    ]
    assert recorded == pytest.approx(crossed)
    architecture = [r for r in result.candidates if r["stage"] == "architecture"]
    assert any("chosen on validation from 2 candidates" in r["reason"] for r in architecture)
    average = next(r for r in rows if r["label"].endswith("average"))
    assert average["cost"]["params"] == sum(
        r["cost"]["params"] for r in result.candidates if r["stage"] in ("baseline", "architecture")
    )
    distilled = next(r for r in result.candidates if r["stage"] == "distill")
    assert distilled["status"] == "done" and distilled["model"]["name"] == "linear"


def test_compressed_members_save_and_load(tmp_path):
    from tidian.compression.lowrank import lowrank_
    from tidian.compression.prune import prune_

    task = tidian.load_task("digits")
    torch.manual_seed(0)
    pruned, _ = prune_(
        tidian.create_model("mlp", task, hidden=[32]),
        {"amount": 0.5, "structured": True, "finetune_epochs": 0},
        task,
        train={"epochs": 1},
        seed=0,
    )
    factored, _ = lowrank_(
        tidian.create_model("mlp", task, hidden=[32, 32]),
        {"energy": 0.5, "finetune_epochs": 0},
        task,
        train={"epochs": 1},
        seed=0,
    )
    model = tidian.create_model(
        "ensemble",
        task,
        members=[{"name": "mlp", "hidden": [32]}, {"name": "mlp", "hidden": [32, 32]}],
    )
    model.members[0], model.members[1] = pruned, factored
    x = torch.from_numpy(task.test.x[:8])
    restored = load_model(save_model(model, tmp_path / "a"))
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    again = load_model(save_model(restored, tmp_path / "b"))  # and once more, from the loaded one
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_members_without_weight_are_dropped(vector_task, monkeypatch):
    monkeypatch.setattr(ens, "fit_weights", lambda outs, y, classes: np.array([0.0, 0.6, 0.4]))
    step = {
        "members": "bagging",
        "k": 3,
        "combine": "weighted",
        "folders": [],
        "model": {"name": "linear"},
        "train": {"epochs": 2},
    }
    model, report = ens.ensemble_(None, step, vector_task, seed=0)
    assert report["kept"] == [1, 2] and len(model.members) == 2
    assert model.weights.tolist() == pytest.approx([0.6, 0.4])
    monkeypatch.setattr(ens, "fit_weights", lambda outs, y, classes: np.array([0.0, 1.0, 0.0]))
    single, report = ens.ensemble_(None, step, vector_task, seed=0)
    assert not isinstance(single, Ensemble) and report["kept"] == [1]


def test_boosting_members_are_lightgbm_as_tensors(tmp_path):
    import lightgbm as lgb

    from tidian.models.trees import GBDT, from_lightgbm

    task = tidian.load_task("breast_cancer")
    booster = lgb.LGBMClassifier(n_estimators=40, verbose=-1, random_state=0)
    booster.fit(task.train.x, task.train.y)
    trees = from_lightgbm(booster, task)
    raw = booster.predict(task.test.x, raw_score=True)
    out = trees(torch.as_tensor(task.test.x)).numpy()
    np.testing.assert_allclose(out[:, 1] - out[:, 0], raw, atol=1e-5)  # LightGBM's own scores
    torch.manual_seed(0)
    parent = tidian.create_model("mlp", task, hidden=[8])
    tidian.fit(parent, task, {"epochs": 5}, seed=0)
    step = {
        "members": "boosting",
        "k": 3,
        "combine": "average",
        "folders": [],
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 5},
        "lightgbm": {"n_estimators": 30},
    }
    model, _ = ens.ensemble_(parent, step, task, seed=0)
    assert model.members[0] is parent and all(isinstance(m, GBDT) for m in model.members[1:])
    x = torch.as_tensor(task.test.x)
    restored = load_model(save_model(model, tmp_path / "e"))
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    assert tidian.export_onnx(model, task, tmp_path / "e.onnx").passed


@pytest.mark.parametrize("kind", ["classes", "values"])
def test_xgboost_models_convert_exactly(kind, regression_task):
    import xgboost as xgb

    from tidian.models.trees import train_boosting

    task = tidian.load_task("iris") if kind == "classes" else regression_task
    model = train_boosting("xgboost", task, {"n_estimators": 20}, seed=0)
    params = {
        "n_estimators": 20,
        "learning_rate": 0.05,
        "max_depth": 4,
        "random_state": 0,
        "n_jobs": 1,
    }
    ref = (xgb.XGBClassifier if kind == "classes" else xgb.XGBRegressor)(**params)
    ref.fit(task.train.x, task.train.y)
    margin = ref.get_booster().predict(xgb.DMatrix(task.test.x), output_margin=True)
    out = model(torch.as_tensor(task.test.x)).numpy()
    np.testing.assert_allclose(out.reshape(margin.shape), margin, atol=1e-4)
