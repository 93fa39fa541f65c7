"""Convolutional networks over sequences (``cnn1d``) and images (``cnn2d``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tidian.exceptions import bad_value
from tidian.models.base import (
    MODELS,
    Head,
    SequenceInput,
    Signature,
    activation,
    check_choice,
    check_dropout,
    check_positive_int,
    masked_max,
    masked_mean,
    norm_layer,
)

READOUTS = ("mean", "max", "flatten")


class ConvBlock(nn.Module):
    """conv → norm → activation → dropout, plus a skip path when ``residual``.

    The skip is the identity when shapes agree, else a 1x1 convolution with the same stride.
    """

    def __init__(
        self,
        dims: int,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        norm: str,
        act: str,
        dropout: float,
        residual: bool,
    ) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        drop = nn.Dropout1d if dims == 1 else nn.Dropout2d
        self.body = nn.Sequential(
            conv(cin, cout, kernel, stride=stride, padding=kernel // 2),
            norm_layer(norm, cout, "map1d" if dims == 1 else "map2d"),
            activation(act),
            drop(dropout),
        )
        self.skip: nn.Module | None = None
        if residual:
            same = cin == cout and stride == 1
            self.skip = nn.Identity() if same else conv(cin, cout, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out if self.skip is None else out + self.skip(x)


def _kernels(kernel_size: int | Sequence[int], depth: int) -> list[int]:
    kernels = [kernel_size] * depth if isinstance(kernel_size, int) else list(kernel_size)
    if len(kernels) != depth:
        raise bad_value(
            "kernel_size", f"an integer or a list of {depth} integers (one per layer)", kernel_size
        )
    return [check_positive_int("kernel_size", k) for k in kernels]


class CNN(nn.Module):
    def __init__(
        self,
        sig: Signature,
        dims: int,
        *,
        width: int,
        depth: int,
        kernel_size: int | Sequence[int],
        stride: int,
        pool: bool,
        readout: str,
        dropout: float,
        norm: str,
        act: str,
        residual: bool,
        embed_dim: int,
    ) -> None:
        super().__init__()
        check_choice("readout", readout, READOUTS)
        width, depth = check_positive_int("width", width), check_positive_int("depth", depth)
        stride, dropout = check_positive_int("stride", stride), check_dropout(dropout)
        self.dims, self.readout = dims, readout
        self.input = SequenceInput(sig, embed_dim) if dims == 1 else None
        cin = self.input.channels if self.input is not None else sig.input_shape[0]
        blocks: list[nn.Module] = []
        size = [self.input.length] if self.input is not None else list(sig.input_shape[1:])
        for k in _kernels(kernel_size, depth):
            blocks.append(ConvBlock(dims, cin, width, k, stride, norm, act, dropout, residual))
            size = [(s + 2 * (k // 2) - k) // stride + 1 for s in size]
            cin = width
            if pool and min(size) >= 2:  # halve the map while there is something to halve
                blocks.append(nn.MaxPool1d(2) if dims == 1 else nn.MaxPool2d(2))
                size = [s // 2 for s in size]
        if min(size) < 1:
            raise bad_value(
                "depth / stride",
                "small enough to leave a non-empty feature map",
                f"depth={depth}, stride={stride} on input {sig.input_shape}",
            )
        self.blocks = nn.Sequential(*blocks)
        features = width
        if readout == "flatten":
            features = width * int(torch.tensor(size).prod())
        self.head = Head(features, sig)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.input is not None:
            x, mask = self.input(x)
            x = x.transpose(1, 2)  # (N, L, C) → (N, C, L)
        h = self.blocks(x)
        if self.readout == "flatten":
            h = h.flatten(1)
        else:
            h = h.flatten(2).transpose(1, 2)  # (N, positions, C)
            if mask is not None and h.shape[1] != mask.shape[1]:
                mask = None  # strided or pooled: positions no longer align with tokens
            h = masked_mean(h, mask) if self.readout == "mean" else masked_max(h, mask)
        return self.head(h)


@MODELS.register("cnn1d", inputs=("vector", "sequence", "text"), instead="cnn2d")
def cnn1d(
    sig: Signature,
    *,
    width: int = 32,
    depth: int = 3,
    kernel_size: int | list[int] = 5,
    stride: int = 1,
    pool: bool = False,
    readout: str = "mean",
    dropout: float = 0.0,
    norm: str = "none",
    activation: str = "relu",
    residual: bool = False,
    embed_dim: int = 64,
) -> nn.Module:
    """1-D CNN; a vector is read as a 1-channel sequence, text as token embeddings."""
    return CNN(
        sig,
        1,
        width=width,
        depth=depth,
        kernel_size=kernel_size,
        stride=stride,
        pool=bool(pool),
        readout=readout,
        dropout=dropout,
        norm=norm,
        act=activation,
        residual=bool(residual),
        embed_dim=embed_dim,
    )


@MODELS.register("cnn2d", inputs=("image",), instead="cnn1d, gru or mlp")
def cnn2d(
    sig: Signature,
    *,
    width: int = 32,
    depth: int = 3,
    kernel_size: int | list[int] = 3,
    stride: int = 1,
    pool: bool = True,
    readout: str = "mean",
    dropout: float = 0.0,
    norm: str = "batch",
    activation: str = "relu",
    residual: bool = False,
) -> nn.Module:
    """2-D CNN for images, max-pooling after each block while the map is at least 2x2."""
    return CNN(
        sig,
        2,
        width=width,
        depth=depth,
        kernel_size=kernel_size,
        stride=stride,
        pool=bool(pool),
        readout=readout,
        dropout=dropout,
        norm=norm,
        act=activation,
        residual=bool(residual),
        embed_dim=0,
    )
