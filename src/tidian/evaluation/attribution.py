"""Attributions: which inputs a prediction rests on (Captum), and which features the model needs
overall (permutation importance, scikit-learn).

* :func:`attribute` — per example, Integrated Gradients (with its completeness gap: the
  attributions should sum to ``F(x) - F(baseline)``) and saliency (|gradient|), for the
  predicted class (or the only output of a regression). Vectors, sequences and images are
  attributed on their inputs against a zero baseline (the training mean after tidian's
  scaling); text on the token embeddings against all-padding (``LayerIntegratedGradients``),
  summed over the embedding dimension so there is one number per token.
* :func:`agreement` — the sanity check: Spearman rank correlation of |IG| and saliency per
  example, and how many of IG's top inputs saliency also ranks on top. Low agreement says:
  do not read much into either map.
* :func:`permutation_importance` — for tabular tasks, the drop of the task's metric when one
  feature column is shuffled (sklearn's implementation, repeated and seeded).

Captum's ``internal_batch_size`` bounds memory: IG evaluates ``n_steps`` scaled copies of each
example, in chunks of that many rows instead of all at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tidian.exceptions import ConfigError, bad_value, require
from tidian.metrics import METRICS, greater_is_better, predict

METHODS = ("integrated_gradients", "saliency")


def _captum():
    require("captum", "explain", "attributions")
    import captum.attr

    return captum.attr


def _embedding(model: nn.Module) -> nn.Embedding:
    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag):
            return module
    raise ConfigError(
        f"{type(model).__name__} takes token ids but has no embedding layer to attribute on."
    )


def differentiable(model: nn.Module, x: np.ndarray | torch.Tensor) -> bool:
    """Whether ``model``'s outputs have a gradient with respect to its (float) inputs: a tree
    model's do not — it is piecewise constant, its gradient zero wherever it exists — so
    gradient attributions say nothing about it. Token ids are never differentiated (text
    models are attributed on their embeddings)."""
    x = torch.as_tensor(np.asarray(x[:1]))
    if not x.is_floating_point():
        return True
    with torch.enable_grad():
        return bool(model(x.clone().requires_grad_(True)).requires_grad)


def attribute(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    target: Sequence[int] | None = None,
    n_steps: int = 64,
    internal_batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Attributions of ``model`` on the examples ``x``.

    Returns ``{"target", "outputs", "integrated_gradients", "saliency", "delta",
    "relative_delta"}``: attribution arrays shaped like one input each (text: one value per
    token), IG's completeness gap per example, absolute and relative to
    ``|F(x) - F(baseline)|``. ``target`` defaults to the predicted class."""
    attr = _captum()
    if n_steps < 2:
        raise bad_value("n_steps", "an integer >= 2", n_steps)
    if internal_batch_size < 1:
        raise bad_value("internal_batch_size", "a positive integer", internal_batch_size)
    model = model.eval()
    inputs = torch.as_tensor(np.asarray(x))
    tokens = not torch.is_floating_point(inputs)
    with torch.no_grad():
        out = model(inputs).float()
    single = out.ndim == 1 or out.shape[1] == 1
    if target is None:
        targets = torch.zeros(len(inputs), dtype=torch.long) if single else out.argmax(1)
    else:
        targets = torch.as_tensor(list(target), dtype=torch.long)
        if len(targets) != len(inputs):
            raise bad_value("target", f"one class per example ({len(inputs)})", len(targets))

    def forward(z: torch.Tensor) -> torch.Tensor:
        y = model(z)
        return y.reshape(len(z), -1)

    baseline = torch.zeros_like(inputs)
    ig_all, sal_all, deltas = [], [], []
    for i in range(len(inputs)):  # one example at a time: memory stays bounded
        xi, ti, bi = inputs[i : i + 1], targets[i : i + 1], baseline[i : i + 1]
        if tokens:
            layer = _embedding(model)
            ig, delta = attr.LayerIntegratedGradients(forward, layer).attribute(
                xi,
                baselines=bi,
                target=ti,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
                return_convergence_delta=True,
            )
            grads = attr.LayerGradientXActivation(
                forward, layer, multiply_by_inputs=False
            ).attribute(xi, target=ti)
            ig, sal = ig.sum(-1), grads.abs().sum(-1)
        else:
            xi = xi.float().requires_grad_()
            ig, delta = attr.IntegratedGradients(forward).attribute(
                xi,
                baselines=bi.float(),
                target=ti,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
                return_convergence_delta=True,
            )
            sal = attr.Saliency(forward).attribute(xi, target=ti, abs=True)
        ig_all.append(ig.detach()[0].numpy())
        sal_all.append(sal.detach()[0].numpy())
        deltas.append(float(delta.reshape(-1)[0]))
        if progress is not None:
            progress(i + 1, len(inputs))
    with torch.no_grad():
        f_x = forward(inputs.float() if not tokens else inputs)
        f_b = forward(baseline.float() if not tokens else baseline)
    index = torch.arange(len(inputs))
    change = (f_x[index, targets] - f_b[index, targets]).abs().numpy()
    delta = np.abs(np.array(deltas))
    return {
        "target": targets.tolist(),
        "outputs": out.numpy(),
        "integrated_gradients": np.stack(ig_all),
        "saliency": np.stack(sal_all),
        "delta": delta,
        "relative_delta": delta / np.maximum(change, 1e-12),
    }


