"""Transformer encoder over sequences, text, vectors (one token per feature) and image rows."""

from __future__ import annotations

import math

import torch
from torch import nn

from tidian.exceptions import bad_value
from tidian.models.base import (
    MODELS,
    Head,
    SequenceInput,
    Signature,
    check_choice,
    check_dropout,
    check_positive_int,
    masked_mean,
)
from tidian.models.moe import MoE, moe_options


def sinusoidal(length: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position table of "Attention Is All You Need" (length, dim)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class MoEEncoderLayer(nn.TransformerEncoderLayer):
    """A pre-norm encoder layer whose feed-forward block is a mixture of experts (per token).
    Always the plain (non-fused) path: the fused kernel would call the dense feed-forward."""

    def __init__(self, width: int, heads: int, ff: int, dropout: float, act: str, moe: dict):
        super().__init__(
            width,
            heads,
            dim_feedforward=ff,
            dropout=dropout,
            activation=act,
            batch_first=True,
            norm_first=True,
        )
        del self.linear1, self.linear2  # replaced by the experts
        self.moe = MoE(
            width, width, hidden=ff, activation=nn.GELU if act == "gelu" else nn.ReLU, **moe
        )

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.moe(x))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
        return x + self._ff_block(self.norm2(x))


class Transformer(nn.Module):
    """Project inputs to ``width``, add positions, (prepend a class token), encode, pool, head.

    Pre-norm encoder layers (``norm_first``) train stably without warm-up at small sizes.
    """

    def __init__(
        self,
        sig: Signature,
        *,
        width: int,
        depth: int,
        heads: int,
        ff_mult: int,
        dropout: float,
        pool: str,
        positional: str,
        norm: str,
        activation: str,
        embed_dim: int,
        moe: dict | None = None,
    ) -> None:
        super().__init__()
        check_choice("pool", pool, ("mean", "cls"))
        check_choice("positional", positional, ("sinusoidal", "learned"))
        check_choice("norm", norm, ("layer", "none"))
        check_choice("activation", activation, ("relu", "gelu"))
        if width % heads:
            raise bad_value("width", f"a multiple of heads ({heads})", width)
        self.input = SequenceInput(sig, embed_dim)
        self.project = nn.Linear(self.input.channels, width)
        length = self.input.length + (1 if pool == "cls" else 0)
        if positional == "learned":
            self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        else:
            self.register_buffer("position", sinusoidal(length, width), persistent=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        layer = (
            MoEEncoderLayer(width, heads, ff_mult * width, dropout, activation, moe)
            if moe
            else nn.TransformerEncoderLayer(
                width,
                heads,
                dim_feedforward=ff_mult * width,
                dropout=dropout,
                activation=activation,
                batch_first=True,
                norm_first=True,
            )
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width) if norm == "layer" else nn.Identity()
        self.pool = pool
        self.head = Head(width, sig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = self.input(x)
        h = self.project(h)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(len(h), 1), mask], dim=1)
        h = h + self.position[: h.shape[1]]
        h = self.encoder(h, src_key_padding_mask=None if mask is None else ~mask)
        h = self.norm(h)
        z = h[:, 0] if self.cls is not None else masked_mean(h, mask)
        return self.head(z)


@MODELS.register("transformer", inputs=("vector", "sequence", "image", "text"))
def transformer(
    sig: Signature,
    *,
    width: int = 64,
    depth: int = 2,
    heads: int = 4,
    ff_mult: int = 2,
    dropout: float = 0.1,
    pool: str = "mean",
    positional: str = "sinusoidal",
    norm: str = "layer",
    activation: str = "gelu",
    embed_dim: int = 64,
    moe_experts: int = 0,
    moe_top_k: int = 2,
    moe_balance: float = 0.01,
) -> nn.Module:
    """Transformer encoder with positional encoding; mean-pool or class-token readout; with
    ``moe_experts`` > 0 each feed-forward block is a per-token mixture of experts."""
    return Transformer(
        sig,
        width=check_positive_int("width", width),
        depth=check_positive_int("depth", depth),
        heads=check_positive_int("heads", heads),
        ff_mult=check_positive_int("ff_mult", ff_mult),
        dropout=check_dropout(dropout),
        pool=pool,
        positional=positional,
        norm=norm,
        activation=activation,
        embed_dim=embed_dim,
        moe=moe_options(moe_experts, moe_top_k, moe_balance),
    )
