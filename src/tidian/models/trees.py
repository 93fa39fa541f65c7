"""Tree ensembles as torch modules: the tabular families users expect (LightGBM, XGBoost,
CatBoost, random forest, extra trees), trained by their own libraries and held as tensors.

A trained ensemble of any of the five libraries becomes one ``trees`` zoo model: every tree
flattened into arrays over its nodes — split feature, threshold, left and right child, leaf
values — padded to the largest tree. It is then a model like any other: saved as safetensors
plus JSON (never pickle), scored, gated, put in an ensemble beside networks, exported.

Two ways to run it, one for each runtime:

* **torch**: all trees walked at once, one level per step (``depth`` steps of gather /
  where), then each tree's leaf vector mapped to the outputs (``group``) and summed;
* **ONNX**: the module exports as ONNX-ML's ``TreeEnsembleRegressor`` (``ai.onnx.ml``), so
  ONNX Runtime runs the trees natively — inside the same graph as whatever surrounds them (an
  ensemble of a network and trees stays one graph). The node is written from the arrays here
  rather than by onnxmltools / skl2onnx: those convert one library's estimator object into a
  graph of its own, where these arrays already hold all five libraries in one form, and the
  mapping is direct. The export check compares the ONNX outputs with the torch walk, and every
  conversion compares the walk with the library's own predictions (``_check``).

Outputs are raw scores the way tidian's models give them: boosting's class logits (binary:
``[0, score]``) or values; a forest's averaged class probabilities as their log (a softmax of
the output gives them back) or its averaged values. Inputs must be finite (tidian's tasks are):
the libraries' missing-value branches are not modelled.

The families (``lightgbm``, ``xgboost``, ``catboost``, ``random_forest``, ``extra_trees``) are
registered zoo models whose options are the library's hyperparameters. ``create_model`` gives
an untrained placeholder; ``training.build.train_new`` (every place tidian trains a new model)
sees its ``fit_with`` and lets the library train it — with early stopping on the validation
split for the boosting libraries, as AutoGluon does — instead of the torch loop. The trained
model's spec is the ``trees`` model with its shape, so it reloads without the library.
Beside the arrays, a boosting family's saved folder keeps the model in its library's own
format (``LIBRARY_FILES``: LightGBM's text, XGBoost's JSON, CatBoost's binary — none of them
pickles), so a user can load it there and go on; tidian never reads those files. The forests
have no such format (scikit-learn's is a pickle) and keep only the arrays.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tidian.exceptions import ConfigError, bad_value, require
from tidian.models.base import (
    FITTED,
    MODELS,
    TABLES,
    Signature,
    refuse_disagreement,
    refuse_multi_target,
    refuse_unseen_classes,
)
from tidian.models.spec import create_model

EPS = 1e-7  # a forest's class probability floor before its log (an empty class)
EARLY_STOP = 50  # boosting rounds without progress on validation before stopping
# each boosting family's own model file kept beside the arrays: lightgbm.Booster(model_file=),
# xgboost.Booster().load_model(), catboost.CatBoost().load_model()
LIBRARY_FILES = {"lightgbm": "lightgbm.txt", "xgboost": "xgboost.json", "catboost": "catboost.cbm"}


class _TreeOp(torch.autograd.Function):
    """ONNX-ML ``TreeEnsembleRegressor`` in an exported graph. In torch it is never called
    for values: only the exporter's trace runs ``forward``, which gives the output's shape."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, attributes: dict[str, Any]) -> torch.Tensor:
        return x.new_zeros(x.shape[0], attributes["n_targets_i"])

    @staticmethod
    def symbolic(g, x, attributes: dict[str, Any]):
        out = g.op("ai.onnx.ml::TreeEnsembleRegressor", x, **attributes)
        # the exporter cannot infer a custom domain's output: (batch, targets), float
        out.setType(x.type().with_sizes([None, attributes["n_targets_i"]]))
        return out


