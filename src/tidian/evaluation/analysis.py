"""Error analysis and learning curves, as plain data (what a report renders, what tests check).

* :func:`error_analysis` — the most confidently wrong examples, the most confused class pairs,
  and for tabular tasks the quality by feature slice (worst first);
* :func:`flips` — for a candidate against the incumbent on the same rows: the examples it newly
  gets right and newly gets wrong;
* :func:`learning_curve` — quality against the fraction of the training split used (stratified,
  seeded subsets; every fraction on the same seeds), to answer "would more data help?".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tidian.evaluation.evaluate import model_factory, own_executor, train_jobs
from tidian.evaluation.stats import summarize
from tidian.exceptions import ConfigError, bad_value
from tidian.metrics import bounds, check_metrics, softmax
from tidian.training.config import TrainConfig


def _probabilities(out: np.ndarray) -> np.ndarray:
    return softmax(out)


def error_analysis(
    task: Any, outputs: np.ndarray, *, split: str = "test", top: int = 10, slices: int = 4
) -> dict[str, Any]:
    """What a classifier gets wrong on ``split``, given its outputs (logits) for that split."""
    if task.target_kind != "classes":
        raise ConfigError("error analysis here is for classification tasks.")
    part = getattr(task, split)
    if len(outputs) != len(part):
        raise bad_value("outputs", f"one row per {split} example ({len(part)})", len(outputs))
    names = list(task.class_names)
    proba = _probabilities(outputs)
    pred, confidence = proba.argmax(1), proba.max(1)
    wrong = np.flatnonzero(pred != part.y)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:top]
    confident_wrong = [
        {
            "row": int(i),
            "label": names[int(part.y[i])],
            "predicted": names[int(pred[i])],
            "confidence": float(confidence[i]),
        }
        for i in order
    ]
    k = len(names)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (part.y, pred), 1)
    pairs = [
        {"true": names[a], "predicted": names[b], "count": int(matrix[a, b])}
        for a in range(k)
        for b in range(k)
        if a != b and matrix[a, b]
    ]
    pairs.sort(key=lambda p: -p["count"])
    return {
        "split": split,
        "accuracy": float((pred == part.y).mean()),
        "errors": len(wrong),
        "confident_wrong": confident_wrong,
        "confused_pairs": pairs[:top],
        "confusion": matrix.tolist(),
        "slices": _slices(task, part, pred == part.y, slices)
        if task.input_kind == "vector"
        else [],
    }


def _slices(task: Any, part: Any, correct: np.ndarray, bins: int) -> list[dict[str, Any]]:
    """Accuracy per slice of each feature: quantile bins of numeric features (cut on the
    values the model sees, shown in the units the data was read in), one slice per category
    of one-hot groups."""
    names = list(task.feature_names or [f"x{j}" for j in range(part.x.shape[1])])
    out: list[dict[str, Any]] = []
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        if "=" in name:  # one-hot column "column=value"
            groups.setdefault(name.split("=", 1)[0], []).append(j)
            continue
        values = part.x[:, j]
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
        if len(edges) < 2:
            continue
        index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        shown = task.preprocess.to_raw(j, edges)
        shown = edges if shown is None else shown
        for b in range(len(edges) - 1):
            members = index == b
            if members.any():
                out.append(
                    {
                        "feature": name,
                        "slice": f"[{shown[b]:.4g}, {shown[b + 1]:.4g}]",
                        "count": int(members.sum()),
                        "accuracy": float(correct[members].mean()),
                    }
                )
    for column, cols in groups.items():
        for j in cols:
            members = part.x[:, j] > 0.5
            if members.any():
                out.append(
                    {
                        "feature": column,
                        "slice": names[j].split("=", 1)[1],
                        "count": int(members.sum()),
                        "accuracy": float(correct[members].mean()),
                    }
                )
    overall = float(correct.mean())
    for row in out:
        row["gap"] = row["accuracy"] - overall
    out.sort(key=lambda r: (r["accuracy"], -r["count"]))
    return out


def flips(y: np.ndarray, incumbent: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Rows the candidate newly gets right and newly gets wrong (outputs of the same rows)."""
    before, after = incumbent.argmax(1) == y, candidate.argmax(1) == y
    right, wrong = np.flatnonzero(~before & after), np.flatnonzero(before & ~after)
    return {
        "newly_right": right.tolist(),
        "newly_wrong": wrong.tolist(),
        "net": int(len(right) - len(wrong)),
    }


def subsample(task: Any, fraction: float, seed: int) -> Any:
    """The task with a stratified, seeded ``fraction`` of its training split."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction <= 1:
        raise bad_value("fraction", "a number in (0, 1]", fraction)
    if fraction == 1:
        return task
    n = len(task.train)
    keep = max(2, round(fraction * n))
    stratify = task.train.y if task.target_kind == "classes" else None
    try:
        index, _ = train_test_split(
            np.arange(n), train_size=keep, random_state=seed, stratify=stratify
        )
    except ValueError:  # too few rows per class to stratify
        index, _ = train_test_split(np.arange(n), train_size=keep, random_state=seed)
    index = np.sort(index)
    return dataclasses.replace(task, train=task.train.take(index))


def learning_curve(
    model: Any,
    task: Any,
    config: Any = None,
    *,
    fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    seeds: int | Sequence[int] = 3,
    metric: str | None = None,
    n_jobs: int = 1,
    executor: Any = None,
    progress: Callable[[int, int], None] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Test (and validation) quality of ``model`` trained on growing shares of the training
    split: ``{"metric", "seeds", "points": [{fraction, rows, mean, low, high, per_seed,
    val_mean}]}``. Each seed draws its own subset, and the same seeds are used at every
    fraction. All (fraction, seed) trainings go to one executor (``executor``, or a new one
    with ``n_jobs`` workers); ``progress(done, total)`` follows them."""

    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise bad_value("seeds", "at least one seed", seeds)
    metric = metric or task.metric
    names = check_metrics([metric], task.target_kind)
    config = TrainConfig.coerce(config)
    _, make = model_factory(model)
    fractions = sorted({float(f) for f in fractions})
    jobs = train_jobs(
        make,
        [
            ((fraction, seed), subsample(task, fraction, seed), seed)
            for fraction in fractions
            for seed in seed_list
        ],
        config,
        names,
        resources=resources,
    )
    results: dict[tuple[float, int], Any] = {}
    with own_executor(executor, min(n_jobs, len(jobs))) as runner:
        for job, run in runner.run(jobs):
            results[job.key] = (run, len(job.task.train))
            if progress is not None:
                progress(len(results), len(jobs))
    points = []
    for fraction in fractions:
        runs = [results[(fraction, seed)] for seed in seed_list]
        per_seed = [r.scores["test"][metric] for r, _ in runs]
        val = [r.scores["val"][metric] for r, _ in runs if "val" in r.scores]
        s = summarize(per_seed, bounds=bounds(metric))
        points.append(
            {
                "fraction": fraction,
                "rows": runs[0][1],  # the same size for every seed
                "mean": s.mean,
                "low": s.low,
                "high": s.high,
                "per_seed": per_seed,
                "val_mean": float(np.mean(val)) if val else None,
            }
        )
    return {"metric": metric, "seeds": seed_list, "points": points}
