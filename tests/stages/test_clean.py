"""Cleaning: planted duplicates, leakage and flipped labels are found on a small constructed
set; the down-weighted loss is the weighted mean; the stage proposes gated candidates."""

import numpy as np
import pytest
import torch

from tidian import ConfigError, Split, Task, model_spec
from tidian.evaluation.cleaning import duplicates, label_issues, out_of_fold, outliers
from tidian.stages.clean import Clean, CleanConfig, WeightedStep, clean_


def _blobs(n=240, seed=0):
    """Three well separated classes in 2-D: a model learns them perfectly."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[0, 0], [6, 0], [0, 6]], dtype=np.float32)
    x = (centres[y] + rng.normal(scale=0.7, size=(n, 2))).astype(np.float32)
    return x, y


def _task(x, y, val, test):
    return Task("blobs", Split(x, y), val, test, "vector", "classes", ("a", "b", "c"), "accuracy")


def test_planted_duplicates_conflicts_and_leakage_are_found():
    x, y = _blobs(60)
    vx, vy = _blobs(20, seed=1)
    tx, ty = _blobs(20, seed=2)
    x = np.concatenate([x, x[[3, 5]]])  # rows 60, 61 repeat rows 3 and 5
    y = np.concatenate([y, [y[3], (y[5] + 1) % 3]])  # row 61's label disagrees
    tx[7] = x[10]  # test row 7 is training row 10 (leakage)
    vx[2] = x[20] + 1e-4  # validation row 2 is almost training row 20
    task = _task(x, y, Split(vx, vy), Split(tx, ty))
    found = duplicates(task)
    assert found["repeated_rows"] == [60, 61]
    assert found["conflicting_labels"] == [[5, 61]]
    assert found["leaked"] == {"val": [], "test": [7]} and found["leaked_train_rows"] == [10]
    near = duplicates(task, near=0.01)
    assert near["leaked"]["val"] == [2] and set(near["leaked_train_rows"]) == {10, 20}


def test_flipped_labels_are_found_by_confident_learning():
    x, y = _blobs(300)
    flipped = np.arange(0, 300, 20)  # 15 rows, 5%
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + 1) % 3
    vx, vy = _blobs(60, seed=1)
    task = _task(x, noisy, Split(vx, vy), Split(vx, vy))
    proba = out_of_fold({"name": "mlp", "hidden": [16]}, task, {"epochs": 30, "lr": 0.01})
    issues = label_issues(noisy, proba, task.class_names)
    found = {i["row"] for i in issues}
    assert len(found & set(flipped)) >= 13  # recall
    assert len(found - set(flipped)) <= 3  # precision
    first = next(i for i in issues if i["row"] in set(flipped))
    assert first["suggested"] == "abc"[y[first["row"]]]  # the true class is suggested


def test_outliers_are_ranked():
    x, y = _blobs(100)
    x[17, 0] = 500.0
    task = _task(x, y, Split(x[:10], y[:10]), Split(x[:10], y[:10]))
    assert outliers(task, z=6)["rows"] == [17]


def test_downweighted_loss_is_the_weighted_mean():
    losses = {}

    def inner(model, x, y, index):
        losses[len(x)] = x.sum()
        return x.sum() / len(x)  # a mean over the rows given

    light = np.array([False, True, False, True])
    step = WeightedStep(inner, light, 0.25)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    got = step(None, x, x, torch.arange(4))
    assert got.item() == pytest.approx((1 + 3 + 0.25 * (2 + 4)) / (2 + 0.25 * 2))


def test_clean_step_removes_rows(vector_task, monkeypatch):
    import tidian.stages.clean as clean

    seen, real = [], clean.train_new

    def spy(model, task, config, seed, *, data):
        seen.append(len(data.train))
        return real(model, task, config, seed, data=data)

    monkeypatch.setattr(clean, "train_new", spy)
    step = {
        "rows": [0, 1, 2],
        "action": "remove",
        "weight": 0.3,
        "model": {"name": "linear"},
        "train": {"epochs": 2},
    }
    clean_(None, step, vector_task, seed=0)
    assert seen == [len(vector_task.train) - 3]


@pytest.mark.slow  # a whole pipeline run
def test_clean_stage_in_a_run(tmp_path):
    import tidian.pipeline as pipeline
    from tidian.store import Store

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    recipe = {
        "task": "breast_cancer",
        "model": {"name": "linear"},
        "train": {"epochs": 10, "lr": 0.01},
        "evaluate": {"seeds": 2},
        "stages": [{"clean": {"folds": 3}}],
    }
    result = pipeline.run(recipe, store=store)
    report = result.stages[1]["report"]["clean"]
    issues = report["label_issues"]
    cands = [c for c in result.candidates if c["stage"] == "clean"]
    labelled = [c for c in cands if "suspect labels" in c["label"]]
    assert len(labelled) == (2 if issues else 0)
    clipped = [c for c in cands if "clipped" in c["label"]]
    assert len(clipped) == (1 if report["outliers"]["rows"] else 0)
    assert len(cands) == len(labelled) + len(clipped)
    for c in cands:
        assert c["status"] == "done" and c["decision"] in ("accepted", "rejected")
    for c in labelled:
        assert str(len(issues)) in c["label"]
    assert report["duplicates"]["repeated_rows"] == []


def test_a_tree_model_is_cleaned_by_removing_rows_not_by_weighting_them(vector_task):
    from tidian.stages import Context, Proposal
    from tidian.stages.clean import Clean, CleanConfig

    step = {"rows": [0, 1, 2], "action": "remove", "weight": 0.3}
    step.update(model={"name": "extra_trees", "n_estimators": 10}, train={})
    model, report = clean_(None, step, vector_task, seed=0)
    assert model_spec(model).options["source"] == "extra_trees" and report["rows"] == 3
    y = vector_task.train.y.copy()
    y[:6] = (y[:6] + 1) % vector_task.n_classes  # planted label noise
    noisy = vector_task.replace(train=Split(vector_task.train.x, y))
    actions = {}
    for name in ("linear", "extra_trees"):
        proposals = Clean(CleanConfig(folds=2, max_share=1.0)).run(
            Proposal("baseline", {"name": name}, {"epochs": 20}),
            Context(noisy, "accuracy", (0,)),
        )
        actions[name] = sorted(p.transform[0]["clean"]["action"] for p in proposals)
    assert actions == {"linear": ["downweight", "remove"], "extra_trees": ["remove"]}


def test_clean_config_and_task_checks(regression_task):
    with pytest.raises(ConfigError, match="duplicates or label_noise"):
        CleanConfig(duplicates=False, label_noise=False)
    with pytest.raises(ConfigError, match="weight"):
        CleanConfig(weight=1.5)
    with pytest.raises(ConfigError, match="classification"):
        Clean(CleanConfig()).check(regression_task)
    Clean(CleanConfig(label_noise=False)).check(regression_task)


def test_clip_candidate_trains_on_winsorised_inputs(monkeypatch):
    import tidian.stages.clean as clean
    from tidian.stages import Context, Proposal

    x, y = _blobs(120)
    x[5, 0] = 400.0  # a planted outlier
    task = _task(x, y, Split(x[:30], y[:30]), Split(x[:30], y[:30]))
    stage = Clean(CleanConfig(duplicates=True, label_noise=False, outliers=6.0))
    proposals = stage.run(
        Proposal("b", {"name": "linear"}, {"epochs": 2}), Context(task, "accuracy", (0,))
    )
    (clip,) = [p for p in proposals if p.changes.get("clean") == "outliers"]
    seen, real = [], clean.train_new

    def spy(model, t, config, seed, *, data):
        seen.append(data.train.x.copy())
        return real(model, t, config, seed, data=data)

    monkeypatch.setattr(clean, "train_new", spy)
    clean_(None, clip.transform[0]["clean"], task, seed=0)
    (trained,) = seen
    column = x[:, 0].astype(np.float64)
    assert trained[5, 0] == pytest.approx(column.mean() + 6 * column.std(), rel=1e-5)
    assert trained[6, 0] == x[6, 0]  # ordinary values untouched
