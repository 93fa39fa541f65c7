"""Multi-task learning: loading further targets, heads that get only their own gradients,
uncertainty weights, soft sharing, the stage end to end with the per-target comparison."""

import numpy as np
import pandas as pd
import pytest
import torch

import tidian
import tidian.pipeline as pipeline
from tidian import ConfigError, DataError, Split, Task
from tidian.stages.multitask import Multitask, MultitaskConfig, MultiTaskStep, multitask_
from tidian.store import Store


def _frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return pd.DataFrame(
        {
            **{f"f{i}": x[:, i] for i in range(4)},
            "label": np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no"),
            "amount": (2 * x[:, 1] + x[:, 2]).astype(np.float32) * 10 + 50,  # related quantity
            "noise": rng.normal(size=n).astype(np.float32),  # unrelated to the inputs
            "colour": np.where(x[:, 3] > 0, "red", "blue"),
        }
    )


@pytest.fixture(scope="module")
def mt_task(tmp_path_factory):
    path = tmp_path_factory.mktemp("mt") / "rows.csv"
    _frame().to_csv(path, index=False)
    return tidian.load_task(path, target="label", targets=["amount", "noise"], drop=["colour"])


def test_further_targets_load_row_for_row(mt_task):
    assert mt_task.aux_targets == {
        "amount": {"kind": "values", "class_names": None},
        "noise": {"kind": "values", "class_names": None},
    }
    assert mt_task.feature_names == ("f0", "f1", "f2", "f3")  # targets are not features
    for split in (mt_task.train, mt_task.val, mt_task.test):
        assert set(split.aux) == {"amount", "noise"} and len(split.aux["amount"]) == len(split)


def test_mismatched_target_lengths_are_refused():
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1])
    bad = Split(x, y, {"b": np.zeros(3, np.float32)})
    with pytest.raises(DataError, match="same length"):
        Task(
            "t",
            bad,
            bad,
            bad,
            "vector",
            "classes",
            ("a", "b"),
            "accuracy",
            aux_targets={"b": {"kind": "values", "class_names": None}},
        )


def _model(task, sharing="hard"):
    aux = [{"name": n, "kind": "values", "n_outputs": 1} for n in ("amount", "noise")]
    torch.manual_seed(0)
    return tidian.create_model(
        "multitask", task, base={"name": "mlp", "hidden": [16]}, aux=aux, sharing=sharing
    )


def test_each_head_gets_only_its_targets_gradient(mt_task):
    model = _model(mt_task)
    x = torch.as_tensor(mt_task.train.x[:16])
    main = model.forward_all(x)[0]
    main.sum().backward()
    assert all(p.grad is None for p in model.heads.parameters())
    assert model.main_head.linear.weight.grad is not None
    model.zero_grad(set_to_none=True)
    model.forward_all(x)[1].sum().backward()
    assert model.main_head.linear.weight.grad is None and model.heads[1].linear.weight.grad is None
    assert model.heads[0].linear.weight.grad is not None
    assert all(p.grad is not None for p in model.trunk.blocks.parameters())  # shared body


def test_uncertainty_weighting_weighs_the_noisy_target_down(mt_task):
    config = {
        "model": {
            "name": "multitask",
            "base": {"name": "mlp", "hidden": [32]},
            "aux": [{"name": n, "kind": "values", "n_outputs": 1} for n in ("amount", "noise")],
            "sharing": "hard",
        },
        "train": {"epochs": 60, "lr": 0.01},
        "weighting": "uncertainty",
        "single_task": False,
    }
    _, report = multitask_(None, config, mt_task, seed=0)
    _, amount, noise = report["log_vars"]
    assert noise > amount + 0.5  # larger learned variance: a smaller weight exp(-s)
    relative = {  # RMSE in each target's own standard deviations
        n: report["targets"][n]["multitask"] / mt_task.test.aux[n].std()
        for n in ("amount", "noise")
    }
    assert relative["amount"] < 0.3 < 0.8 < relative["noise"]


def test_soft_sharing_pulls_towers_together(mt_task):
    model = _model(mt_task, "soft")
    before = float(model.tower_distance().detach())
    config = {"train": {"epochs": 1}, "weighting": "fixed", "soft_penalty": 10.0}
    step = MultiTaskStep(model, mt_task, config)  # each call below is a whole epoch
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.as_tensor(mt_task.train.x), torch.as_tensor(mt_task.train.y)
    for _ in range(20):
        opt.zero_grad()
        step(model, x, y, torch.arange(len(y))).backward()
        opt.step()
    assert float(model.tower_distance().detach()) < before
    assert len(step.history) == 20  # one epoch mean of each target's loss per pass


