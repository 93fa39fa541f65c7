"""Error analysis, flips against the incumbent, and learning curves."""

from __future__ import annotations

import numpy as np
import pytest

import tidian
from conftest import make_task
from tidian.evaluation.analysis import error_analysis, flips, learning_curve, subsample
from tidian.exceptions import ConfigError


def _outputs(y: np.ndarray, wrong: dict[int, tuple[int, float]], k: int = 3) -> np.ndarray:
    """Logits right for every row except ``wrong[row] = (predicted class, its logit)``."""
    out = np.zeros((len(y), k), dtype=np.float32)
    out[np.arange(len(y)), y] = 2.0
    for row, (cls, logit) in wrong.items():
        out[row] = 0.0
        out[row, cls] = logit
    return out


def test_most_confident_errors_and_confused_pairs():
    task = make_task("vector", n=100)
    y = task.test.y
    zeros = [i for i in range(len(y)) if y[i] == 0][:3]
    rows = [*zeros, next(i for i in range(len(y)) if y[i] == 1)]
    wrong = {rows[0]: (2, 9.0), rows[1]: (2, 3.0), rows[2]: (2, 5.0), rows[3]: (0, 4.0)}
    report = error_analysis(task, _outputs(y, wrong), top=10)
    assert report["errors"] == 4
    assert [w["row"] for w in report["confident_wrong"]] == [rows[0], rows[2], rows[3], rows[1]]
    assert report["confident_wrong"][0]["label"] == "c0"
    assert report["confident_wrong"][0]["predicted"] == "c2"
    assert report["confused_pairs"][0] == {"true": "c0", "predicted": "c2", "count": 3}
    assert sum(map(sum, report["confusion"])) == len(y)


def test_slices_find_the_weak_region():
    """Errors only where feature x1 is large: the worst slice must be x1's top quantile."""
    task = make_task("vector", n=400)
    y, x = task.test.y, task.test.x
    top = x[:, 1] > np.quantile(x[:, 1], 0.75)
    wrong = {int(i): (int((y[i] + 1) % 3), 5.0) for i in np.flatnonzero(top)}
    report = error_analysis(task, _outputs(y, wrong), slices=4)
    worst = report["slices"][0]
    assert worst["feature"] == "x1" and worst["accuracy"] == 0.0 and worst["gap"] < -0.5


def test_flips_against_the_incumbent():
    y = np.array([0, 1, 2, 0])
    a = _outputs(y, {1: (0, 5.0), 2: (0, 5.0)})
    b = _outputs(y, {2: (0, 5.0), 3: (1, 5.0)})
    assert flips(y, a, b) == {"newly_right": [1], "newly_wrong": [3], "net": 0}


def test_learning_curve_rows_and_quality_grow():
    task = tidian.load_task("digits")
    curve = learning_curve(
        {"name": "mlp", "width": 32}, task, {"epochs": 15}, fractions=[0.05, 1.0], seeds=2
    )
    small, full = curve["points"]
    assert small["rows"] == round(0.05 * len(task.train)) and full["rows"] == len(task.train)
    assert full["mean"] > small["mean"] + 0.1  # more data helps a lot here
    assert len(small["per_seed"]) == 2


def test_subsample_is_stratified_and_seeded():
    task = make_task("vector", n=300)
    a, b = subsample(task, 0.5, 0), subsample(task, 0.5, 0)
    assert np.array_equal(a.train.x, b.train.x)
    assert not np.array_equal(a.train.x, subsample(task, 0.5, 1).train.x)
    # stratified: each class keeps its share of the training split, to one row
    assert np.all(np.abs(np.bincount(a.train.y) - 0.5 * np.bincount(task.train.y)) <= 1)
    with pytest.raises(ConfigError, match="fraction"):
        subsample(task, 0.0, 0)


def test_slices_are_shown_in_the_units_the_data_was_read_in(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 300
    year = rng.integers(2007, 2010, n)
    frame = pd.DataFrame(
        {"year": year, "mass": rng.normal(4000, 500, n), "label": rng.choice(["a", "b"], n)}
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    task = tidian.load_task(str(tmp_path / "t.csv"), target="label")
    y = task.test.y
    report = error_analysis(task, _outputs(y, {}, k=2))
    shown = {s["feature"]: s["slice"] for s in report["slices"]}
    low, high = map(float, shown["year"].strip("[]").split(", "))
    assert 2007 <= low <= high <= 2009  # years, not standardised units like [-0.0424, 1.16]
    mass = [s for s in report["slices"] if s["feature"] == "mass"]
    edges = [float(v) for s in mass for v in s["slice"].strip("[]").split(", ")]
    test_mass = frame.mass.to_numpy()
    assert test_mass.min() - 1 <= min(edges) and max(edges) <= test_mass.max() + 1
