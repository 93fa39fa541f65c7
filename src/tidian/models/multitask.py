"""``multitask``: one zoo model predicting several targets.

* ``hard`` sharing — the base model's body is shared; the main target keeps the base's own
  head and every further target gets a head of its own on the same features;
* ``soft`` sharing — one full copy of the base model (a tower) per target, tied by a penalty
  on the distance between the towers' parameters (``soft_penalty``, added by the step).

``forward(x)`` returns the main target's outputs, so evaluation, the gate, cost and export see
an ordinary model of the main target; ``forward_all(x)`` returns every target's outputs. The
learned log-variances of uncertainty weighting (``log_vars``) live here so they are trained
and saved with the model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from tidian.exceptions import ConfigError, bad_value
from tidian.models.base import MODELS, Head, Signature
from tidian.models.spec import create_model

SHARING = ("hard", "soft")
AUX_PARAM = "_tidian_aux"  # parameters the main output does not reach (aux heads, weights)


def _aux(module_or_param: Any) -> Any:
    params = (
        [module_or_param]
        if isinstance(module_or_param, nn.Parameter)
        else list(module_or_param.parameters())
    )
    for p in params:
        setattr(p, AUX_PARAM, True)
    return module_or_param


class MultiTask(nn.Module):
    def __init__(self, base: dict[str, Any], sig: Signature, aux: list[dict], sharing: str):
        super().__init__()
        name, options = base["name"], {k: v for k, v in base.items() if k != "name"}
        self.sharing, self.names = sharing, [a["name"] for a in aux]
        sigs = [replace(sig, target_kind=a["kind"], n_outputs=int(a["n_outputs"])) for a in aux]
        if sharing == "hard":
            self.trunk = create_model(name, sig, **options)
            head = getattr(self.trunk, "head", None)
            if not isinstance(head, Head):
                raise ConfigError(
                    f"multitask hard sharing needs a zoo model ending in a Head; {name!r} "
                    "has none. Use sharing: soft."
                )
            width = head.linear.in_features
            self.main_head = head
            self.trunk.head = nn.Identity()
            self.heads = nn.ModuleList(_aux(Head(width, s)) for s in sigs)
        else:
            self.trunk = create_model(name, sig, **options)
            self.towers = nn.ModuleList(_aux(create_model(name, s, **options)) for s in sigs)
        self.log_vars = _aux(nn.Parameter(torch.zeros(len(aux) + 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sharing == "hard":
            return self.main_head(self.trunk(x))
        return self.trunk(x)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the main target, then of each further target."""
        if self.sharing == "hard":
            z = self.trunk(x)
            return [self.main_head(z), *(h(z) for h in self.heads)]
        return [self.trunk(x), *(t(x) for t in self.towers)]

    def aux_heads(self) -> list[Head]:
        """The output layer of each further target (for its regression scale)."""
        if self.sharing == "hard":
            return list(self.heads)
        return [t.head for t in self.towers]

    def tower_distance(self) -> torch.Tensor:
        """Soft sharing: Σ ‖θ_tower − θ_main‖² over the parameters the towers share in shape
        (heads excluded)."""
        main = dict(self.trunk.named_parameters())
        total = torch.zeros((), device=next(self.trunk.parameters()).device)
        for tower in getattr(self, "towers", []):
            for key, p in tower.named_parameters():
                if not key.startswith("head.") and key in main and main[key].shape == p.shape:
                    total = total + (p - main[key]).pow(2).sum()
        return total


@MODELS.register("multitask", inputs=("vector", "sequence", "image", "text"))
def multitask(
    sig: Signature,
    *,
    base: dict[str, Any] | None = None,
    aux: list[dict[str, Any]] | None = None,
    sharing: str = "hard",
) -> nn.Module:
    """A base zoo model with further targets: shared body and one head each (hard), or one
    tower each tied by a penalty (soft)."""
    if sharing not in SHARING:
        raise bad_value("multitask sharing", f"one of {SHARING}", sharing)
    if not isinstance(base, dict) or "name" not in base:
        raise bad_value("multitask base", "a zoo model {name: ..., options}", base)
    if base["name"] == "multitask":
        raise ConfigError("multitask base: a multi-task model cannot wrap another one.")
    if not aux:
        raise ConfigError("multitask needs at least one further target (aux).")
    for i, a in enumerate(aux):
        if not isinstance(a, dict) or a.get("kind") not in ("classes", "values"):
            raise bad_value(f"multitask aux[{i}]", "{name, kind: classes|values, n_outputs}", a)
    return MultiTask(base, sig, list(aux), sharing)
