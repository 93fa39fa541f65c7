"""``ensemble``: several zoo models combined into one module — one forward pass, one saved
folder, one ONNX graph, so its cost is measured (k models' worth) and it exports like any
model.

Combinations (``combine``):

* ``average`` / ``weighted`` / ``greedy`` — a weighted mean of the members' class
  probabilities (outputs for regression); the module returns the log of that mean, so a
  softmax of its output is exactly the ensemble's probabilities. ``average`` has equal
  weights; the other two carry weights fitted on the validation split (see
  ``stages/ensemble.py``) in the ``weights`` buffer;
* ``vote`` — (weighted) majority of the members' predicted classes; ties are broken by the
  averaged probability; the output is the log of the vote shares (smoothed);
* ``stacking`` — a linear meta-model on the members' log-probabilities (outputs for
  regression), fitted on validation predictions the members never trained on.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from tidian.exceptions import ConfigError, bad_value
from tidian.models.base import MODELS, Signature
from tidian.models.spec import ModelSpec, create_model, set_spec

COMBINE = ("average", "weighted", "greedy", "vote", "stacking")
EPS = 1e-7


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], combine: str, classes: bool, n_outputs: int):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.combine, self.classes, self.n_outputs = combine, classes, n_outputs
        k = len(members)
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.meta = nn.Linear(k * n_outputs, n_outputs) if combine == "stacking" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten, not reshape(len(x), ...): a traced len() would freeze the batch size in ONNX
        outs = torch.stack([m(x).flatten(1) for m in self.members])  # (k, n, out)
        w = self.weights.reshape(-1, 1, 1)
        if self.combine == "stacking":
            feats = outs.log_softmax(-1) if self.classes else outs
            return self.meta(feats.permute(1, 0, 2).flatten(1))
        if not self.classes:
            return (w * outs).sum(0)
        proba = (w * outs.softmax(-1)).sum(0)
        if self.combine == "vote":
            picks = nn.functional.one_hot(outs.argmax(-1), self.n_outputs).to(outs.dtype)
            shares = (w * picks).sum(0)
            # ties between classes with equal votes go to the higher averaged probability
            shares = shares + 1e-4 * proba
            return (shares / shares.sum(-1, keepdim=True)).clamp_min(EPS).log()
        return proba.clamp_min(EPS).log()

    def set_weights(self, weights: Any) -> None:
        w = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if len(w) != len(self.members) or (w < 0).any() or not w.sum() > 0:
            raise bad_value(
                "ensemble weights",
                f"{len(self.members)} non-negative numbers with a positive sum",
                w.tolist(),
            )
        self.weights.copy_(w / w.sum())


def ensemble_of(members: list[nn.Module], specs: list[dict[str, Any]], combine: str, task: Any):
    """An ``ensemble`` zoo model around already-built ``members`` (trained, loaded, maybe
    compressed), with ``specs`` — their zoo specs — recorded so it saves and reloads like one
    made by ``create_model`` (which would first build every member afresh)."""
    if combine not in COMBINE:
        raise bad_value("ensemble combine", f"one of {COMBINE}", combine)
    if len(members) < 2 or len(members) != len(specs):
        raise ConfigError(f"an ensemble needs at least two members, one spec each; got {specs!r}.")
    sig = Signature.of(task)
    if combine == "vote" and sig.target_kind != "classes":
        raise ConfigError("ensemble combine 'vote' needs a classification task; use average.")
    model = Ensemble(list(members), combine, sig.target_kind == "classes", sig.n_outputs)
    options = json.loads(json.dumps({"members": specs, "combine": combine}))
    set_spec(model, ModelSpec("ensemble", options, sig.to_dict()))
    return model


@MODELS.register(
    "ensemble",
    inputs=("vector", "sequence", "image", "text"),
    instead="the members' own input kinds",
)
def ensemble(
    sig: Signature, *, members: list[dict[str, Any]] | None = None, combine: str = "average"
) -> nn.Module:
    """Several zoo models combined (average, weighted, greedy, vote, stacking)."""
    if combine not in COMBINE:
        raise bad_value("ensemble combine", f"one of {COMBINE}", combine)
    if not isinstance(members, list) or len(members) < 2:
        raise ConfigError(
            "an ensemble needs at least two members, each a zoo model {name: ..., options}; "
            f"got {members!r}."
        )
    classes = sig.target_kind == "classes"
    if combine == "vote" and not classes:
        raise ConfigError("ensemble combine 'vote' needs a classification task; use average.")
    built = []
    for i, spec in enumerate(members):
        if not isinstance(spec, dict) or "name" not in spec:
            raise bad_value(f"ensemble members[{i}]", "a mapping {name: ..., options}", spec)
        options = {k: v for k, v in spec.items() if k != "name"}
        built.append(create_model(spec["name"], sig, **options))
    return Ensemble(built, combine, classes, sig.n_outputs)
