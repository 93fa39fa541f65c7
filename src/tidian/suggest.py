"""A recipe you do not have to write: ``tidian recipe suggest TASK`` and ``tidian run --task``.

The suggestion is built from what the task is — its input kind, its target, how many training
rows it has — and from the optional features installed (a stage whose extra is missing is
left out and the recipe says so in a comment). It is plain recipe data, printed so a person
can keep and edit it; nothing here decides anything a recipe could not say.

* tables (vector inputs): a linear baseline solved by scikit-learn (``glm``: logistic or ridge
  regression; the loop's Adam fit of ``linear`` stopped 1.4–3.9 points short of it on the
  small sets of ``bench/vs_autogluon.py``, see ``models/mlp.py``); an RBF SVM (below 20,000
  training rows), an MLP and the tree families — extra trees, random forest, LightGBM,
  XGBoost, CatBoost — as architecture candidates, quickest first (``ORDER``); a tuning stage
  over the boosting families' main hyperparameters (Optuna); a weighted ensemble of the run's
  five best candidates (what AutoGluon ends with); a refit of a single winner on training +
  validation rows; then int8 quantisation of the winner (ONNX Runtime), gated for
  non-inferiority;
* sequences: the zoo's MLP against a 1-D CNN and a GRU (the quick start's recipe);
* images: an MLP against a 2-D CNN;
* text: a bag of embeddings against a 1-D CNN over token embeddings.

Seeds: 5 below 2,000 training rows (small test sets need them), else 3 — except a small
table, which is evaluated by cross-validation (``evaluate: {seeds: 2, folds: 5, repeated:
true}``, 10 units): its one test split is a few dozen to a few hundred rows, and a gate on
them cannot tell a 1–2 point gain from the rows' luck (digits' extra trees +2.0 pt [−0.2,
+4.2] on 360 test rows with 5 seeds). With folds every row outside the holdout is a test row
once per seed; on digits the same recipe's CatBoost gain was then shown (+1.3 pt [+0.1,
+2.5], p = 0.016, where 5 seeds on the test split gave p = 0.094). Both from
``bench/vs_autogluon.py --sets digits --keep DIR`` and ``tidian show`` of the run. Tree
families train in seconds on such tables, so the 10 units cost little; the networks of the
other kinds keep seeds.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import yaml

from tidian.exceptions import ConfigError
from tidian.models.kernels import MAX_ROWS
from tidian.models.trees import FAMILIES
from tidian.recipe import validate_recipe
from tidian.tasks import load_task, task_target

SMALL = 2_000  # training rows below which a run gets 5 seeds and smaller batches
CV_FOLDS, CV_SEEDS = 5, 2  # a small table: 2 seeds × 5 folds (repeated k-fold), 10 units


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# what tune searches: the boosting families' main knobs (AutoGluon's search ranges, roughly)
_TUNED = [
    {
        "name": "lightgbm",
        "num_leaves": {"int": [8, 128], "log": True},
        "learning_rate": {"float": [0.01, 0.2], "log": True},
        "min_child_samples": {"int": [3, 50], "log": True},
        "colsample_bytree": {"float": [0.5, 1.0]},
    },
    {
        "name": "catboost",
        "depth": {"int": [4, 8]},
        "learning_rate": {"float": [0.02, 0.2], "log": True},
        "l2_leaf_reg": {"float": [1.0, 10.0], "log": True},
    },
]


# The table families in the order they train: the quick ones first, so that a time limit
# cuts the slow ones rather than the cheap ones. Seconds a CV unit (median over its 10) in
# one `bench/vs_autogluon.py --time-limit 3m --keep DIR` run, breast_cancer / digits: svm
# 0.02 / 0.05, mlp 0.1 / 0.4, extra trees 0.3 / 1.0, random forest 0.4 / 1.0, LightGBM
# 0.2 / 4.0, XGBoost 0.2 / 7.0, CatBoost 1.1 / 8.5 (in the old order digits' time ran out
# before the forests, the MLP and any later stage).
ORDER = ("svm", "mlp", "extra_trees", "random_forest", "lightgbm", "xgboost", "catboost")


def _tabular_families(rows: int, notes: list[str]) -> list[dict[str, Any]]:
    """The architecture stage's candidates for a table of ``rows`` training rows: every tree
    family whose library is installed, an MLP, and an RBF SVM below its row limit; quickest
    first (``ORDER``)."""
    families = [{"name": n} for n, lib in FAMILIES.items() if _installed(lib)]
    missing = [n for n, lib in FAMILIES.items() if not _installed(lib)]
    if missing:
        notes.append(
            f"no {', '.join(missing)} candidates: not installed (pip install 'tidian[boost]')"
        )
    families.append({"name": "mlp", "hidden": [128, 64], "dropout": 0.1})
    if rows <= MAX_ROWS:
        families.append({"name": "svm"})
    else:
        notes.append(
            f"no svm candidate: {rows:,} training rows, above its max_rows ({MAX_ROWS:,}; its "
            "training time grows with the square of the rows)"
        )
    return sorted(families, key=lambda f: ORDER.index(f["name"]))


def suggest_recipe(task: str | dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(recipe, notes)`` for ``task`` (a built-in name, ``{name: ...}`` or ``{path: ...,
    target: ...}``): a validated recipe as plain data, and what was left out and why."""
    target, options = task_target(task)
    loaded = load_task(target, **options)
    rows = len(loaded.train)
    small = rows < SMALL
    kind = loaded.input_kind
    notes: list[str] = []
    recipe: dict[str, Any] = {
        "task": task,
        "evaluate": {"seeds": 5 if small else 3},
    }
    batch = 32 if small else 128
    if kind == "vector":
        if small:  # every row outside the holdout a test row once a seed (module docstring)
            recipe["evaluate"] = {"seeds": CV_SEEDS, "folds": CV_FOLDS, "repeated": True}
        recipe["model"] = {"name": "glm"}
        recipe["train"] = {  # the mlp candidate's (glm and the tree families ignore it)
            "optimizer": "adam",
            "lr": 0.01,
            "epochs": 60 if small else 20,
            "batch_size": batch,
            "patience": 10,
        }
        candidates = _tabular_families(rows, notes)
        stages: list[dict[str, Any]] = [{"architecture": {"candidates": candidates}}]
        search = [b for b in _TUNED if _installed(FAMILIES[b["name"]])]
        if _installed("optuna") and search:
            stages.append(
                {"tune": {"space": {"model": {"choice": search}}, "trials": 20, "top_k": 2}}
            )
        elif search:
            notes.append("no tune stage: Optuna is not installed (pip install 'tidian[tune]')")
        else:
            notes.append(
                "no tune stage: it searches LightGBM and CatBoost, and neither is installed "
                "(pip install 'tidian[boost]')"
            )
        stages.append({"ensemble": {"members": "top", "k": 5, "combine": ["greedy", "weighted"]}})
        # the winner again on training + validation rows (skipped when an ensemble won)
        stages.append({"refit": {}})
    elif kind == "sequence":
        recipe["model"] = {"name": "mlp", "hidden": [100, 100], "residual": True}
        recipe["train"] = {"optimizer": "adam", "lr": 0.01, "epochs": 30, "batch_size": batch}
        stages = [
            {
                "architecture": {
                    "candidates": [
                        {"name": "cnn1d", "width": 32, "depth": 3, "pool": True, "norm": "batch"},
                        {"name": "gru", "hidden": 32, "bidirectional": True, "readout": "mean"},
                    ],
                    "train": {"lr": 0.003, "schedule": "cosine"},
                }
            }
        ]
    elif kind == "image":
        recipe["model"] = {"name": "mlp", "hidden": [128]}
        recipe["train"] = {"optimizer": "adam", "lr": 0.003, "epochs": 20, "batch_size": batch}
        stages = [{"architecture": {"candidates": [{"name": "cnn2d", "width": 32}]}}]
    elif kind == "text":
        recipe["model"] = {"name": "embedding_bag"}
        recipe["train"] = {"optimizer": "adam", "lr": 0.003, "epochs": 20, "batch_size": batch}
        stages = [{"architecture": {"candidates": [{"name": "cnn1d", "width": 64}]}}]
    else:  # pragma: no cover - every task kind is one of the above
        raise ConfigError(f"no suggestion for {kind!r} inputs; write a recipe instead.")
    if _installed("onnxruntime"):
        stages.append({"quantize": {"mode": "dynamic"}})
    else:
        notes.append("no quantisation: ONNX Runtime is not installed (pip install 'tidian[onnx]')")
    recipe["stages"] = stages
    validate_recipe(recipe)  # a suggestion is a recipe like any other
    return recipe, notes


def recipe_text(recipe: dict[str, Any], notes: list[str], about: str) -> str:
    """The suggestion as a YAML file a person can keep: what it was made for, what was left
    out, then the recipe."""
    head = [f"# A recipe suggested for {about} (tidian recipe suggest); edit it freely."]
    head += [f"# {note}" for note in notes]
    body = yaml.safe_dump(recipe, sort_keys=False, width=100, default_flow_style=None)
    return "\n".join(head) + "\n" + body
