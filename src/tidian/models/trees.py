"""``gbdt``: a trained LightGBM model as tensors, so a gradient-boosting model can sit in an
ensemble beside networks, be saved as safetensors (never pickle) and exported as one ONNX graph.

Every tree is flattened into arrays over its nodes — split feature, threshold, left and right
child, leaf value — padded to the largest tree. Prediction walks all trees at once, one level
per step (``depth`` steps of gather / where), then sums each class's trees. Written here because
the library that does this conversion (hummingbird-ml) pins ONNX ≤ 1.16 and saves with dill;
the walk is a dozen lines and is checked against LightGBM's own predictions.

Outputs are LightGBM's raw scores: class logits (binary: ``[0, score]``), or the value for
regression. Inputs must be finite (tidian's tasks are): the missing-value branches of
LightGBM are not modelled.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import nn

from tidian.exceptions import ConfigError, bad_value, require
from tidian.models.base import MODELS, Signature
from tidian.models.spec import create_model


class GBDT(nn.Module):
    def __init__(self, trees: int, nodes: int, depth: int, outputs: int, binary: bool) -> None:
        super().__init__()
        self.depth, self.outputs, self.binary = depth, outputs, binary
        self.register_buffer("feature", torch.zeros(trees, nodes, dtype=torch.long))
        # float64 like LightGBM: a float32 threshold could send a row the other way
        self.register_buffer("threshold", torch.zeros(trees, nodes, dtype=torch.float64))
        self.register_buffer("left", torch.zeros(trees, nodes, dtype=torch.long))
        self.register_buffer("right", torch.zeros(trees, nodes, dtype=torch.long))
        self.register_buffer("value", torch.zeros(trees, nodes, dtype=torch.float64))
        self.register_buffer("leaf", torch.ones(trees, nodes, dtype=torch.bool))
        self.register_buffer("group", torch.zeros(trees, outputs, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(outputs, dtype=torch.float64))  # base margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).double()
        n, t = x.shape[0], self.feature.shape[0]
        trees = torch.arange(t, device=x.device).unsqueeze(0).expand(n, t)
        node = torch.zeros(n, t, dtype=torch.long, device=x.device)
        for _ in range(self.depth):
            f = self.feature[trees, node]
            go_left = torch.gather(x, 1, f) <= self.threshold[trees, node]
            step = torch.where(go_left, self.left[trees, node], self.right[trees, node])
            node = torch.where(self.leaf[trees, node], node, step)
        score = (self.value[trees, node] @ self.group + self.bias).float()  # (n, outputs)
        if self.binary:
            return torch.cat([torch.zeros_like(score), score], dim=1)
        return score


@MODELS.register(
    "gbdt", inputs=("vector", "sequence", "image"), instead="a network", trainable=False
)
def gbdt(
    sig: Signature,
    *,
    trees: int = 1,
    nodes: int = 1,
    depth: int = 0,
    binary: bool = False,
) -> nn.Module:
    """A gradient-boosted tree ensemble as tensors (made by ``from_lightgbm``; the options
    give its shape, the saved buffers its trees)."""
    outputs = 1 if binary or sig.target_kind == "values" else sig.n_outputs
    return GBDT(trees, nodes, depth, outputs, binary)


def from_lightgbm(booster: Any, task: Any) -> nn.Module:
    """The zoo ``gbdt`` model holding ``booster``'s trees (a LightGBM Booster or sklearn
    estimator)."""
    booster = getattr(booster, "booster_", booster)
    dump = booster.dump_model()
    per_iteration = int(dump["num_tree_per_iteration"])
    infos = dump["tree_info"]
    if task.target_kind == "classes" and per_iteration not in (1, task.n_classes):
        raise ConfigError(
            "the LightGBM model saw a different number of classes than the task has "
            f"({per_iteration} trees per round, {task.n_classes} classes): every class must "
            "occur in the training split."
        )
    flat = [_flatten(info["tree_structure"]) for info in infos]
    return _build(flat, per_iteration, task)


def _build(flat: list[dict[str, Any]], per_iteration: int, task: Any) -> nn.Module:
    nodes = max(len(f["feature"]) for f in flat)
    depth = max(f["depth"] for f in flat)
    binary = task.target_kind == "classes" and per_iteration == 1
    model = create_model("gbdt", task, trees=len(flat), nodes=nodes, depth=depth, binary=binary)
    with torch.no_grad():
        for t, f in enumerate(flat):
            k = len(f["feature"])
            for name in ("feature", "threshold", "left", "right", "value", "leaf"):
                buffer = getattr(model, name)
                buffer[t, :k] = torch.as_tensor(np.asarray(f[name]), dtype=buffer.dtype)
            model.group[t, t % per_iteration if per_iteration > 1 else 0] = 1.0
    return model


def from_xgboost(booster: Any, task: Any) -> nn.Module:
    """The zoo ``gbdt`` model holding an XGBoost model's trees (``xgboost-cpu``). XGBoost
    sends a row left when ``x < threshold``; the threshold becomes the largest double below it,
    so ``x <= t'`` decides the same for every float32 input. The base margin is read off the
    model's own margins on the training rows (it must be one constant per output)."""

    import xgboost as xgb

    booster = booster.get_booster() if hasattr(booster, "get_booster") else booster
    trees = [json.loads(t) for t in booster.get_dump(dump_format="json")]
    classes = task.n_classes if task.target_kind == "classes" else 1
    per_iteration = classes if classes > 2 else 1
    model = _build([_flatten(_from_xgb_node(t)) for t in trees], per_iteration, task)
    x = task.train.x.reshape(len(task.train.x), -1)
    margin = booster.predict(xgb.DMatrix(x), output_margin=True).reshape(len(x), -1)
    with torch.no_grad():
        model.bias.zero_()
        mine = model(torch.as_tensor(task.train.x)).double().numpy()
        if model.binary:
            mine = mine[:, 1:]
        offset = margin - mine
        if np.ptp(offset, axis=0).max() > 1e-3:
            raise ConfigError("could not read the XGBoost model's base margin (not constant).")
        model.bias.copy_(torch.as_tensor(offset.mean(0)))
    return model


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


def _flatten(root: dict[str, Any]) -> dict[str, Any]:
    """One tree as node arrays (breadth-first; node 0 is the root)."""
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
            out["value"][i] = float(node["leaf_value"])
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


BOOSTERS = ("lightgbm", "xgboost")


def train_boosting(booster: str, task: Any, options: dict[str, Any], seed: int) -> nn.Module:
    """Train a LightGBM or XGBoost model on the task's training split (inputs flattened) and
    return it as a ``gbdt`` module. XGBoost comes from the ``xgboost-cpu`` package."""
    if booster not in BOOSTERS:
        raise bad_value("booster", f"one of {BOOSTERS}", booster)
    x = task.train.x.reshape(len(task.train.x), -1)
    classes = task.target_kind == "classes"
    if booster == "lightgbm":
        lgb = require("lightgbm", "boost", "LightGBM members")
        params = {"n_estimators": 300, "learning_rate": 0.05, "verbose": -1, **options}
        params.update(random_state=seed, n_jobs=1)
        model = (lgb.LGBMClassifier if classes else lgb.LGBMRegressor)(**params)
        return from_lightgbm(model.fit(x, task.train.y), task)
    xgb = require("xgboost", "boost", "XGBoost members (the xgboost-cpu package)")
    params = {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 4, **options}
    params.update(random_state=seed, n_jobs=1)
    model = (xgb.XGBClassifier if classes else xgb.XGBRegressor)(**params)
    return from_xgboost(model.fit(x, task.train.y), task)
