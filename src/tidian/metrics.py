"""Quality metrics, registered by name, computed with scikit-learn from model outputs.

A metric takes ``(y_true, outputs)`` where outputs are the model's raw outputs: class logits
(N, k) — turned into probabilities here — or values (N, 1). Each entry records whether higher
is better and which target kind it applies to, which the gate and early stopping rely on.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn

from tidian.exceptions import ConfigError
from tidian.registry import Registry

METRICS: Registry[Callable[[np.ndarray, np.ndarray], float]] = Registry(
    "metric", listing="tidian metrics"
)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _classes(name: str, greater: bool = True):
    return METRICS.register(name, target="classes", greater_is_better=greater)


def _values(name: str, greater: bool = False):
    return METRICS.register(name, target="values", greater_is_better=greater)


@_classes("accuracy")
def accuracy(y: np.ndarray, out: np.ndarray) -> float:
    """Fraction of correct predictions."""
    # NumPy, not skm.accuracy_score: this runs after every epoch of every training, and
    # scikit-learn's input checks cost ~0.3 ms a call against ~5 µs here (same value; tested).
    return float((out.argmax(1) == y).mean()) if len(y) else float("nan")


@_classes("balanced_accuracy")
def balanced_accuracy(y: np.ndarray, out: np.ndarray) -> float:
    """Mean recall over classes (robust to class imbalance)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # absent classes: sklearn warns, the value is defined
        return float(skm.balanced_accuracy_score(y, out.argmax(1)))


@_classes("f1_macro")
def f1_macro(y: np.ndarray, out: np.ndarray) -> float:
    """Unweighted mean of per-class F1."""
    return float(
        skm.f1_score(
            y, out.argmax(1), average="macro", labels=np.arange(out.shape[1]), zero_division=0
        )
    )


@_classes("precision_macro")
def precision_macro(y: np.ndarray, out: np.ndarray) -> float:
    """Unweighted mean of per-class precision."""
    return float(
        skm.precision_score(
            y, out.argmax(1), average="macro", labels=np.arange(out.shape[1]), zero_division=0
        )
    )


@_classes("recall_macro")
def recall_macro(y: np.ndarray, out: np.ndarray) -> float:
    """Unweighted mean of per-class recall."""
    return float(
        skm.recall_score(
            y, out.argmax(1), average="macro", labels=np.arange(out.shape[1]), zero_division=0
        )
    )


@_classes("roc_auc")
def roc_auc(y: np.ndarray, out: np.ndarray) -> float:
    """Area under the ROC curve; one-vs-rest macro average for more than two classes.

    NaN when the split lacks a class (the area is undefined then).
    """
    proba = softmax(out)
    if len(np.unique(y)) < proba.shape[1]:
        return float("nan")
    if proba.shape[1] == 2:
        return float(skm.roc_auc_score(y, proba[:, 1]))
    return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(proba.shape[1])))


@_classes("log_loss", greater=False)
def log_loss(y: np.ndarray, out: np.ndarray) -> float:
    """Cross-entropy of the predicted probabilities (lower is better)."""
    return float(skm.log_loss(y, softmax(out), labels=np.arange(out.shape[1])))


