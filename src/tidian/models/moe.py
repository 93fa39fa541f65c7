"""Mixture of experts: a router picks the top-k of E experts per input (per token in a
transformer) and mixes their outputs by its renormalised gate values.

The load-balancing loss is Switch Transformer's (Fedus et al., 2022), shifted so that it is 0
for perfectly uniform routing: ``E · Σ_i f_i · P_i − 1`` where f_i is the share of inputs whose
first choice is expert i and P_i the mean router probability of expert i. Training steps add
``balance ×`` it to the loss (:func:`aux_loss`). Routing shares (how often each expert is
chosen) are accumulated during training and read, then reset, by :func:`routing_stats` — the
training loop records them per epoch.

Experts are computed densely (every expert on every input, then masked): exact, simple and
exportable to ONNX as one graph; at these model sizes a sparse dispatch would not be faster.
The cost measured for an MoE model is therefore that of all its experts.
"""

from __future__ import annotations

import torch
from torch import nn

from tidian.exceptions import bad_value


class MoE(nn.Module):
    def __init__(
        self,
        d_in: int,
        d_out: int,
        experts: int,
        top_k: int = 2,
        hidden: int | None = None,
        activation: type[nn.Module] = nn.GELU,
        balance: float = 0.01,
    ) -> None:
        super().__init__()
        if not isinstance(experts, int) or experts < 2:
            raise bad_value("moe_experts", "an integer >= 2 (0 turns MoE off)", experts)
        if not isinstance(top_k, int) or not 1 <= top_k <= experts:
            raise bad_value("moe_top_k", f"an integer in 1..{experts}", top_k)
        if balance < 0:
            raise bad_value("moe_balance", "a non-negative loss weight", balance)
        self.top_k, self.balance = top_k, float(balance)
        self.gate = nn.Linear(d_in, experts)

        def expert() -> nn.Module:
            if hidden is None:
                return nn.Linear(d_in, d_out)
            return nn.Sequential(nn.Linear(d_in, hidden), activation(), nn.Linear(hidden, d_out))

        self.experts = nn.ModuleList(expert() for _ in range(experts))
        self.register_buffer("usage", torch.zeros(experts), persistent=False)
        self.aux: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.gate(x).softmax(-1)  # (..., E)
        top, index = probs.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, index, top / top.sum(-1, keepdim=True))
        outs = torch.stack([e(x) for e in self.experts], dim=-2)  # (..., E, d_out)
        y = (weights.unsqueeze(-1) * outs).sum(-2)
        if self.training:
            flat = probs.reshape(-1, probs.shape[-1])
            first = nn.functional.one_hot(index.reshape(-1, self.top_k)[:, 0], flat.shape[-1])
            self.aux = balance_loss(first.float().mean(0), flat.mean(0))
            with torch.no_grad():
                self.usage += (weights.reshape(-1, flat.shape[-1]) > 0).float().sum(0)
        return y


def moe_options(experts: int, top_k: int, balance: float) -> dict | None:
    """The MoE settings a zoo model passes to its layers (None: plain layers)."""
    if experts == 0:
        return None
    return {"experts": experts, "top_k": top_k, "balance": balance}


def balance_loss(first_share: torch.Tensor, mean_prob: torch.Tensor) -> torch.Tensor:
    """E · Σ f_i P_i − 1: zero when both are uniform, larger the more the router favours few."""
    return len(first_share) * (first_share * mean_prob).sum() - 1.0


def aux_loss(model: nn.Module) -> torch.Tensor | float:
    """The weighted load-balancing losses of a model's MoE layers from its last forward."""
    total: torch.Tensor | float = 0.0
    for module in model.modules():
        if isinstance(module, MoE) and module.aux is not None and module.balance:
            total = total + module.balance * module.aux
            module.aux = None
    return total


def routing_stats(model: nn.Module) -> list[list[float]] | None:
    """Per MoE layer, the share of selections each expert received since the last call."""
    layers = [m for m in model.modules() if isinstance(m, MoE)]
    if not layers:
        return None
    out = []
    for m in layers:
        total = float(m.usage.sum())
        out.append([float(u) / total if total else 0.0 for u in m.usage])
        m.usage.zero_()
    return out