def test_stage_checks_its_targets(mt_task, vector_task):
    with pytest.raises(ConfigError, match=r"\['price'\] are not further targets"):
        Multitask(MultitaskConfig(targets=["price"])).check(mt_task)
    with pytest.raises(ConfigError, match="targets=\\[...\\]"):
        Multitask(MultitaskConfig(targets=["amount"])).check(vector_task)
    with pytest.raises(ConfigError, match="weights"):
        MultitaskConfig(targets=["a"], weighting="fixed", weights=[1.0])


@pytest.mark.slow  # a whole pipeline run
def test_multitask_stage_end_to_end(tmp_path):
    path = tmp_path / "rows.csv"
    _frame().to_csv(path, index=False)
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    recipe = {
        "task": {
            "path": str(path),
            "target": "label",
            "targets": ["amount", "noise"],
            "drop": ["colour"],
        },
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 15, "lr": 0.01},
        "evaluate": {"seeds": 2},
        "stages": [{"multitask": {"targets": ["amount"], "weighting": "dwa"}}],
    }
    result = pipeline.run(recipe, store=store)
    (row,) = [c for c in result.candidates if c["stage"] == "multitask"]
    assert row["status"] == "done" and row["cost"]["export_check"]["passed"]
    for res in store.seed_results(row["id"]).values():
        (step,) = res["history"]["transform"]["steps"]
        target = step["multitask"]["targets"]["amount"]
        assert target["metric"] == "rmse" and target["single_task"] > 0
        assert target["multitask"] > 0
    from tidian.report import collect, render, to_json

    data = to_json(collect(store, result.run_id, analyses=False))
    (shown,) = data["multitask"]
    amount = shown["targets"]["amount"]
    assert len(amount["multitask"]) == 2 and amount["single_task_mean"] > 0
    assert "further targets" in render(data)


def test_reconstruction_is_a_self_supervised_further_target(vector_task):
    from tidian.stages import Context, Proposal

    stage = Multitask(MultitaskConfig(targets=["reconstruction"], weighting="fixed"))
    (proposal,) = stage.run(
        Proposal("b", {"name": "mlp", "hidden": [16]}, {"epochs": 30, "lr": 0.01}),
        Context(vector_task, "accuracy", (0,)),
    )
    model, report = multitask_(None, proposal.transform[0]["multitask"], vector_task, seed=0)
    out = model.cpu().forward_all(torch.as_tensor(vector_task.test.x))[1]
    assert out.shape == vector_task.test.x.shape
    error = report["targets"]["reconstruction"]["multitask"]
    assert error < vector_task.test.x.std()  # better than predicting the mean
    with pytest.raises(ConfigError, match="token ids"):
        from conftest import make_task

        Multitask(MultitaskConfig(targets=["reconstruction"])).check(make_task("text"))


def test_row_changing_steps_keep_further_targets_row_for_row(mt_task):
    # every step that picks, pools or resamples rows must carry the further targets along
    rows = np.array([5, 0, 5, 17])
    part = mt_task.train.take(rows)
    assert np.array_equal(part.aux["amount"], mt_task.train.aux["amount"][rows])
    assert np.array_equal(part.x, mt_task.train.x[rows])
    unit = mt_task.cv_unit(1, 3)
    folds = list(mt_task.kfold(3))
    pooled = {
        float(x[0]): a
        for s in (mt_task.train, mt_task.val, mt_task.test)
        for x, a in zip(s.x, s.aux["amount"])
    }
    for split in (unit.train, unit.val, unit.test, folds[0].train, folds[2].val):
        assert set(split.aux) == {"amount", "noise"} and len(split.aux["noise"]) == len(split)
        assert all(pooled[float(x[0])] == a for x, a in zip(split.x, split.aux["amount"]))


@pytest.mark.slow  # a whole pipeline run
def test_multitask_stage_under_cross_validation(tmp_path):
    path = tmp_path / "rows.csv"
    _frame().to_csv(path, index=False)
    recipe = {
        "task": {"path": str(path), "target": "label", "targets": ["amount"], "drop": ["colour"]},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 3, "lr": 0.01},
        "evaluate": {"seeds": 1, "folds": 2},
        "stages": [{"multitask": {"targets": ["amount"]}}],
    }
    result = pipeline.run(recipe, store=Store(f"sqlite:///{tmp_path / 'm.db'}"))
    (row,) = [c for c in result.candidates if c["stage"] == "multitask"]
    assert row["status"] == "done", row.get("error")