class TreeEnsemble(nn.Module):
    """``trees`` trees of up to ``nodes`` nodes each; leaves hold ``width`` values, mapped to
    the outputs by each tree's ``group`` matrix (boosting: a one-hot for its class; a forest:
    the identity over the number of trees, which averages)."""

    def __init__(
        self,
        trees: int,
        nodes: int,
        depth: int,
        width: int,
        outputs: int,
        binary: bool,
        proba: bool,
    ) -> None:
        super().__init__()
        self.depth, self.outputs, self.binary, self.proba = depth, outputs, binary, proba
        self.register_buffer("feature", torch.zeros(trees, nodes, dtype=torch.long))
        # float64 like the libraries: a float32 threshold could send a row the other way
        self.register_buffer("threshold", torch.zeros(trees, nodes, dtype=torch.float64))
        self.register_buffer("left", torch.zeros(trees, nodes, dtype=torch.long))
        self.register_buffer("right", torch.zeros(trees, nodes, dtype=torch.long))
        self.register_buffer("value", torch.zeros(trees, nodes, width, dtype=torch.float64))
        self.register_buffer("leaf", torch.ones(trees, nodes, dtype=torch.bool))
        self.register_buffer("group", torch.zeros(trees, width, outputs, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(outputs, dtype=torch.float64))  # base margin
        # the trained model in its library's own format, saved beside the weights (models.io)
        self.library_files: dict[str, bytes] = {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # models saved before leaves had a width (``gbdt``): one value per leaf
        for name, axis in (("value", 2), ("group", 1)):
            key = prefix + name
            if key in state_dict and state_dict[key].dim() == 2:
                state_dict[key] = state_dict[key].unsqueeze(axis)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The summed tree outputs (before a forest's log or a binary model's zero column)."""
        x = x.flatten(1).double()
        n, t = x.shape[0], self.feature.shape[0]
        trees = torch.arange(t, device=x.device).unsqueeze(0).expand(n, t)
        node = torch.zeros(n, t, dtype=torch.long, device=x.device)
        for _ in range(self.depth):
            f = self.feature[trees, node]
            go_left = torch.gather(x, 1, f) <= self.threshold[trees, node]
            step = torch.where(go_left, self.left[trees, node], self.right[trees, node])
            node = torch.where(self.leaf[trees, node], node, step)
        leaves = self.value[trees, node]  # (n, t, width)
        return (torch.einsum("ntw,two->no", leaves, self.group) + self.bias).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            score = _TreeOp.apply(x.flatten(1).float(), self.onnx_attributes())
        else:
            score = self.scores(x)
        if self.proba:
            score = score.clamp_min(EPS).log()
        if self.binary:
            return torch.cat([torch.zeros_like(score), score], dim=1)
        return score

    def onnx_attributes(self) -> dict[str, Any]:
        """The ``TreeEnsembleRegressor`` attributes for these trees: only the nodes a tree
        reaches (not the padding); thresholds rounded *down* to float32, so ``x <= t'`` on a
        float32 input decides exactly as ``x <= t`` in float64 does; each leaf's contribution
        to each output (its values through the tree's group)."""
        feature, threshold = self.feature.numpy(), self.threshold.numpy()
        left, right, leaf = self.left.numpy(), self.right.numpy(), self.leaf.numpy()
        contribution = np.einsum("tnw,two->tno", self.value.numpy(), self.group.numpy())
        t32 = threshold.astype(np.float32)
        above = t32.astype(np.float64) > threshold
        t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
        nodes: dict[str, list] = {k: [] for k in ("tree", "id", "feature", "value", "mode")}
        nodes.update(true=[], false=[])
        targets: dict[str, list] = {"tree": [], "node": [], "id": [], "weight": []}
        for t in range(len(feature)):
            queue = [0]
            while queue:
                i = queue.pop()
                nodes["tree"].append(t)
                nodes["id"].append(i)
                if leaf[t, i]:
                    nodes["feature"].append(0)
                    nodes["value"].append(0.0)
                    nodes["mode"].append("LEAF")
                    nodes["true"].append(0)
                    nodes["false"].append(0)
                    weights = contribution[t, i]
                    outs = np.flatnonzero(weights) if weights.any() else [0]
                    for o in outs:
                        targets["tree"].append(t)
                        targets["node"].append(i)
                        targets["id"].append(int(o))
                        targets["weight"].append(float(weights[o]))
                    continue
                nodes["feature"].append(int(feature[t, i]))
                nodes["value"].append(float(t32[t, i]))
                nodes["mode"].append("BRANCH_LEQ")
                nodes["true"].append(int(left[t, i]))
                nodes["false"].append(int(right[t, i]))
                queue += [int(left[t, i]), int(right[t, i])]
        return {
            "n_targets_i": self.outputs,
            "aggregate_function_s": "SUM",
            "post_transform_s": "NONE",
            "base_values_f": [float(b) for b in self.bias],
            "nodes_treeids_i": nodes["tree"],
            "nodes_nodeids_i": nodes["id"],
            "nodes_featureids_i": nodes["feature"],
            "nodes_values_f": nodes["value"],
            "nodes_modes_s": nodes["mode"],
            "nodes_truenodeids_i": nodes["true"],
            "nodes_falsenodeids_i": nodes["false"],
            "target_treeids_i": targets["tree"],
            "target_nodeids_i": targets["node"],
            "target_ids_i": targets["id"],
            "target_weights_f": targets["weight"],
        }


# Kept for models saved before the families: the same module with one value per leaf.
GBDT = TreeEnsemble


@MODELS.register("gbdt", inputs=TABLES, instead="a network", trainable=False)
def gbdt(
    sig: Signature,
    *,
    trees: int = 1,
    nodes: int = 1,
    depth: int = 0,
    binary: bool = False,
) -> nn.Module:
    """A gradient-boosted tree ensemble as tensors, as saved before ``trees`` (read only)."""
    outputs = 1 if binary or sig.target_kind == "values" else sig.n_outputs
    return TreeEnsemble(trees, nodes, depth, 1, outputs, binary, False)


@MODELS.register("trees", inputs=TABLES, instead="a network", trainable=False)
def trees(
    sig: Signature,
    *,
    trees: int = 1,
    nodes: int = 1,
    depth: int = 0,
    width: int = 1,
    binary: bool = False,
    proba: bool = False,
    source: str = "",
    rounds: int = 0,
) -> nn.Module:
    """A trained tree ensemble held as tensors (what a tree family's training gives; the
    options give its shape, the library it came from and its boosting rounds, the saved
    buffers its trees)."""
    outputs = 1 if binary or sig.target_kind == "values" else sig.n_outputs
    return TreeEnsemble(trees, nodes, depth, width, outputs, binary, proba)


# ----------------------------------------------------------------------------- conversion


def _build(
    flat: list[dict[str, Any]],
    task: Any,
    source: str,
    *,
    per_iteration: int = 1,
    **form: Any,
) -> TreeEnsemble:
    """A ``trees`` model holding ``flat`` trees (node arrays). Leaves hold one value (boosting:
    tree ``t`` adds to class ``t % per_iteration``) or a vector over the outputs (``form``:
    ``average`` for forests, ``proba`` for class probabilities)."""
    nodes = max(len(f["feature"]) for f in flat)
    depth = max(f["depth"] for f in flat)
    width = len(np.atleast_1d(flat[0]["value"][0]))
    classes = task.target_kind == "classes"
    binary = classes and width == 1 and per_iteration == 1
    proba = bool(form.get("proba", False))
    model = create_model(
        "trees",
        task,
        trees=len(flat),
        nodes=nodes,
        depth=depth,
        width=width,
        binary=binary,
        proba=proba,
        source=source,
        rounds=len(flat) // per_iteration,
    )
    share = 1.0 / len(flat) if form.get("average") else 1.0
    with torch.no_grad():
        for t, f in enumerate(flat):
            k = len(f["feature"])
            for name in ("feature", "threshold", "left", "right", "leaf"):
                buffer = getattr(model, name)
                buffer[t, :k] = torch.as_tensor(np.asarray(f[name]), dtype=buffer.dtype)
            model.value[t, :k] = torch.as_tensor(
                np.asarray(f["value"], dtype=np.float64).reshape(k, width)
            )
            if width == 1:
                model.group[t, 0, t % per_iteration if per_iteration > 1 else 0] = share
            else:
                model.group[t] = torch.eye(width, dtype=torch.float64) * share
    return model


def _flatten(root: dict[str, Any]) -> dict[str, Any]:
    """One tree (LightGBM's dump layout: ``split_feature``, ``threshold``, ``left_child``,
    ``right_child``, ``leaf_value``) as node arrays, breadth-first; node 0 is the root."""
    out: dict[str, list] = {
        k: [] for k in ("feature", "threshold", "left", "right", "value", "leaf")
    }
    queue, depth = [(root, 0)], 0
    while queue:
        node, level = queue.pop(0)
        depth = max(depth, level)
        i = len(out["feature"])
        leaf = "leaf_value" in node
        for key in out:
            out[key].append(0)
        out["leaf"][i] = leaf
        if leaf:
            out["value"][i] = node["leaf_value"]
            out["threshold"][i] = 0.0
            out["left"][i] = out["right"][i] = i
            continue
        if node.get("decision_type", "<=") != "<=":
            raise ConfigError("only numeric '<=' splits can be converted (no categorical splits).")
        out["feature"][i] = int(node["split_feature"])
        out["threshold"][i] = float(node["threshold"])
        # children are appended after everything already queued: their positions follow
        base = i + len(queue) + 1
        out["left"][i], out["right"][i] = base, base + 1
        queue += [(node["left_child"], level + 1), (node["right_child"], level + 1)]
    return {**out, "depth": depth}


def _check(model: TreeEnsemble, library: np.ndarray, x: np.ndarray, source: str) -> TreeEnsemble:
    """Refuse a conversion whose walk differs from the library's own raw predictions."""
    with torch.no_grad():
        mine = model.scores(torch.as_tensor(x)).double().numpy()
    refuse_disagreement(source, source, mine, library)
    return model


def _table(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(len(x), -1).astype(np.float32)


def from_lightgbm(booster: Any, task: Any, rounds: int | None = None) -> TreeEnsemble:
    """The ``trees`` model holding a LightGBM model's trees (a Booster or sklearn estimator),
    its first ``rounds`` boosting rounds when given (the best round of early stopping)."""
    booster = getattr(booster, "booster_", booster)
    dump = booster.dump_model(num_iteration=rounds)
    per_iteration = int(dump["num_tree_per_iteration"])
    refuse_unseen_classes(task, per_iteration, "LightGBM")
    flat = [_flatten(info["tree_structure"]) for info in dump["tree_info"]]
    model = _build(flat, task, "lightgbm", per_iteration=per_iteration)
    x = _table(task.train.x)
    return _check(model, booster.predict(x, raw_score=True, num_iteration=rounds), x, "LightGBM")


def from_xgboost(booster: Any, task: Any) -> TreeEnsemble:
    """The ``trees`` model holding an XGBoost model's trees (``xgboost-cpu``). XGBoost
    sends a row left when ``x < threshold``; the threshold becomes the largest double below it,
    so ``x <= t'`` decides the same for every float32 input. The base margin is read off the
    model's own margins on the training rows (it must be one constant per output)."""

    import xgboost as xgb

    booster = booster.get_booster() if hasattr(booster, "get_booster") else booster
    dumped = [json.loads(t) for t in booster.get_dump(dump_format="json")]
    classes = task.n_classes if task.target_kind == "classes" else 1
    per_iteration = classes if classes > 2 else 1
    model = _build(
        [_flatten(_from_xgb_node(t)) for t in dumped], task, "xgboost", per_iteration=per_iteration
    )
    x = _table(task.train.x)
    margin = booster.predict(xgb.DMatrix(x), output_margin=True).reshape(len(x), -1)
    with torch.no_grad():
        model.bias.zero_()
        offset = margin - model.scores(torch.as_tensor(x)).double().numpy()
        if np.ptp(offset, axis=0).max() > 1e-3:
            raise ConfigError("could not read the XGBoost model's base margin (not constant).")
        model.bias.copy_(torch.as_tensor(offset.mean(0)))
    return _check(model, margin, x, "XGBoost")


def _from_xgb_node(node: dict[str, Any]) -> dict[str, Any]:
    """An XGBoost dump node as a LightGBM-style node (for :func:`_flatten`)."""
    if "leaf" in node:
        return {"leaf_value": node["leaf"]}
    children = {c["nodeid"]: c for c in node["children"]}
    below = np.nextafter(np.float64(np.float32(node["split_condition"])), -np.inf)
    return {
        "split_feature": int(str(node["split"]).lstrip("f")),
        "threshold": float(below),
        "decision_type": "<=",
        "left_child": _from_xgb_node(children[node["yes"]]),
        "right_child": _from_xgb_node(children[node["no"]]),
    }


def from_catboost(model: Any, task: Any) -> TreeEnsemble:
    """The ``trees`` model holding a CatBoost model's oblivious trees, read from CatBoost's
    own JSON format. A tree of depth d tests split j at level j (``x > border`` sets bit j of
    the leaf's index), so it unfolds into a full binary tree of 2^d leaves."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        model.save_model(path, format="json")
        with open(path) as f:
            doc = json.load(f)
    finally:
        os.unlink(path)
    flat_index = [f["flat_feature_index"] for f in doc["features_info"].get("float_features", [])]
    scale, bias = doc.get("scale_and_bias", [1.0, [0.0]])
    flat = []
    for tree in doc["oblivious_trees"]:
        splits = tree.get("splits") or []
        for s in splits:
            if s.get("split_type") != "FloatFeature":
                raise ConfigError("only numeric CatBoost splits can be converted.")
        depth = len(splits)
        values = np.asarray(tree["leaf_values"], dtype=np.float64).reshape(2**depth, -1) * scale
        flat.append(_unfold(splits, values, flat_index))
    dim = flat[0]["width"]
    refuse_unseen_classes(task, dim if dim > 1 else 1, "CatBoost")
    built = _build(flat, task, "catboost")
    with torch.no_grad():
        built.bias.copy_(torch.as_tensor(np.resize(np.asarray(bias, dtype=np.float64), dim)))
    x = _table(task.train.x)
    return _check(built, model.predict(x, prediction_type="RawFormulaVal"), x, "CatBoost")


def _unfold(splits: list[dict], values: np.ndarray, flat_index: list[int]) -> dict[str, Any]:
    """An oblivious tree as node arrays: internal nodes breadth-first, then its leaves."""
    depth, width = len(splits), values.shape[1]
    internal = 2**depth - 1
    out: dict[str, Any] = {"feature": [], "threshold": [], "left": [], "right": []}
    out.update(value=[], leaf=[], depth=depth, width=width)
    for i in range(internal):
        level = (i + 1).bit_length() - 1
        s = splits[level]
        out["feature"].append(flat_index[s["float_feature_index"]])
        out["threshold"].append(float(s["border"]))
        out["left"].append(2 * i + 1)
        out["right"].append(2 * i + 2)
        out["value"].append(np.zeros(width))
        out["leaf"].append(False)
    for j in range(2**depth):
        # leaf j of the last level: the path's bits, root first, are j's bits high to low;
        # CatBoost numbers the leaf with level l's bit at position l
        path = [(j >> (depth - 1 - level)) & 1 for level in range(depth)]
        index = sum(bit << level for level, bit in enumerate(path))
        out["feature"].append(0)
        out["threshold"].append(0.0)
        out["left"].append(internal + j)
        out["right"].append(internal + j)
        out["value"].append(values[index])
        out["leaf"].append(True)
    return out


def from_forest(forest: Any, task: Any, source: str) -> TreeEnsemble:
    """The ``trees`` model holding a scikit-learn random forest or extra-trees model: each
    tree's arrays taken as they are; classes' leaf fractions averaged (the forest's
    ``predict_proba``), values averaged."""
    classes = task.target_kind == "classes"
    columns = np.asarray(getattr(forest, "classes_", [0]))
    width = task.n_classes if classes else 1
    flat = []
    for estimator in forest.estimators_:
        tree = estimator.tree_
        value = tree.value[:, 0, :].astype(np.float64)
        if classes:  # leaf fractions, laid over the task's classes
            value = value / np.maximum(value.sum(1, keepdims=True), 1e-300)
            spread = np.zeros((len(value), width))
            spread[:, columns.astype(int)] = value
            value = spread
        leaf = tree.children_left < 0
        flat.append(
            {
                "feature": np.where(leaf, 0, tree.feature),
                "threshold": np.where(leaf, 0.0, tree.threshold),
                "left": np.where(leaf, np.arange(len(leaf)), tree.children_left),
                "right": np.where(leaf, np.arange(len(leaf)), tree.children_right),
                "value": value,
                "leaf": leaf,
                "depth": int(tree.max_depth),
            }
        )
    model = _build(flat, task, source, average=True, proba=classes)
    x = _table(task.train.x)
    library = forest.predict_proba(x) if classes else forest.predict(x)
    if classes and library.shape[1] != width:
        spread = np.zeros((len(x), width))
        spread[:, columns.astype(int)] = library
        library = spread
    return _check(model, library, x, source)


# ----------------------------------------------------------------------------- the families


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _fit_lightgbm(
    task: Any, seed: int, params: dict[str, Any], early_stop: bool = True
) -> tuple[nn.Module, dict]:
    lgb = require("lightgbm", "boost", "the lightgbm model")
    classes = task.target_kind == "classes"
    params = {"verbose": -1, **params, "random_state": seed, "n_jobs": _threads()}
    params.update(deterministic=True, force_row_wise=True)
    estimator = (lgb.LGBMClassifier if classes else lgb.LGBMRegressor)(**params)
    early_stop = early_stop and len(task.val) > 0
    fit: dict[str, Any] = {}
    if early_stop:
        x, y = _table(task.val.x), task.val.y
        # LightGBM 4.6 named the validation rows eval_X / eval_y; before, eval_set
        named = "eval_X" in inspect.signature(estimator.fit).parameters
        fit = {"eval_X": (x,), "eval_y": (y,)} if named else {"eval_set": [(x, y)]}
        fit["callbacks"] = [lgb.early_stopping(EARLY_STOP, verbose=False)]
    estimator.fit(_table(task.train.x), task.train.y, **fit)
    rounds = estimator.booster_.current_iteration()
    if early_stop and estimator.best_iteration_:
        rounds = int(estimator.best_iteration_)
    model = from_lightgbm(estimator, task, rounds)
    text = estimator.booster_.model_to_string(num_iteration=rounds)
    model.library_files = {LIBRARY_FILES["lightgbm"]: text.encode()}
    return model, {"rounds": rounds}


def _fit_xgboost(
    task: Any, seed: int, params: dict[str, Any], early_stop: bool = True
) -> tuple[nn.Module, dict]:
    xgb = require("xgboost", "boost", "the xgboost model (the xgboost-cpu package)")
    classes = task.target_kind == "classes"
    params = {**params, "random_state": seed, "n_jobs": _threads(), "tree_method": "hist"}
    early_stop = early_stop and len(task.val) > 0
    fit: dict[str, Any] = {"verbose": False}
    if early_stop:
        params["early_stopping_rounds"] = EARLY_STOP
        fit["eval_set"] = [(_table(task.val.x), task.val.y)]
    estimator = (xgb.XGBClassifier if classes else xgb.XGBRegressor)(**params)
    estimator.fit(_table(task.train.x), task.train.y, **fit)
    booster = estimator.get_booster()
    rounds = booster.num_boosted_rounds()
    if early_stop and getattr(estimator, "best_iteration", None) is not None:
        rounds = int(estimator.best_iteration) + 1
        booster = booster[:rounds]
    model = from_xgboost(booster, task)
    model.library_files = {LIBRARY_FILES["xgboost"]: bytes(booster.save_raw("json"))}
    return model, {"rounds": rounds}


def _fit_catboost(task: Any, seed: int, params: dict[str, Any]) -> tuple[nn.Module, dict]:
    cb = require("catboost", "boost", "the catboost model")
    classes = task.target_kind == "classes"
    params = {**params, "random_seed": seed, "thread_count": _threads()}
    params.update(verbose=False, allow_writing_files=False)
    if classes and task.n_classes > 2:
        params.setdefault("loss_function", "MultiClass")
    estimator = (cb.CatBoostClassifier if classes else cb.CatBoostRegressor)(**params)
    fit: dict[str, Any] = {}
    if len(task.val):
        fit = {
            "eval_set": (_table(task.val.x), task.val.y),
            "early_stopping_rounds": EARLY_STOP,
            "use_best_model": True,
        }
    estimator.fit(_table(task.train.x), task.train.y, **fit)
    model = from_catboost(estimator, task)
    with tempfile.TemporaryDirectory() as folder:  # CatBoost writes its format to a file only
        path = Path(folder) / LIBRARY_FILES["catboost"]
        estimator.save_model(str(path), format="cbm")
        model.library_files = {path.name: path.read_bytes()}
    return model, {"rounds": int(estimator.tree_count_)}


def _fit_forest(
    task: Any, seed: int, params: dict[str, Any], *, extra: bool
) -> tuple[nn.Module, dict]:
    from sklearn import ensemble  # a core dependency

    classes = task.target_kind == "classes"
    kind = ("ExtraTrees" if extra else "RandomForest") + ("Classifier" if classes else "Regressor")
    params = {**params, "random_state": seed, "n_jobs": _threads()}
    estimator = getattr(ensemble, kind)(**params)
    estimator.fit(_table(task.train.x), task.train.y)
    source = "extra_trees" if extra else "random_forest"
    return from_forest(estimator, task, source), {"trees": len(estimator.estimators_)}


class _Unfitted(TreeEnsemble):
    """What ``create_model`` gives for a tree family: no trees yet (outputs are the zero
    base margin) and ``fit_with(task, seed)``, which trains the library's model and returns
    the ``trees`` model holding it, with what the training reported."""

    def __init__(self, sig: Signature, fit: Callable[..., tuple[nn.Module, dict]]) -> None:
        outputs = 1 if sig.target_kind == "values" else sig.n_outputs
        super().__init__(1, 1, 0, 1, outputs, False, False)
        self._fit = fit

    def fit_with(self, task: Any, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        return self._fit(task, seed)


def _family(sig: Signature, name: str, fit: Callable, params: dict[str, Any]) -> nn.Module:
    refuse_multi_target(sig, name)
    return _Unfitted(sig, partial(fit, params=params))


def _params(extra: dict[str, Any] | None, **named: Any) -> dict[str, Any]:
    params = {k: v for k, v in named.items() if v is not None}
    for key in extra or {}:
        if key in named:
            raise bad_value("params", f"library parameters other than {sorted(named)}", key)
    return {**params, **(extra or {})}


_FAMILY = {**FITTED, "instead": "a network (trees take numbers, not token ids)"}


@MODELS.register("lightgbm", **_FAMILY)
def lightgbm(
    sig: Signature,
    *,
    n_estimators: int = 1000,
    learning_rate: float = 0.05,
    num_leaves: int = 31,
    min_child_samples: int = 10,
    subsample: float = 0.8,
    colsample_bytree: float = 0.8,
    reg_lambda: float = 0.0,
    params: dict | None = None,
) -> nn.Module:
    """Gradient-boosted trees by LightGBM (early stopping on validation; ``params``: any
    other LGBM parameter)."""
    named = dict(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves)
    named.update(min_child_samples=min_child_samples, subsample=subsample)
    named.update(colsample_bytree=colsample_bytree, reg_lambda=reg_lambda)
    if subsample < 1:
        named["subsample_freq"] = 1
    return _family(sig, "lightgbm", _fit_lightgbm, _params(params, **named))


@MODELS.register("xgboost", **_FAMILY)
def xgboost(
    sig: Signature,
    *,
    n_estimators: int = 1000,
    learning_rate: float = 0.05,
    max_depth: int = 6,
    min_child_weight: float = 1.0,
    subsample: float = 0.8,
    colsample_bytree: float = 0.8,
    reg_lambda: float = 1.0,
    params: dict | None = None,
) -> nn.Module:
    """Gradient-boosted trees by XGBoost (the xgboost-cpu package; early stopping on
    validation; ``params``: any other XGB parameter)."""
    named = dict(n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth)
    named.update(min_child_weight=min_child_weight, subsample=subsample)
    named.update(colsample_bytree=colsample_bytree, reg_lambda=reg_lambda)
    return _family(sig, "xgboost", _fit_xgboost, _params(params, **named))


@MODELS.register("catboost", **_FAMILY)
def catboost(
    sig: Signature,
    *,
    iterations: int = 1000,
    learning_rate: float = 0.05,
    depth: int = 6,
    l2_leaf_reg: float = 3.0,
    params: dict | None = None,
) -> nn.Module:
    """Gradient-boosted oblivious trees by CatBoost (early stopping on validation;
    ``params``: any other CatBoost parameter)."""
    named = dict(iterations=iterations, learning_rate=learning_rate, depth=depth)
    named.update(l2_leaf_reg=l2_leaf_reg)
    return _family(sig, "catboost", _fit_catboost, _params(params, **named))


def _forest(name: str, extra: bool, about: str) -> Callable[..., nn.Module]:
    """The builder of a scikit-learn forest family (random forest, extra trees)."""

    def forest(
        sig: Signature,
        *,
        n_estimators: int = 300,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
        max_features: float | str = "sqrt",
        params: dict | None = None,
    ) -> nn.Module:
        named = dict(n_estimators=n_estimators, max_depth=max_depth)
        named.update(min_samples_leaf=min_samples_leaf, max_features=max_features)
        return _family(sig, name, partial(_fit_forest, extra=extra), _params(params, **named))

    forest.__doc__ = f"{about} by scikit-learn (``params``: any other parameter of its class)."
    forest.__name__ = forest.__qualname__ = name
    return forest


random_forest = MODELS.register("random_forest", **_FAMILY)(
    _forest("random_forest", False, "A random forest")
)
extra_trees = MODELS.register("extra_trees", **_FAMILY)(
    _forest("extra_trees", True, "Extremely randomised trees")
)


# each family and the module its library installs (what a recipe suggestion checks for)
FAMILIES = {
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "catboost": "catboost",
    "random_forest": "sklearn",
    "extra_trees": "sklearn",
}
# the option that fixes a boosting family's rounds (early stopping picks them otherwise)
ROUNDS_OPTION = {"lightgbm": "n_estimators", "xgboost": "n_estimators", "catboost": "iterations"}
BOOSTERS = ("lightgbm", "xgboost")


def train_boosting(booster: str, task: Any, options: dict[str, Any], seed: int) -> nn.Module:
    """A LightGBM or XGBoost model of 300 rounds (no early stopping) trained on the task's
    training split, as a ``trees`` module: the ensemble stage's boosted members and the
    distillation stage's tree teacher."""
    if booster not in BOOSTERS:
        raise bad_value("booster", f"one of {BOOSTERS}", booster)
    if booster == "lightgbm":
        params = {"n_estimators": 300, "learning_rate": 0.05, "verbose": -1, **options}
        return _fit_lightgbm(task, seed, params, early_stop=False)[0]
    params = {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 4, **options}
    return _fit_xgboost(task, seed, params, early_stop=False)[0]
