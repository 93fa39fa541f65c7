"""Low-rank factorisation: a Linear (or Conv) layer W ≈ U_r S_r V_rᵀ becomes two thinner layers.

The rank of each layer comes from its own spectrum: the smallest r whose singular values keep
``energy`` of Σσ² (or a fixed ``rank``). A layer is only factorised when that saves
parameters — r (m + n) < m n — since otherwise the "compressed" layer is larger and slower.
Convolutions factorise through their kernel reshaped to (out, in × k…): a conv with r output
channels and the original kernel, then a 1×1 conv back to the output channels.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tidian.compression.apply import StepContext, transform_step
from tidian.compression.finetune import check_distill, finetune, teacher_outputs
from tidian.compression.surgery import plain_attention
from tidian.exceptions import ConfigError, bad_value
from tidian.models.structure import (
    LowRank,
    get_module,
    lowrank_layers,
    record_replacement,
    set_module,
)


@dataclass(frozen=True)
class LowRankConfig:
    """energy: fraction of Σσ² each layer keeps (picks the rank per layer), in (0, 1];
    rank: a fixed rank for every layer instead (an int ≥ 1);
    layers: glob patterns over module paths (default: every Linear/Conv except the output head);
    finetune_epochs / finetune: fine-tuning after factorising (as for pruning)."""

    energy: float | None = 0.9
    rank: int | None = None
    layers: list[str] = field(default_factory=list)
    include_head: bool = False
    finetune_epochs: int = 0
    finetune: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] | None = None  # as for prune: from the unfactorised model

    def __post_init__(self) -> None:
        if self.rank is not None:
            if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
                raise bad_value("lowrank.rank", "an integer >= 1", self.rank)
        elif self.energy is None or not 0 < self.energy <= 1:
            raise bad_value("lowrank.energy", "a fraction in (0, 1]", self.energy)
        f = self.finetune_epochs
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise bad_value("lowrank.finetune_epochs", "a non-negative integer", f)
        check_distill(self.distill, "lowrank")


def _matrix(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach()
    return w.reshape(w.shape[0], -1)


def choose_rank(singular: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{i<r} σ_i² ≥ energy · Σ σ²."""
    power = singular.double().pow(2)
    cumulative = power.cumsum(0) / power.sum().clamp_min(1e-300)
    return int((cumulative < energy - 1e-12).sum()) + 1


def factorize(module: nn.Module, rank: int) -> LowRank:
    """The two-layer factorisation of ``module`` at ``rank`` (best rank-r approximation)."""
    matrix = _matrix(module)
    out_dim, in_dim = matrix.shape
    limit = min(out_dim, in_dim)
    if rank > limit:
        raise ConfigError(
            f"lowrank.rank {rank} is larger than this layer allows ({out_dim}×{in_dim}: at "
            f"most {limit}); choose a rank <= {limit} or use energy."
        )
    if not isinstance(module, nn.Linear) and module.groups != 1:
        raise ConfigError("low-rank factorisation of grouped convolutions is not supported.")
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    # The layers come from the same builder that rebuilds a saved model, so the two agree.
    new = lowrank_layers(module, rank)
    with torch.no_grad():
        new.first.weight.copy_((root[:, None] * vh[:rank]).reshape(new.first.weight.shape))
        new.second.weight.copy_((u[:, :rank] * root[None, :]).reshape(new.second.weight.shape))
        if module.bias is not None:
            new.second.bias.copy_(module.bias)
    return new.train(module.training)


def lowrank_(
    model: nn.Module,
    config: LowRankConfig | dict[str, Any],
    task: Any = None,
    *,
    train: Any = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Factorise the chosen layers of ``model`` in place; fine-tune when asked."""
    config = config if isinstance(config, LowRankConfig) else LowRankConfig(**config)
    if config.finetune_epochs and task is None:
        raise ConfigError("lowrank fine-tuning needs task=.")
    teacher = (
        teacher_outputs(model, task)
        if config.distill is not None and config.finetune_epochs
        else None
    )
    before = sum(p.numel() for p in model.parameters())
    candidates = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d) or not path:
            continue
        if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
            continue  # an attention output projection: owned by its attention module
        if config.layers:
            if not any(fnmatch.fnmatchcase(path, p) for p in config.layers):
                continue
        elif path.startswith("head") and not config.include_head:
            continue
        candidates.append((path, module))
    if not candidates:
        raise ConfigError(
            f"lowrank found no Linear or Conv layer to factorise"
            f"{f' matching {config.layers}' if config.layers else ''}."
        )
    layers = {}
    for path, module in candidates:
        matrix = _matrix(module)
        out_dim, in_dim = matrix.shape
        if config.rank is not None:
            rank = config.rank
        else:
            rank = choose_rank(torch.linalg.svdvals(matrix.double()), config.energy)
        if config.rank is None and rank * (in_dim + out_dim) >= out_dim * in_dim:
            layers[path] = {"rank": None, "shape": [out_dim, in_dim], "kept": "saves nothing"}
            continue
        parent = path.rpartition(".")[0]
        if isinstance(get_module(model, parent), nn.TransformerEncoderLayer):
            plain_attention(model, parent)
        set_module(model, path, factorize(module, rank))
        record_replacement(model, path, {"type": "lowrank", "rank": rank})
        layers[path] = {"rank": rank, "shape": [out_dim, in_dim]}
    finetune(model, task, train, config, config.finetune_epochs, seed + 1000, teacher)
    model.eval()
    return model, {
        "layers": layers,
        "params_before": before,
        "params_after": sum(p.numel() for p in model.parameters()),
    }


@transform_step("lowrank", config=LowRankConfig)
def lowrank_step(model: nn.Module, config: dict[str, Any], ctx: StepContext):
    """The ``lowrank`` step of a transform: :func:`lowrank_` on the parent's model."""
    return lowrank_(model, config, ctx.task, train=ctx.train, seed=ctx.seed)
