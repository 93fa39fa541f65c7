"""Recurrent networks: ``gru`` and ``lstm`` over sequences, text, vectors and image rows."""

from __future__ import annotations

import torch
from torch import nn

from tidian.models.base import (
    MODELS,
    Head,
    SequenceInput,
    Signature,
    check_choice,
    check_dropout,
    check_positive_int,
    masked_max,
    masked_mean,
    norm_layer,
)

READOUTS = ("last", "mean", "max", "flatten")
RNN_INPUTS = ("vector", "sequence", "image", "text")


class RNN(nn.Module):
    """Stacked recurrent layers → readout over time → (norm) → head.

    Layers are built one by one so that ``residual`` can add each layer's input to its output
    (from the second layer on, where widths agree) and dropout sits between layers.
    Readouts: ``last`` (final step; for bidirectional models the forward direction's last step
    and the backward direction's first), ``mean`` / ``max`` over real (non-padding) steps, or
    ``flatten`` (every step's state, as in the MNIST-1D paper's GRU).
    """

    def __init__(
        self,
        sig: Signature,
        cell: type[nn.Module],
        *,
        hidden: int,
        depth: int,
        bidirectional: bool,
        readout: str,
        dropout: float,
        norm: str,
        residual: bool,
        embed_dim: int,
    ) -> None:
        super().__init__()
        check_choice("readout", readout, READOUTS)
        check_choice("norm", norm, ("none", "layer", "batch"))
        hidden, depth = check_positive_int("hidden", hidden), check_positive_int("depth", depth)
        dropout = check_dropout(dropout)
        self.input = SequenceInput(sig, embed_dim)
        self.readout, self.residual, self.bidirectional = readout, residual, bidirectional
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList()
        width = self.input.channels
        for _ in range(depth):
            self.layers.append(cell(width, hidden, batch_first=True, bidirectional=bidirectional))
            width = hidden * directions
        self.dropout = nn.Dropout(dropout)
        features = width * (self.input.length if readout == "flatten" else 1)
        self.norm = norm_layer(norm, features, "features")
        self.head = Head(features, sig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = self.input(x)
        for i, layer in enumerate(self.layers):
            out, _ = layer(h)
            if i > 0:
                out = self.dropout(out)
            h = h + out if self.residual and i > 0 else out
        if self.readout == "flatten":
            z = h.flatten(1)
        elif self.readout == "mean":
            z = masked_mean(h, mask)
        elif self.readout == "max":
            z = masked_max(h, mask)
        else:
            z = self._last(h, mask)
        return self.head(self.norm(self.dropout(z)))

    def _last(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            last = h[:, -1]
        else:  # right-padded text: the last real token of each row
            index = (mask.sum(1).clamp_min(1) - 1).view(-1, 1, 1).expand(-1, 1, h.shape[-1])
            last = h.gather(1, index).squeeze(1)
        if not self.bidirectional:
            return last
        half = h.shape[-1] // 2
        return torch.cat([last[:, :half], h[:, 0, half:]], dim=1)


def _register(name: str, cell: type[nn.Module]) -> None:
    def build(
        sig: Signature,
        *,
        hidden: int = 64,
        depth: int = 1,
        bidirectional: bool = False,
        readout: str = "last",
        dropout: float = 0.0,
        norm: str = "none",
        residual: bool = False,
        embed_dim: int = 64,
    ) -> nn.Module:
        return RNN(
            sig,
            cell,
            hidden=hidden,
            depth=depth,
            bidirectional=bool(bidirectional),
            readout=readout,
            dropout=dropout,
            norm=norm,
            residual=bool(residual),
            embed_dim=embed_dim,
        )

    build.__name__ = name
    MODELS.add(
        name,
        build,
        inputs=RNN_INPUTS,
        instead="another model",
        description=f"{name.upper()}; a vector is a 1-channel sequence, an image a "
        "sequence of rows.",
    )


_register("gru", nn.GRU)
_register("lstm", nn.LSTM)
