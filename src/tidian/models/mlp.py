"""Linear models and multi-layer perceptrons."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tidian.exceptions import bad_value
from tidian.models.base import (
    MODELS,
    FlatInput,
    Head,
    Signature,
    activation,
    check_dropout,
    check_positive_int,
    norm_layer,
)
from tidian.models.moe import MoE, moe_options

ALL_INPUTS = ("vector", "sequence", "image", "text")


class MLP(nn.Module):
    """Flattened input → [Linear → norm → activation → dropout] × depth → head.

    With ``residual`` a block adds its input to its output wherever the two widths agree.
    """

    def __init__(
        self,
        sig: Signature,
        hidden: Sequence[int],
        *,
        dropout: float,
        norm: str,
        act: str,
        residual: bool,
        embed_dim: int,
        moe: dict | None = None,
    ) -> None:
        super().__init__()
        self.input = FlatInput(sig, embed_dim)
        self.blocks = nn.ModuleList()
        self.skips: list[bool] = []
        width = self.input.out_features
        for out in hidden:
            self.blocks.append(
                nn.Sequential(
                    MoE(width, out, **moe) if moe else nn.Linear(width, out),
                    norm_layer(norm, out, "features"),
                    activation(act),
                    nn.Dropout(dropout),
                )
            )
            self.skips.append(residual and out == width)
            width = out
        self.head = Head(width, sig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input(x)
        for block, skip in zip(self.blocks, self.skips):
            h = h + block(h) if skip else block(h)
        return self.head(h)


@MODELS.register("linear", inputs=ALL_INPUTS)
def linear(sig: Signature, *, embed_dim: int = 64) -> nn.Module:
    """Logistic regression (classes) or linear regression (values) on the flattened input."""
    return MLP(sig, (), dropout=0.0, norm="none", act="relu", residual=False, embed_dim=embed_dim)


@MODELS.register("mlp", inputs=ALL_INPUTS)
def mlp(
    sig: Signature,
    *,
    hidden: Sequence[int] | None = None,
    width: int = 100,
    depth: int = 2,
    dropout: float = 0.0,
    norm: str = "none",
    activation: str = "relu",
    residual: bool = False,
    embed_dim: int = 64,
    moe_experts: int = 0,
    moe_top_k: int = 2,
    moe_balance: float = 0.01,
) -> nn.Module:
    """Multi-layer perceptron: ``hidden`` widths, or ``depth`` layers of ``width``; with
    ``moe_experts`` > 0 each hidden layer is a mixture of that many linear experts (top-k
    routing, load-balancing loss weighted by ``moe_balance``)."""
    if hidden is None:
        hidden = [check_positive_int("width", width)] * check_positive_int("depth", depth, 0)
    else:
        hidden = [check_positive_int("hidden[]", h) for h in hidden]
    return MLP(
        sig,
        hidden,
        dropout=check_dropout(dropout),
        norm=norm,
        act=activation,
        residual=bool(residual),
        embed_dim=embed_dim,
        moe=moe_options(moe_experts, moe_top_k, moe_balance),
    )


@MODELS.register("embedding_bag", inputs=("text",), instead="mlp, cnn1d or transformer")
def embedding_bag(
    sig: Signature,
    *,
    embed_dim: int = 64,
    hidden: int = 0,
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Module:
    """fastText-style text classifier: the mean of the token embeddings (padding excluded),
    an optional hidden layer, the head. The smallest fast baseline and distillation student."""
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise bad_value("hidden", "a non-negative integer (0: no hidden layer)", hidden)
    return MLP(
        sig,
        [hidden] if hidden else [],
        dropout=check_dropout(dropout),
        norm="none",
        act=activation,
        residual=False,
        embed_dim=check_positive_int("embed_dim", embed_dim),
    )