@_classes("ece", greater=False)
def ece(y: np.ndarray, out: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: |accuracy - confidence| averaged over 15 confidence bins.

    Written here because scikit-learn has reliability curves but no ECE; equal-width bins
    over the top-class probability, weighted by bin size (Guo et al. 2017).
    """
    proba = softmax(out)
    confidence = proba.max(1)
    correct = proba.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


@_values("rmse")
def rmse(y: np.ndarray, out: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(skm.mean_squared_error(y, out[:, 0])))


@_values("mae")
def mae(y: np.ndarray, out: np.ndarray) -> float:
    """Mean absolute error."""
    return float(skm.mean_absolute_error(y, out[:, 0]))


@_values("r2", greater=True)
def r2(y: np.ndarray, out: np.ndarray) -> float:
    """Coefficient of determination."""
    return float(skm.r2_score(y, out[:, 0]))


DEFAULT_METRICS = {
    "classes": ("accuracy", "balanced_accuracy", "f1_macro", "log_loss", "ece"),
    "values": ("rmse", "mae", "r2"),
}


def greater_is_better(metric: str) -> bool:
    return bool(METRICS.entry(metric).meta["greater_is_better"])


def check_metrics(names: Sequence[str], target_kind: str) -> list[str]:
    """Resolve metric names for a target kind; unknown or mismatched names are errors."""
    out = []
    for name in names:
        entry = METRICS.entry(name)
        if entry.meta["target"] != target_kind:
            fits = ", ".join(e.name for e in METRICS.entries() if e.meta["target"] == target_kind)
            raise ConfigError(
                f"metric {name!r} is for {entry.meta['target']} targets but the "
                f"task has {target_kind}; use one of {fits}."
            )
        out.append(name)
    return out


def compute_metrics(y: np.ndarray, outputs: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    return {name: METRICS.get(name)(y, outputs) for name in names}


# Metrics that are a function of a mean over rows: (each row's value, the function of their
# mean). Their leave-a-group-out values come from sums in one pass; any other metric is
# recomputed without each group (the same numbers, slower).
_ROW_MEANS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], Callable]] = {
    "accuracy": (lambda y, out: (out.argmax(1) == y).astype(np.float64), lambda m: m),
    "log_loss": (
        lambda y, out: (
            -np.log(np.clip(softmax(out.astype(np.float64))[np.arange(len(y)), y], 1e-15, 1.0))
        ),
        lambda m: m,
    ),
    "mae": (lambda y, out: np.abs(y - out[:, 0]).astype(np.float64), lambda m: m),
    "rmse": (lambda y, out: ((y - out[:, 0]) ** 2).astype(np.float64), np.sqrt),
}
ROW_GROUPS = 50


def row_groups(n: int, groups: int = ROW_GROUPS) -> list[np.ndarray]:
    """The test rows split into ``min(groups, n)`` groups of near-equal size, the same for
    every model and seed (a fixed shuffle, so rows stored in class order spread evenly)."""
    order = np.random.default_rng(0).permutation(n)
    return [order[g :: min(groups, n)] for g in range(min(groups, n))]


def row_pseudo_values(
    y: np.ndarray, outputs: np.ndarray, names: Sequence[str], groups: int = ROW_GROUPS
) -> dict[str, list[float]]:
    """Each metric's delete-a-group jackknife pseudo-values over the test rows,
    ``G·θ − (G−1)·θ₋g`` for ``G`` fixed row groups: for a mean over rows (accuracy) exactly
    the group's own mean. Their spread across groups is how much the score owes to which rows
    happened to be in the test set: what a gate adds to the seeds' variance when every seed
    is scored on the same rows (``stats.mean_variance``). Fewer than 2 rows: none."""
    n = len(y)
    if n < 2:
        return {}
    parts = row_groups(n, groups)
    g = len(parts)
    out = {}
    for name in names:
        theta = METRICS.get(name)(y, outputs)
        if name in _ROW_MEANS:
            per_row, of_mean = _ROW_MEANS[name]
            values = per_row(y, outputs)
            total = values.sum()
            without = np.array([of_mean((total - values[p].sum()) / (n - len(p))) for p in parts])
        else:
            keep = np.ones(n, dtype=bool)
            without = np.empty(g)
            for i, p in enumerate(parts):
                keep[p] = False
                without[i] = METRICS.get(name)(y[keep], outputs[keep])
                keep[p] = True
        pseudo = g * theta - (g - 1) * without
        if np.isfinite(pseudo).all():  # an undefined score without some group (AUC): none
            out[name] = [float(v) for v in pseudo]
    return out


@torch.no_grad()
def predict(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Raw model outputs for ``x`` in eval mode, batched, as a float32 NumPy array."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x)
    outs = [
        model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)
    ]
    model.train(was_training)
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()


def score(
    model: nn.Module,
    task: Any,
    split: str = "test",
    metrics: Sequence[str] | None = None,
    *,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Metrics of ``model`` on one split of ``task`` (defaults: the task kind's standard set)."""
    part = getattr(task, split)
    names = check_metrics(metrics or DEFAULT_METRICS[task.target_kind], task.target_kind)
    return compute_metrics(part.y, predict(model, part.x, batch_size=batch_size), names)


def confusion_matrix(model: nn.Module, task: Any, split: str = "test") -> np.ndarray:
    """Rows: true class, columns: predicted class (all task classes, in order)."""
    part = getattr(task, split)
    pred = predict(model, part.x).argmax(1)
    return skm.confusion_matrix(part.y, pred, labels=np.arange(task.n_classes))


def classification_report(model: nn.Module, task: Any, split: str = "test") -> dict[str, Any]:
    """Per-class precision, recall, F1 and support (scikit-learn's report as a dict)."""
    part = getattr(task, split)
    pred = predict(model, part.x).argmax(1)
    return skm.classification_report(
        part.y,
        pred,
        labels=np.arange(task.n_classes),
        target_names=list(task.class_names),
        output_dict=True,
        zero_division=0,
    )


# Metrics that are fractions in [0, 1], where people speak of "points" (0.5 points = 0.005).
FRACTION_METRICS = frozenset(
    {
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "precision_macro",
        "recall_macro",
        "roc_auc",
        "ece",
    }
)


def bounds(metric: str) -> tuple[float, float] | None:
    """The range a metric's values lie in, when it has one (fractions: [0, 1]): what an
    interval for its mean is kept within."""
    return (0.0, 1.0) if metric in FRACTION_METRICS else None


# How much quality a margin, a minimum effect or a tolerance is, written one way everywhere:
# a number in the metric's own units (accuracy 0.005, rmse 0.5), points of a fraction metric
# ("0.5pt": half a percentage point of accuracy) or a percent of the reference's score ("1%":
# a hundredth of the baseline's rmse). Points and percents keep a recipe meaningful across
# metrics: a regression's rmse of 56 is not gated at 0.01.
_AMOUNT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*(pt|points?|%)\s*")
AMOUNT_FORMS = (
    "a number in the metric's units, points of a fraction metric ('0.5pt') or a percent of "
    "the reference's score ('1%')"
)


def check_amount(value: Any, what: str) -> None:
    """Refuse what cannot be an amount of quality (see ``_AMOUNT``), before any metric is known."""
    if isinstance(value, bool) or not (
        (isinstance(value, int | float) and math.isfinite(value) and value >= 0)
        or (isinstance(value, str) and _AMOUNT.fullmatch(value))
    ):
        raise ConfigError(f"{what}: {AMOUNT_FORMS}, not negative; got {value!r}.")


def quality_amount(
    value: Any, metric: str, reference: float | None, what: str, *, guard: bool = False
) -> float:
    """An amount of quality in ``metric``'s units. ``reference``: the score a percent is of
    (the incumbent's mean). ``guard``: refuse a bare number of 0.1 or more on a fraction
    metric (ten points), which a setting once read in points (a tolerance of 0.5) would be."""
    check_amount(value, what)
    if not isinstance(value, str):
        if guard and metric in FRACTION_METRICS and value >= 0.1:
            raise ConfigError(
                f"{what}: {value:g} in {metric} units is {value * 100:g} points; write "
                f"'{value:g}pt' for {value:g} points (a bare number is in the metric's units)."
            )
        return float(value)
    match = _AMOUNT.fullmatch(value)
    assert match is not None  # checked above
    amount = float(match.group(1)) * 10.0 ** int(match.group(2) or 0)
    if match.group(3) == "%":
        if reference is None or not math.isfinite(reference):
            raise ConfigError(f"{what}: a percent needs a reference score; give a number.")
        return amount / 100.0 * abs(reference)
    if metric not in FRACTION_METRICS:
        raise ConfigError(
            f"{what}: points are hundredths of a fraction metric (accuracy, F1…); {metric} "
            f"has none: give a number in {metric} units or a percent of the baseline ('1%')."
        )
    return amount / 100.0


def default_amount(metric: str, points: float) -> str:
    """A default margin: ``points`` points on a fraction metric, else 1% of the reference."""
    return f"{points:g}pt" if metric in FRACTION_METRICS else "1%"
