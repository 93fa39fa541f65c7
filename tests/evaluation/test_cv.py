"""Cross-validation units: folds disjoint, covering and stratified; the corrected interval;
evaluate() and a pipeline run with evaluate.folds."""

import math

import numpy as np
import pytest

import tidian
import tidian.pipeline as pipeline
from tidian import ConfigError
from tidian.evaluation.cv import CV
from tidian.evaluation.stats import confidence_interval, paired_compare
from tidian.recipe import RecipeError, validate_recipe
from tidian.report import collect, render, to_json
from tidian.store import Store


def _rows(split) -> set[bytes]:
    return {row.tobytes() for row in split.x}


def test_units_test_every_row_once_and_are_stratified(vector_task):
    task = vector_task
    pooled = np.concatenate([task.train.x, task.val.x, task.test.x])
    classes = np.bincount(np.concatenate([task.train.y, task.val.y, task.test.y]))
    k = 5
    units = [task.cv_unit(u, k) for u in range(k)]
    tested = [r for u in units for r in _rows(u.test)]
    assert len(tested) == len(pooled) == len(set(tested))  # every row once, no overlap
    for u in units:
        train, val, test = _rows(u.train), _rows(u.val), _rows(u.test)
        assert not (train & val or train & test or val & test)
        assert len(train) + len(val) + len(test) == len(pooled)
        # stratified: each fold holds each class in proportion (within one row)
        expected = classes / k
        assert np.all(np.abs(np.bincount(u.test.y, minlength=len(classes)) - expected) <= 1)
        # the validation share of the original task is kept
        share = len(task.val) / (len(task.train) + len(task.val))
        assert len(u.val) == pytest.approx(share * (len(u.train) + len(u.val)), abs=1)


def test_repeated_folds_reshuffle_per_seed(vector_task):
    same = [vector_task.cv_unit(u, 3).test.x for u in (0, 3)]
    assert np.array_equal(*same)  # one partition: seed 1's fold 0 = seed 0's fold 0
    fresh = [vector_task.cv_unit(u, 3, repeated=True).test.x for u in (0, 3)]
    assert not np.array_equal(*fresh)
    assert CV(3).units([0, 2]) == [0, 1, 2, 6, 7, 8]
    with pytest.raises(ConfigError, match="folds"):
        vector_task.cv_unit(0, 1)


def test_corrected_interval_is_wider_by_the_nadeau_bengio_factor():
    x = [0.80, 0.84, 0.78, 0.86, 0.82, 0.81]
    plain = confidence_interval(x)
    corrected = confidence_interval(x, correction=0.25)
    factor = math.sqrt((1 / 6 + 0.25) / (1 / 6))
    assert (corrected[1] - corrected[0]) == pytest.approx((plain[1] - plain[0]) * factor)
    a, b = [0.8, 0.82, 0.81, 0.83], [0.82, 0.85, 0.82, 0.86]
    assert paired_compare(a, b, correction=0.5).p_ttest > paired_compare(a, b).p_ttest
    with pytest.raises(ConfigError):
        confidence_interval(x, method="bootstrap", correction=0.25)


def test_evaluate_with_folds(vector_task):
    ev = tidian.evaluate("linear", vector_task, {"epochs": 5}, seeds=2, folds=3)
    assert ev.seeds == [0, 1, 2, 3, 4, 5] and ev.folds == 3
    n = len(vector_task.train) + len(vector_task.val) + len(vector_task.test)
    assert ev.correction == pytest.approx((n / 3) / (n * 2 / 3 * 0.75), rel=0.05)
    s = ev["accuracy"]
    plain = confidence_interval(ev.scores())
    assert s.high - s.low > plain[1] - plain[0]


def test_recipe_rules_for_folds():
    base = {"task": "iris", "model": {"name": "linear"}}
    assert validate_recipe({**base, "evaluate": {"seeds": 1, "folds": 3}}).units() == [0, 1, 2]
    with pytest.raises(RecipeError, match="repeated"):
        validate_recipe({**base, "evaluate": {"repeated": True}})
    with pytest.raises(RecipeError, match="corrected t-interval"):
        validate_recipe({**base, "evaluate": {"folds": 3, "ci": "bootstrap"}})


@pytest.mark.slow  # a whole pipeline run
def test_pipeline_gates_on_cv_units(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'cv.db'}")
    recipe = {
        "task": {"name": "iris"},
        "model": {"name": "linear"},
        "train": {"epochs": 3, "lr": 0.01},
        "evaluate": {"seeds": 1, "folds": 4},
        "stages": [{"train_variants": {"candidates": [{"epochs": 60}]}}],
    }
    result = pipeline.run(recipe, store=store)
    base, cand = result.candidates
    assert sorted(store.seed_results(cand["id"])) == [0, 1, 2, 3]
    assert cand["quality"]["folds"] == 4 and cand["quality"]["correction"] > 0.3
    assert cand["gate"]["n"] == 4
    # the gate's interval is the corrected one
    cmp = paired_compare(
        base["quality"]["per_seed"],
        cand["quality"]["per_seed"],
        correction=cand["quality"]["correction"],
    )
    assert cand["gate"]["low"] == pytest.approx(cmp.low)
    # each unit is tested on its own fold: no crossed rows to count
    assert all(r["rows"] is None for r in store.seed_results(cand["id"]).values())
    assert "test rows" not in cand["reason"]
    # each unit was tested on its own fold: 150 rows / 4 folds
    sizes = {round(len(tidian.load_task("iris").cv_unit(u, 4).test)) for u in range(4)}
    assert sizes <= {37, 38}
    # the report's confusion matrix is out-of-fold: every iris row exactly once
    data = collect(store, result.run_id, examples=1)
    assert np.array(data["confusion"]["matrix"]).sum() == 150
    assert data["waterfall"][0]["gain"]["low"] == pytest.approx(cmp.low)
    assert "cross-validation units (4 folds" in render(to_json(data))
