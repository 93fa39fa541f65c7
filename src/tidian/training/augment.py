"""Data augmentation inside the training loop: each batch is transformed as it is drawn (no
pre-made copies multiply memory), from a generator seeded by the training seed, so a run is
reproducible.

A *policy* is recipe data, ``{operation: strength}``; which operations apply depends on the
input kind:

============  =================================================================================
vector        ``noise`` (Gaussian σ, in the standardised units the model sees), ``mixup`` (α),
              ``smote`` (probability that a row of a minority class is moved towards another
              row of its class in the batch)
sequence      ``shift`` (circular shift by up to n steps), ``scale`` (× U[1−s, 1+s]),
              ``noise``, ``time_mask`` (zero a window of up to n steps), ``mixup``
image         ``flip`` (horizontal, probability; only where the label survives it), ``shift``
              (translate by up to n pixels, zero fill), ``rotate`` (up to ± degrees), ``crop``
              (a random crop of at least this share of the side, resized back), ``cutout``
              (zero a square of side n), ``noise``, ``mixup``, ``cutmix`` (α)
text          ``token_dropout`` (probability a token becomes padding), ``span_mask`` (a span
              of up to n tokens becomes padding)
============  =================================================================================

``mixup`` / ``cutmix`` (classification) mix two rows and train on both labels with the mixing
weight (the loss, not the labels, is mixed, so any classification loss works).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tidian.exceptions import ConfigError, bad_value
from tidian.models.moe import aux_loss

OPERATIONS: dict[str, tuple[str, ...]] = {
    "vector": ("noise", "mixup", "smote"),
    "sequence": ("shift", "scale", "noise", "time_mask", "mixup"),
    "image": ("flip", "shift", "rotate", "crop", "cutout", "noise", "mixup", "cutmix"),
    "text": ("token_dropout", "span_mask"),
}
_PROBABILITIES = ("flip", "smote", "token_dropout")
_INTEGERS = ("shift", "time_mask", "cutout", "span_mask")
MIXING = ("mixup", "cutmix")


def check_policy(policy: Any, input_kind: str, target_kind: str, where: str = "augment") -> dict:
    """The policy as a plain dict, or a ConfigError naming the bad entry and what fits."""
    if not isinstance(policy, dict) or not policy:
        raise bad_value(where, "a mapping {operation: strength}", policy)
    allowed = OPERATIONS[input_kind]
    for op, value in policy.items():
        if op not in allowed:
            known = sorted({o for ops in OPERATIONS.values() for o in ops})
            what = "unknown" if op not in known else f"not for {input_kind} inputs"
            raise ConfigError(
                f"{where}.{op}: {what}; {input_kind} inputs take {', '.join(allowed)}."
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise bad_value(f"{where}.{op}", "a non-negative number", value)
        if op in _PROBABILITIES and value > 1:
            raise bad_value(f"{where}.{op}", "a probability in [0, 1]", value)
        if op in _INTEGERS and value != int(value):
            raise bad_value(f"{where}.{op}", "a whole number of steps / pixels / tokens", value)
        if op == "crop" and not 0 < value <= 1:
            raise bad_value(f"{where}.crop", "the kept share of the side, in (0, 1]", value)
        if op in MIXING and target_kind != "classes":
            raise ConfigError(f"{where}.{op}: mixes labels, so it needs a classification task.")
    return dict(policy)


def _uniform(n: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g).to(device)


class Augmenter:
    """Applies a policy to batches: ``augment(x, y) -> (x, y, y2, lam)`` where ``y2``/``lam``
    are the mixed partner labels and weight (None when nothing was mixed)."""

    def __init__(self, policy: dict, task: Any, seed: int) -> None:
        self.policy = check_policy(policy, task.input_kind, task.target_kind)
        self.kind = task.input_kind
        self.g = torch.Generator().manual_seed(seed * 7919 + 17)
        self.rng = np.random.default_rng([seed, 7919])  # mixing weights (Beta draws)
        self.minority = None
        if "smote" in self.policy and task.target_kind == "classes":
            counts = torch.bincount(torch.as_tensor(task.train.y))
            self.minority = counts < counts.max()

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        p, g, n = self.policy, self.g, len(x)
        x = x.clone()
        if self.kind == "text":
            if p.get("token_dropout"):
                drop = torch.rand(x.shape, generator=g).to(x.device) < p["token_dropout"]
                x[drop] = 0
            if p.get("span_mask"):
                self._span(x, int(p["span_mask"]), dim=1)
            return x, y, None, None
        if self.kind == "vector" and p.get("smote") and self.minority is not None:
            x = self._smote(x, y, p["smote"])
        if self.kind == "sequence":
            if p.get("shift"):
                x = self._roll(x, int(p["shift"]))
            if p.get("scale"):
                s = p["scale"]
                x = x * (1 + (2 * _uniform(n, g, x.device) - 1) * s).reshape(n, 1, 1)
            if p.get("time_mask"):
                self._span(x, int(p["time_mask"]), dim=1)
        if self.kind == "image":
            x = self._image(x)
        if p.get("noise"):
            x = x + p["noise"] * torch.randn(x.shape, generator=g).to(x.device)
        mixers = [m for m in MIXING if p.get(m)]
        if not mixers:
            return x, y, None, None
        pick = mixers[int(torch.randint(len(mixers), (1,), generator=g))]
        if pick == "cutmix":
            return self._cutmix(x, y, p["cutmix"])
        lam = float(self.rng.beta(p["mixup"], p["mixup"]))
        lam = max(lam, 1 - lam)
        perm = torch.randperm(n, generator=g).to(x.device)
        return lam * x + (1 - lam) * x[perm], y, y[perm], lam

    # -- operations -----------------------------------------------------------------------
    def _roll(self, x: torch.Tensor, most: int) -> torch.Tensor:
        """Circular shift of each sequence by its own k in [−most, most] (time axis 1)."""
        n, length = x.shape[0], x.shape[1]
        k = torch.randint(-most, most + 1, (n,), generator=self.g).to(x.device)
        index = (torch.arange(length, device=x.device).reshape(1, -1) - k.reshape(-1, 1)) % length
        return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))

    def _span(self, x: torch.Tensor, most: int, dim: int) -> None:
        """Zero a window of up to ``most`` positions per row, in place."""
        n, length = x.shape[0], x.shape[dim]
        width = torch.randint(0, most + 1, (n,), generator=self.g)
        start = (torch.rand(n, generator=self.g) * (length - width + 1).clamp_min(1)).long()
        pos = torch.arange(length).reshape(1, -1)
        mask = ((pos >= start.reshape(-1, 1)) & (pos < (start + width).reshape(-1, 1))).to(x.device)
        if x.ndim == 3:
            mask = mask.unsqueeze(-1).expand_as(x)
        x[mask] = 0

    def _smote(self, x: torch.Tensor, y: torch.Tensor, prob: float) -> torch.Tensor:
        """Move chosen minority rows part of the way towards another row of the same class."""
        out = x.clone()
        chosen = (torch.rand(len(x), generator=self.g) < prob).to(x.device)
        chosen &= self.minority.to(x.device)[y]
        for i in torch.nonzero(chosen).reshape(-1).tolist():
            same = torch.nonzero(y == y[i]).reshape(-1)
            if len(same) > 1:
                j = same[int(torch.randint(len(same), (1,), generator=self.g))]
                u = float(torch.rand(1, generator=self.g))
                out[i] = x[i] + u * (x[j] - x[i])
        return out

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        p, g, n = self.policy, self.g, len(x)
        _, _, h, w = x.shape
        if p.get("flip"):
            flip = (torch.rand(n, generator=g) < p["flip"]).to(x.device)
            x = torch.where(flip.reshape(n, 1, 1, 1), x.flip(-1), x)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        affine = False
        if p.get("rotate"):
            angle = (2 * torch.rand(n, generator=g) - 1) * math.radians(p["rotate"])
            c, s = angle.cos(), angle.sin()
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
            affine = True
        if p.get("crop") and p["crop"] < 1:
            keep = p["crop"] + (1 - p["crop"]) * torch.rand(n, generator=g)
            theta[:, :, :2] *= keep.reshape(n, 1, 1)
            theta[:, :, 2] += (2 * torch.rand(n, 2, generator=g) - 1) * (1 - keep).reshape(n, 1)
            affine = True
        if p.get("shift"):
            most = int(p["shift"])
            d = torch.randint(-most, most + 1, (n, 2), generator=g).float()
            theta[:, 0, 2] += 2 * d[:, 0] / w
            theta[:, 1, 2] += 2 * d[:, 1] / h
            affine = True
        if affine:
            grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
        if p.get("cutout"):
            side = int(p["cutout"])
            cy = torch.randint(0, h, (n,), generator=g)
            cx = torch.randint(0, w, (n,), generator=g)
            rows = torch.arange(h).reshape(1, -1, 1)
            cols = torch.arange(w).reshape(1, 1, -1)
            box = (
                ((rows - cy.reshape(-1, 1, 1)).abs() <= side // 2)
                & ((cols - cx.reshape(-1, 1, 1)).abs() <= side // 2)
            ).to(x.device)
            x = x.masked_fill(box.unsqueeze(1), 0.0)
        return x

    def _cutmix(self, x: torch.Tensor, y: torch.Tensor, alpha: float):
        """Paste a box from a partner image; the label weight is the kept area's share."""
        n, _, h, w = x.shape
        lam = float(self.rng.beta(alpha, alpha))
        perm = torch.randperm(n, generator=self.g).to(x.device)
        bh, bw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        top = int(torch.randint(0, h - bh + 1, (1,), generator=self.g))
        left = int(torch.randint(0, w - bw + 1, (1,), generator=self.g))
        x = x.clone()
        x[:, :, top : top + bh, left : left + bw] = x[perm, :, top : top + bh, left : left + bw]
        lam = 1 - (bh * bw) / (h * w)
        return x, y, y[perm], lam


class AugmentStep:
    """Wraps a training step: the batch is augmented first; mixed batches train on both
    labels, ``lam * loss(y) + (1 − lam) * loss(y2)`` (one forward pass)."""

    def __init__(self, inner: Callable, augmenter: Augmenter) -> None:
        self.inner, self.augment = inner, augmenter

    def __call__(self, model, x, y, index):
        x, y, y2, lam = self.augment(x, y)
        if y2 is None:
            return self.inner(model, x, y, index)
        loss_fn = getattr(self.inner, "loss", None)
        if loss_fn is None or not hasattr(self.inner, "penalized"):
            raise ConfigError(
                "mixup / cutmix mix the labels, which this training step (distillation) "
                "does not support; drop them from the policy."
            )

        out = model(x)
        loss = lam * loss_fn(out, y) + (1 - lam) * loss_fn(out, y2) + aux_loss(model)
        if self.inner.l1:
            loss = loss + self.inner.l1 * sum(p.abs().sum() for p in self.inner.penalized)
        return loss
