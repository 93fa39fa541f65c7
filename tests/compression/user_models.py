"""Models tidian has no unit-group finder for, as a user would write them: structured pruning
finds their units by tracing (compression/traced.py)."""

import torch
from torch import nn

import tidian


class Excite(nn.Module):
    """Squeeze-and-excitation: channels re-weighted by a gate computed from their means."""

    def __init__(self, channels: int, reduce: int = 4) -> None:
        super().__init__()
        self.squeeze = nn.Linear(channels, channels // reduce)
        self.excite = nn.Linear(channels // reduce, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


class SECNN(nn.Module):
    """conv → BN → SE, a residual conv block, a depthwise conv, then a flattening head."""

    def __init__(self, channels: int, shape: tuple[int, ...], classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.se = Excite(width)
        self.body = nn.Conv2d(width, width, 3, padding=1)
        self.body_norm = nn.BatchNorm2d(width)
        self.mix = nn.Conv2d(width, width // 2, 1)
        self.depthwise = nn.Conv2d(width // 2, width // 2, 3, padding=1, groups=width // 2)
        self.head = nn.Linear(width // 2 * shape[1] * shape[2], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.se(torch.relu(self.norm(self.stem(x))))
        h = h + torch.relu(self.body_norm(self.body(h)))
        h = self.depthwise(torch.relu(self.mix(h)))
        return self.head(torch.relu(h).flatten(1))


class ResMLP(nn.Module):
    """Pre-norm residual MLP blocks on one width, with a plain hidden layer before the head."""

    def __init__(self, features: int, classes: int, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(features, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, 2 * width),
                nn.GELU(),
                nn.Linear(2 * width, width),
            )
            for _ in range(2)
        )
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(torch.relu(self.hidden(h)))


@tidian.register_model("test_secnn", inputs=("image",))
def secnn(sig: tidian.Signature, *, width: int = 16) -> nn.Module:
    """An SE-block CNN with a residual and a depthwise convolution."""
    return SECNN(sig.input_shape[0], sig.input_shape, sig.n_outputs, width)


@tidian.register_model("test_resmlp", inputs=("vector",))
def resmlp(sig: tidian.Signature, *, width: int = 16) -> nn.Module:
    """A residual MLP with layer norms."""
    return ResMLP(sig.input_shape[0], sig.n_outputs, width)
