"""Calibration: reliability data, temperature and vector scaling, the calibrate stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tidian
from conftest import make_task
from tidian.evaluation.calibration import fit_scaling, fold_scaling, reliability
from tidian.exceptions import ConfigError
from tidian.metrics import ece, predict
from tidian.models import create_model
from tidian.stages.calibrate import CalibrateConfig, calibrate_


def _overconfident(n: int = 4000, k: int = 4, seed: int = 0):
    """Logits whose softmax says ~99% while the labels agree ~70% of the time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(k, size=n)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(k, size=n))
    logits = rng.normal(scale=0.3, size=(n, k))
    logits[np.arange(n), pred] += 6.0
    return logits.astype(np.float32), y


def test_temperature_scaling_lowers_ece_and_never_changes_a_prediction():
    logits, y = _overconfident()
    scale, bias = fit_scaling(logits[:2000], y[:2000], "temperature")
    assert np.all(scale == scale[0]) and np.all(bias == 0) and 1 / scale[0] > 2  # T > 2
    calibrated = logits[2000:] * scale + bias
    assert ece(y[2000:], calibrated) < 0.3 * ece(y[2000:], logits[2000:])
    assert np.array_equal(calibrated.argmax(1), logits[2000:].argmax(1))


def test_vector_scaling_fits_per_class_and_lowers_the_nll():
    logits, y = _overconfident(seed=1)
    logits[:, 2] -= 2.0  # one class under-predicted: a per-class bias can fix it
    scale, bias = fit_scaling(logits[:2000], y[:2000], "vector")
    assert len(set(np.round(scale, 4))) > 1 and abs(bias[2]) > 0.5

    def nll(z):
        z = torch.as_tensor(z, dtype=torch.float64)
        return float(torch.nn.functional.cross_entropy(z, torch.as_tensor(y[2000:])))

    assert nll(logits[2000:] * scale + bias) < 0.7 * nll(logits[2000:])


def test_folding_into_the_head_equals_scaling_the_logits():
    task = make_task("vector")
    model = create_model("mlp", task, width=8).eval()
    x = task.test.x
    before = predict(model, x)
    scale, bias = np.array([0.5, 2.0, 1.5]), np.array([0.1, -0.2, 0.3])
    fold_scaling(model, scale, bias)
    np.testing.assert_allclose(predict(model, x), before * scale + bias, rtol=1e-5, atol=1e-5)


def test_reliability_bins_add_up():
    logits, y = _overconfident(n=500)
    data = reliability(y, logits, bins=10)
    assert sum(b["count"] for b in data["bins"]) == 500 and len(data["bins"]) == 10
    top = data["bins"][-1]
    assert top["confidence"] > 0.95 and top["accuracy"] < 0.8  # over-confident
    assert data["ece"] == pytest.approx(ece(y, logits, 10))


def test_errors():
    with pytest.raises(ConfigError, match="calibrate.method"):
        CalibrateConfig(method="platt")
    from conftest import make_regression

    regression = make_regression()
    model = create_model("mlp", regression, width=4)
    with pytest.raises(ConfigError, match="zoo classifier's output head"):
        calibrate_(model, {"method": "temperature"}, regression)


@pytest.mark.parametrize("family", ["svm", "random_forest"])
def test_a_model_without_a_head_is_refused_before_anything_trains(family, tmp_path):
    import tidian

    recipe = {"task": "iris", "model": {"name": family}, "stages": [{"calibrate": {}}]}
    store = tidian.Store(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(ConfigError, match=r"stages\[0\]\.calibrate: .*tree or svm model"):
        tidian.run(recipe, store=store)
    assert store.runs() == []  # refused before the run started


@pytest.mark.slow  # a whole pipeline run
def test_calibrate_stage_in_a_run(tmp_path):
    """An MLP trained long on digits is over-confident; temperature scaling, fitted on the
    validation split, must lower the test ECE with the accuracy untouched, seed by seed."""
    recipe = {
        "task": "digits",
        "model": {"name": "mlp", "width": 64},
        # CPU float32: the over-confidence measured here is that of float32 training
        "train": {"epochs": 60, "lr": 3e-3, "device": "cpu"},
        # the task's whole validation split to fit on and its whole test split to judge (a
        # holdout takes a quarter of each: 225-row splits, where the test ECE of this MLP,
        # about 0.02, is within the noise)
        "evaluate": {"seeds": 3, "holdout": 0},
        "deploy": {"runtime": "torch"},
        "stages": [{"calibrate": {"method": ["temperature", "vector"]}}],
    }
    result = tidian.run(recipe, store=f"sqlite:///{tmp_path / 'l.db'}")
    base = result.baseline
    rows = {c["label"]: c for c in result.candidates}
    temp = rows["calibrate temperature"]
    assert temp["quality"]["per_seed"] == base["quality"]["per_seed"]  # same predictions
    ece_of = lambda row: row["quality"]["summary"]["test"]["ece"]["mean"]  # noqa: E731
    assert ece_of(temp) < ece_of(base)
    assert temp["gate"]["metric"] == "ece" and "kept" in temp["gate"]
    assert "accuracy" in temp["reason"]
    history = tidian.Store(result.store).seed_results(temp["id"])[0]["history"]
    (step,) = history["transform"]["steps"]
    report = step["calibrate"]
    assert report["temperature"] > 1  # the over-confident model is cooled
    assert report["val_log_loss_after"] < report["val_log_loss_before"]