def agreement(ig: np.ndarray, saliency: np.ndarray, top: int = 5) -> dict[str, Any]:
    """How much IG and saliency agree per example: Spearman's rho of |IG| vs saliency, and the
    share of IG's ``top`` inputs that are also saliency's ``top``."""
    from scipy.stats import spearmanr

    a = np.abs(ig.reshape(len(ig), -1))
    b = np.abs(saliency.reshape(len(saliency), -1))
    top = min(top, a.shape[1])
    rhos, overlaps = [], []
    for u, v in zip(a, b):
        with warnings.catch_warnings():  # a constant map has no rank correlation: counted as 0
            warnings.simplefilter("ignore")
            rho = float(spearmanr(u, v).statistic)
        rhos.append(rho if np.isfinite(rho) else 0.0)
        overlaps.append(len(set(np.argsort(-u)[:top]) & set(np.argsort(-v)[:top])) / top)
    return {
        "spearman": rhos,
        "mean_spearman": float(np.mean(rhos)) if rhos else float("nan"),
        "top": top,
        "top_overlap": overlaps,
        "mean_top_overlap": float(np.mean(overlaps)) if overlaps else float("nan"),
    }


class _Fitted:
    """The minimal estimator sklearn's permutation importance calls: a fitted model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def fit(self, x, y):  # pragma: no cover - never called, required by the protocol
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict(self.model, np.asarray(x, dtype=np.float32))


def permutation_importance(
    model: nn.Module,
    task: Any,
    *,
    split: str = "test",
    metric: str | None = None,
    repeats: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Drop in ``metric`` when each feature column of ``split`` is shuffled (mean ± std over
    ``repeats`` shuffles), most important first. Tabular (vector) tasks only."""
    from sklearn.inspection import permutation_importance as sk_importance

    if task.input_kind != "vector":
        raise ConfigError(
            "permutation importance is for tabular (vector) tasks; use attributions "
            f"(integrated gradients) for {task.input_kind} inputs."
        )
    metric = metric or task.metric
    score_fn, sign = METRICS.get(metric), 1.0 if greater_is_better(metric) else -1.0

    def scorer(estimator: _Fitted, x: np.ndarray, y: np.ndarray) -> float:
        return sign * score_fn(y, estimator.predict(x))

    part = getattr(task, split)
    result = sk_importance(
        _Fitted(model.eval()), part.x, part.y, scoring=scorer, n_repeats=repeats, random_state=seed
    )
    names = list(task.feature_names or [f"x{j}" for j in range(part.x.shape[1])])
    rows = [
        {
            "feature": names[j],
            "drop": float(result.importances_mean[j]),
            "std": float(result.importances_std[j]),
        }
        for j in range(len(names))
    ]
    rows.sort(key=lambda r: -r["drop"])
    return rows
