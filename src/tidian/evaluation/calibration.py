"""Calibration: reliability-diagram data, and post-hoc scaling fitted on the validation split.

Temperature scaling (Guo et al., 2017) divides the logits by one fitted T > 0: the predicted
class never changes, only the confidence. Vector scaling fits one scale and one bias per class
(it can change the predicted class, so its accuracy is gated too). Both are folded into the
model's output layer (``W' = diag(s) W``, ``b' = s ⊙ b + c``): the calibrated model has the same
architecture, cost and ONNX graph as the original.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tidian.exceptions import ConfigError
from tidian.metrics import ece, softmax
from tidian.models.base import Head

METHODS = ("temperature", "vector")


def reliability(y: np.ndarray, out: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """Reliability-diagram data over equal-width confidence bins (the bins ECE uses):
    per bin its edges, count, mean confidence and accuracy (None for an empty bin)."""

    proba = softmax(out)
    confidence, correct = proba.max(1), proba.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(members.sum()),
                "confidence": float(confidence[members].mean()) if members.any() else None,
                "accuracy": float(correct[members].mean()) if members.any() else None,
            }
        )
    return {"bins": rows, "ece": ece(y, out, bins)}


def _fit(params: list[torch.Tensor], loss_fn, steps: int = 200) -> None:
    optimizer = torch.optim.LBFGS(params, lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_scaling(logits: np.ndarray, y: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (scale, bias) minimising the validation negative log-likelihood.

    ``temperature``: scale = 1/T for every class, bias 0. ``vector``: free per-class scale and
    bias (a small L2 pull towards identity keeps few-sample classes sane)."""
    if method not in METHODS:
        raise ConfigError(f"calibrate.method must be one of {METHODS}; got {method!r}.")
    z = torch.as_tensor(logits, dtype=torch.float64)
    target = torch.as_tensor(y, dtype=torch.long)
    k = z.shape[1]
    if method == "temperature":
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        _fit([log_t], lambda: F.cross_entropy(z / log_t.exp(), target))
        scale = np.full(k, float(torch.exp(-log_t.detach())), dtype=np.float64)
        return scale, np.zeros(k)
    s = torch.ones(k, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    pull = 1e-3

    def loss():
        return F.cross_entropy(z * s + c, target) + pull * (((s - 1) ** 2).sum() + (c**2).sum())

    _fit([s, c], loss)
    return s.detach().numpy(), c.detach().numpy()


def output_layer(model: nn.Module) -> nn.Linear:
    """The linear layer that makes a zoo classifier's logits (``model.head.linear``)."""

    head = getattr(model, "head", None)
    if not isinstance(head, Head) or head.regression:
        raise ConfigError(
            "calibration folds the scaling into a zoo classifier's output head ('head'); this "
            f"model ({type(model).__name__}) has none (a tree or svm model's outputs come from "
            "its library). Calibrate a zoo network, before quantize."
        )
    return head.linear


@torch.no_grad()
def fold_scaling(model: nn.Module, scale: np.ndarray, bias: np.ndarray) -> nn.Module:
    """Make the model output ``logits * scale + bias``, in place, by changing its head."""
    layer = output_layer(model)
    s = torch.as_tensor(scale, dtype=layer.weight.dtype)
    layer.weight.mul_(s[:, None])
    if layer.bias is None:
        raise ConfigError("the output layer has no bias to fold a calibration bias into.")
    layer.bias.mul_(s).add_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    return model
