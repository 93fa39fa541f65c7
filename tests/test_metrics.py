import re

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import tidian
from tidian import ConfigError, UnknownNameError
from tidian.metrics import (
    METRICS,
    accuracy,
    check_metrics,
    ece,
    row_groups,
    row_pseudo_values,
    softmax,
)

rng = np.random.default_rng(0)
Y = rng.integers(0, 4, size=200)
LOGITS = rng.normal(size=(200, 4)) + 2.0 * np.eye(4)[Y]
PROBA = softmax(LOGITS)
PRED = PROBA.argmax(1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("accuracy", skm.accuracy_score(Y, PRED)),
        ("balanced_accuracy", skm.balanced_accuracy_score(Y, PRED)),
        ("f1_macro", skm.f1_score(Y, PRED, average="macro")),
        ("precision_macro", skm.precision_score(Y, PRED, average="macro")),
        ("recall_macro", skm.recall_score(Y, PRED, average="macro")),
        ("roc_auc", skm.roc_auc_score(Y, PROBA, multi_class="ovr")),
        ("log_loss", skm.log_loss(Y, PROBA)),
    ],
)
def test_classification_metrics_agree_with_sklearn(name, expected):
    assert METRICS.get(name)(Y, LOGITS) == pytest.approx(expected, rel=1e-9)


def test_binary_roc_auc_uses_the_positive_class():
    y = np.array([0, 0, 1, 1, 1, 0])
    logits = np.stack([np.zeros(6), np.array([-1.0, 0.2, 0.5, 2.0, 0.1, -0.3])], 1)
    expected = skm.roc_auc_score(y, softmax(logits)[:, 1])
    assert METRICS.get("roc_auc")(y, logits) == pytest.approx(expected)
    assert np.isnan(METRICS.get("roc_auc")(np.zeros(6, int), logits))  # one class: undefined


def test_regression_metrics_agree_with_sklearn():
    y = rng.normal(size=50)
    out = (y + rng.normal(scale=0.3, size=50))[:, None]
    assert METRICS.get("rmse")(y, out) == pytest.approx(np.sqrt(skm.mean_squared_error(y, out)))
    assert METRICS.get("mae")(y, out) == pytest.approx(skm.mean_absolute_error(y, out))
    assert METRICS.get("r2")(y, out) == pytest.approx(skm.r2_score(y, out))


def test_ece_on_known_data():
    # Two bins with confidence 0.9 (accuracy 0.5) and 0.6 (accuracy 1.0), equal weight:
    # ECE = 0.5 * |0.5 - 0.9| + 0.5 * |1.0 - 0.6| = 0.4
    p_hi, p_lo = np.log([0.9, 0.1]), np.log([0.6, 0.4])
    logits = np.array([p_hi, p_hi, p_lo, p_lo])
    y = np.array([0, 1, 0, 0])
    assert ece(y, logits) == pytest.approx(0.4)
    # perfectly confident and right: zero
    assert ece(np.array([0, 1]), np.array([[50.0, 0.0], [0.0, 50.0]])) == pytest.approx(0.0)


def test_metric_name_and_kind_checks():
    with pytest.raises(UnknownNameError, match="accuracy"):
        check_metrics(["acuracy"], "classes")
    with pytest.raises(ConfigError, match="metric 'rmse' is for values"):
        check_metrics(["rmse"], "classes")


def test_confusion_matrix_and_report(vector_task):
    torch.manual_seed(0)
    model = tidian.create_model("mlp", vector_task, hidden=[16])
    tidian.fit(model, vector_task, {"epochs": 20, "lr": 0.01, "batch_size": 16})
    cm = tidian.confusion_matrix(model, vector_task)
    assert cm.shape == (3, 3) and cm.sum() == len(vector_task.test)
    acc = tidian.score(model, vector_task, metrics=["accuracy"])["accuracy"]
    assert np.trace(cm) / cm.sum() == pytest.approx(acc)
    report = tidian.classification_report(model, vector_task)
    assert set(report) >= {"c0", "c1", "c2", "macro avg"}
    assert report["c0"]["support"] == int((vector_task.test.y == 0).sum())


@pytest.mark.parametrize(
    ("amount", "metric", "reference", "units"),
    [
        (0.005, "accuracy", 0.9, 0.005),  # a number: the metric's own units
        ("0.5pt", "accuracy", 0.9, 0.005),  # points of a fraction metric
        ("2 points", "f1_macro", 0.5, 0.02),
        ("1%", "rmse", 56.0, 0.56),  # a percent of the reference's score
        ("10%", "accuracy", 0.8, 0.08),
        (0.5, "rmse", 56.0, 0.5),
        ("1e1%", "mae", 2.0, 0.2),
    ],
)
def test_an_amount_of_quality_is_read_one_way(amount, metric, reference, units):
    from tidian.metrics import quality_amount

    assert quality_amount(amount, metric, reference, "margin") == pytest.approx(units)


@pytest.mark.parametrize(
    ("amount", "metric", "message"),
    [
        ("1pt", "rmse", "rmse has none"),
        (-0.1, "accuracy", "not negative"),
        ("five%", "accuracy", "not negative; got 'five%'"),
        (True, "accuracy", "got True"),
        (float("nan"), "rmse", "got nan"),
        (0.5, "accuracy", "write '0.5pt' for 0.5 points"),  # guarded: once read in points
    ],
)
def test_an_amount_that_cannot_be_read_is_refused(amount, metric, message):
    from tidian.metrics import quality_amount

    with pytest.raises(ConfigError, match=re.escape(message)):
        quality_amount(amount, metric, 1.0, "tolerance", guard=True)


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("classes", ["accuracy", "log_loss", "f1_macro", "ece"]),
        ("values", ["rmse", "mae", "r2"]),
    ],
)
def test_row_pseudo_values_are_the_delete_a_group_jackknife(kind, names):
    rng = np.random.default_rng(0)
    n = 123  # not a multiple of the 50 groups
    y = rng.integers(0, 3, n) if kind == "classes" else rng.normal(size=n)
    out = rng.normal(size=(n, 3 if kind == "classes" else 1))
    pseudo = row_pseudo_values(y, out, names)
    groups = row_groups(n)
    assert len(groups) == 50 and sorted(np.concatenate(groups)) == list(range(n))
    for name in names:
        metric = METRICS.get(name)
        theta = metric(y, out)
        expected = [
            50 * theta - 49 * metric(np.delete(y, g), np.delete(out, g, axis=0)) for g in groups
        ]
        assert pseudo[name] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # for a mean over rows, each pseudo-value is near its group's own mean (exact for equal
    # groups) and they average to the score
    if kind == "classes":
        assert np.mean(pseudo["accuracy"]) == pytest.approx(accuracy(y, out), abs=2e-3)
    # too few rows for any spread: nothing
    assert row_pseudo_values(y[:1], out[:1], names) == {}
