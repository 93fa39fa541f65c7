"""Knowledge distillation pieces: the soft-target loss, hooks by module path, cached teacher
targets, feature hints with a learned projection, and attention-map hints.

The step that uses them is :class:`tidian.training.steps.DistillStep`; the stage that builds a
student and trains it is ``tidian.stages.distill``. Everything a teacher contributes (its
outputs, the features and attention maps a hint matches) is computed **once** on the transfer
set by :func:`teacher_targets` and looked up by row during training — the teacher never runs
inside the training loop.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tidian.exceptions import ConfigError


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: KL(teacher_T ‖ student_T) × T², batch mean.

    ``teacher`` may be logits or log-probabilities (an averaged ensemble): softmax is invariant
    to the shift between the two. The T² factor keeps the gradients' size independent of T.
    """
    t = float(temperature)
    return F.kl_div(
        F.log_softmax(student / t, dim=-1),
        F.log_softmax(teacher / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def module_at(model: nn.Module, path: str, *, role: str = "model") -> nn.Module:
    """The submodule at dotted ``path``; an unknown path lists the nearest existing ones."""
    names = dict(model.named_modules())
    if path in names and path:
        return names[path]
    close = difflib.get_close_matches(path, [n for n in names if n], n=5, cutoff=0.3)
    listing = close or [n for n in names if n][:8]
    raise ConfigError(
        f"the {role} has no module at {path!r}. Nearest module paths: {', '.join(listing)}. "
        f"List them all with: [n for n, _ in model.named_modules()]."
    )


_MAP_LAYERS = (nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)
_FEATURE_LAYERS = (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, nn.RNNBase, nn.Embedding)


def pooled(feature: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A layer's output as one vector per sample, (N, C): maps are averaged over positions.

    Channels are axis 1 when the module's last layer is a convolution or its norm (N, C, ...),
    the last axis otherwise (N, ..., C) — so a student and a teacher with different lengths or
    map sizes still match.
    """
    if feature.ndim == 2:
        return feature
    last = None
    for sub in module.modules():
        if isinstance(sub, _MAP_LAYERS + _FEATURE_LAYERS):
            last = sub
    if isinstance(last, _MAP_LAYERS):
        return feature.flatten(2).mean(dim=2)
    return feature.flatten(1, -2).mean(dim=1)


def attention_map(module: nn.Module, query: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Head-averaged attention probabilities (N, L, L) of a self-attention layer for input
    ``query`` (N, L, D), recomputed from its projection weights (the fused kernels do not
    return them). ``pad``: True at padding keys. Averaging over heads lets a student with fewer
    heads match a teacher's maps (as in MiniLM's attention transfer)."""
    weight = getattr(module, "in_proj_weight", None)
    if weight is None or not hasattr(module, "num_heads"):
        raise ConfigError(
            f"attention distillation needs a self-attention module with one input projection "
            f"(nn.MultiheadAttention); got {type(module).__name__}. Point the path at a "
            "layer's self_attn, e.g. 'encoder.layers.0.self_attn'."
        )
    heads, bias = module.num_heads, module.in_proj_bias
    inner = weight.shape[0] // 3
    weight, bias = weight[: 2 * inner], None if bias is None else bias[: 2 * inner]
    q, k = F.linear(query, weight, bias).chunk(2, dim=-1)
    n, length, _ = q.shape
    q = q.view(n, length, heads, -1).transpose(1, 2)
    k = k.view(n, length, heads, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1).mean(dim=1)


class Capture:
    """Forward hooks that keep, per module path, what a hint needs from the last forward:
    the pooled output (``feature``) or the head-averaged attention map (``attention``)."""

    def __init__(self, model: nn.Module, paths: dict[str, str], role: str) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.handles = []
        for path, what in paths.items():
            module = module_at(model, path, role=role)
            if what == "feature":
                hook = self._feature(path, module)
                self.handles.append(module.register_forward_hook(hook))
            else:
                hook = self._attention(path, module)
                self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _feature(self, path: str, module: nn.Module):
        def hook(mod, args, out):
            out = out[0] if isinstance(out, tuple) else out
            self.values[path] = pooled(out, mod)

        return hook

    def _attention(self, path: str, module: nn.Module):
        def hook(mod, args, kwargs):
            query = args[0] if args else kwargs["query"]
            pad = kwargs.get("key_padding_mask", args[3] if len(args) > 3 else None)
            if pad is not None and pad.dtype != torch.bool:  # an additive float mask
                pad = pad < 0
            self.values[path] = attention_map(mod, query, pad)

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def captured(model: nn.Module, paths: dict[str, str], role: str) -> Iterator[Capture]:
    capture = Capture(model, paths, role)
    try:
        yield capture
    finally:
        capture.close()


@dataclass
class TeacherTargets:
    """What the teacher contributes, one row per transfer-set example, computed once."""

    outputs: torch.Tensor
    hints: dict[str, torch.Tensor]


@torch.no_grad()
def teacher_targets(
    teacher: nn.Module, x, hints: dict[str, str] | None = None, batch_size: int = 512
) -> TeacherTargets:
    """The teacher's outputs (and the hinted layers' features or attention maps) for every
    row of ``x``, in eval mode, on the teacher's device, stored on the CPU."""
    hints = hints or {}
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    was_training = teacher.training
    teacher.eval()
    x = torch.as_tensor(x)
    outputs, values = [], {path: [] for path in hints}
    with captured(teacher, hints, "teacher") as capture:
        for i in range(0, len(x), batch_size):
            outputs.append(teacher(x[i : i + batch_size].to(device)).float().cpu())
            for path in hints:
                values[path].append(capture.values[path].float().cpu())
    teacher.train(was_training)
    return TeacherTargets(
        torch.cat(outputs), {path: torch.cat(parts) for path, parts in values.items()}
    )


@dataclass(frozen=True)
class Hint:
    """One intermediate-layer term: a student module matched to a teacher module.

    ``kind`` is ``feature`` (MSE between the pooled outputs, through a learned linear
    projection when the widths differ — FitNets) or ``attention`` (KL between head-averaged
    attention distributions per query position, padding rows ignored)."""

    student: str
    teacher: str
    kind: str = "feature"
    weight: float = 1.0


def hint_loss(hint: Hint, student: torch.Tensor, target: torch.Tensor, project: nn.Module):
    if hint.kind == "feature":
        return F.mse_loss(project(student), target)
    # attention rows: KL(teacher row ‖ student row), rows of padding queries carry no mass
    valid = target.sum(dim=-1) > 0
    t = target.clamp_min(1e-12)
    s = student.clamp_min(1e-12)
    kl = (t * (t.log() - s.log())).sum(dim=-1)
    return kl[valid].mean() if valid.any() else kl.sum() * 0.0


def projections(
    student: nn.Module, x_probe: torch.Tensor, hints: Sequence[Hint], targets: TeacherTargets
) -> nn.ModuleDict:
    """Learned projections for feature hints whose widths differ (identity otherwise); the
    student's widths are read from one forward pass on ``x_probe``. Attention hints check that
    the two maps have the same shape (the same sequence length)."""
    paths = {h.student: h.kind for h in hints}
    was_training = student.training
    student.eval()
    with torch.no_grad(), captured(student, paths, "student") as capture:
        student(x_probe)
        widths = {p: v.shape for p, v in capture.values.items()}
    student.train(was_training)
    out = nn.ModuleDict()
    for i, hint in enumerate(hints):
        s_shape, t_shape = widths[hint.student], targets.hints[hint.teacher].shape
        if hint.kind == "attention":
            if s_shape[1:] != t_shape[1:]:
                raise ConfigError(
                    f"attention hint {hint.student!r} → {hint.teacher!r}: the maps differ in "
                    f"shape (student {tuple(s_shape[1:])}, teacher {tuple(t_shape[1:])}); the "
                    "two models must attend over the same positions (same length, same "
                    "pooling: a class token adds one)."
                )
            out[str(i)] = nn.Identity()
        elif s_shape[1] == t_shape[1]:
            out[str(i)] = nn.Identity()
        else:
            out[str(i)] = nn.Linear(s_shape[1], t_shape[1])
    return out
