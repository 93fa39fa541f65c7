"""Finding problems in a task's data, as plain data: duplicate rows (exact and near), rows of
the validation or test split that also sit in the training split (leakage), outlying values,
and training labels that look wrong.

Label issues follow confident learning (Northcutt et al., 2021) through ``cleanlab``: a
model's *out-of-fold* predicted probabilities for every training row (each row predicted by a
model that never trained on it, :func:`out_of_fold`) are compared with per-class confidence
thresholds; rows whose given label disagrees confidently are suspects, ranked by how little
probability the model gives their label.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidian.evaluation.evaluate import model_factory, own_executor, train_jobs
from tidian.exceptions import ConfigError, require
from tidian.metrics import softmax
from tidian.training.config import TrainConfig


def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), -1))


def _keys(x: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in _flat(x)]


def duplicates(task: Any, *, near: float = 0.0) -> dict[str, Any]:
    """Exact duplicate rows in the training split (and those among them with conflicting
    labels), training rows that reappear in validation or test (leakage), and — with
    ``near > 0`` — rows of validation/test within that Euclidean distance (in the standardised
    units the model sees) of a training row."""
    train = _keys(task.train.x)
    first: dict[bytes, int] = {}
    repeats, conflicts = [], []
    for i, key in enumerate(train):
        if key in first:
            repeats.append(i)
            if task.train.y[i] != task.train.y[first[key]]:
                conflicts.append([first[key], i])
        else:
            first[key] = i
    leakage, leaked_train = {}, set()
    for split in ("val", "test"):
        part = getattr(task, split)
        keys = _keys(part.x)
        rows = {i for i, key in enumerate(keys) if key in first}
        leaked_train |= {first[keys[i]] for i in rows}
        if near > 0 and len(part):
            from sklearn.neighbors import NearestNeighbors

            nn = NearestNeighbors(n_neighbors=1).fit(_flat(task.train.x).astype(np.float64))
            dist, index = nn.kneighbors(_flat(part.x).astype(np.float64))
            close = np.flatnonzero(dist[:, 0] <= near)
            rows |= set(close.tolist())
            leaked_train |= set(index[close, 0].tolist())
        leakage[split] = sorted(rows)
    return {
        "repeated_rows": repeats,  # training rows that repeat an earlier one (removable)
        "conflicting_labels": conflicts,
        "leaked": leakage,  # rows of val/test that are (near) copies of training rows
        "leaked_train_rows": sorted(leaked_train),  # their training counterparts
    }


def outliers(task: Any, *, z: float = 6.0) -> dict[str, Any]:
    """Training rows with a feature beyond ``z`` standard deviations of its training mean
    (vector and sequence inputs)."""
    if task.input_kind == "text":
        return {"z": z, "rows": [], "note": "not defined for token ids"}
    x = _flat(task.train.x).astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    scores = np.abs((x - mean) / std).max(1)
    rows = np.flatnonzero(scores > z)
    return {"z": z, "rows": rows[np.argsort(-scores[rows])].tolist()}


def out_of_fold(
    model: Any,
    task: Any,
    config: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    executor: Any = None,
    progress: Any = None,
    resources: dict[str, Any] | None = None,
) -> np.ndarray:
    """Predicted class probabilities for every training row, each from a model trained on
    the other ``folds − 1`` folds (stratified) of the training split."""
    from sklearn.model_selection import StratifiedKFold

    if task.target_kind != "classes":
        raise ConfigError("label-noise detection is for classification tasks.")
    y = task.train.y
    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    folds = max(2, min(folds, smallest))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    _, make = model_factory(model)
    config = TrainConfig.coerce(config)
    parts, held = [], {}
    for f, (rest, out) in enumerate(splitter.split(np.zeros(len(y)), y)):
        part = task.replace(
            train=task.train.take(rest),
            test=task.train.take(out),
        )
        held[f] = out
        parts.append((f, part, seed * 100 + f))
    # each worker sends back its model's outputs on the held-out fold (its test split)
    jobs = train_jobs(make, parts, config, ["accuracy"], outputs=["test"], resources=resources)
    proba = np.zeros((len(y), task.n_classes), dtype=np.float64)
    with own_executor(executor, 1) as runner:
        for done, (job, run) in enumerate(runner.run(jobs), start=1):
            proba[held[job.key]] = softmax(run.info["outputs"]["test"])
            if progress is not None:
                progress(done, len(jobs))
    return proba


def label_issues(y: np.ndarray, proba: np.ndarray, names: Any = None) -> list[dict[str, Any]]:
    """Training rows whose label looks wrong given out-of-fold ``proba``, most suspect first:
    ``[{row, label, suggested, self_confidence}]`` (cleanlab's confident learning)."""
    require("cleanlab", "clean", "label-noise detection")
    from cleanlab.filter import find_label_issues

    rows = find_label_issues(
        np.asarray(y), proba, return_indices_ranked_by="self_confidence", n_jobs=1
    )
    name = (lambda c: names[int(c)]) if names is not None else int
    return [
        {
            "row": int(i),
            "label": name(y[i]),
            "suggested": name(proba[i].argmax()),
            "self_confidence": float(proba[i, y[i]]),
        }
        for i in rows
    ]
