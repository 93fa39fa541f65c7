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

from typing import Any

import numpy as np
import torch
from torch import nn

from tidian.exceptions import ConfigError
from tidian.models.base import MODELS, Signature


class GBDT(nn.Module):
    def __init__(self, trees: int, nodes: int, depth: int, outputs: int, binary: bool) -> None:
        super().__init__()
        self.depth, self.outputs, self.binary = depth, outputs, binary
        self.register_buffer("feature", torch.zeros(trees, nodes, dtype=torch.long))
        # float64 like LightGBM: a float32 threshold could send a row the other way
        self.register_buffer("threshold", torch.zeros(trees, nodes, dtype=torch.float64))
        self.register_buffer("left", torch.zeros(trees, nodes, dtype=torch.long))
        self.register_buffer("right", torch.zeros(trees, nodes, dtype=torch.long))
        self.register_buffer("value", torch.zeros(trees, nodes))
        self.register_buffer("leaf", torch.ones(trees, nodes, dtype=torch.bool))
        self.register_buffer("group", torch.zeros(trees, outputs))  # tree → output it adds to

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
        score = (self.value[trees, node] @ self.group).float()  # (n, outputs)
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
    from tidian.models.zoo import create_model

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
    nodes = max(len(f["feature"]) for f in flat)
    depth = max(f["depth"] for f in flat)
    binary = task.target_kind == "classes" and per_iteration == 1
    model = create_model("gbdt", task, trees=len(flat), nodes=nodes, depth=depth, binary=binary)
    with torch.no_grad():
        for t, f in enumerate(flat):
            k = len(f["feature"])
            for name in ("feature", "threshold", "left", "right", "value", "leaf"):
                getattr(model, name)[t, :k] = torch.as_tensor(np.asarray(f[name]))
            model.group[t, t % per_iteration if per_iteration > 1 else 0] = 1.0
    return model


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
