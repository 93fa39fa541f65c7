"""How a model's structure was changed, and rebuilding it from that record.

Compression replaces or resizes modules: pruning removes units (tensors shrink), head pruning
swaps ``nn.MultiheadAttention`` for :class:`Attention`, low-rank factorisation swaps a layer
for :class:`LowRank`. A changed model carries a *structure record* ``{module path: {"type":
...}}`` that :func:`structure_of` collects and ``save_model`` writes beside the weights, so
``load_model`` can rebuild it without pickle: build the zoo model from its spec, then
:func:`conform` it — re-create the recorded replacements and resize every tensor to its saved
shape (the values are loaded afterwards).

This sits with the models (not with compression) because loading any saved model needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tidian.exceptions import ConfigError

STRUCTURE_ATTR = "_tidian_structure"  # {module path: {"type": ..., ...}} of replaced modules


# -- replaced modules ------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention whose inner width (heads × head_dim) may differ from the
    model width — what ``nn.MultiheadAttention`` cannot express once heads are removed.

    Same parameters, same arithmetic and the same call signature as the module it replaces
    inside ``nn.TransformerEncoderLayer`` (which then takes its plain, non-fused path).
    """

    batch_first = True
    _qkv_same_embed_dim = False  # tells the encoder layer not to use the fused fast path

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        inner = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner))
        self.out_proj = nn.Linear(inner, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> Attention:
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None or not mha.batch_first:
            raise ConfigError(
                "head pruning supports self-attention with one input projection, biases and "
                "batch_first=True (the zoo's transformer); this attention layer differs."
            )
        new = cls(mha.embed_dim, mha.num_heads, mha.head_dim, mha.dropout)
        with torch.no_grad():
            new.in_proj_weight.copy_(mha.in_proj_weight)
            new.in_proj_bias.copy_(mha.in_proj_bias)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        n, length, _ = query.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, h, d).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if attn_mask is not None:
            scores = (
                scores + attn_mask
                if attn_mask.is_floating_point()
                else scores.masked_fill(attn_mask, float("-inf"))
            )
        if key_padding_mask is not None:  # the encoder may pass it as an additive float mask
            pad = key_padding_mask[:, None, None, :]
            scores = (
                scores + pad if pad.is_floating_point() else scores.masked_fill(pad, float("-inf"))
            )
        weights = F.dropout(scores.softmax(-1), self.dropout, self.training)
        out = (weights @ v).transpose(1, 2).reshape(n, length, h * d)
        return self.out_proj(out), None


class LowRank(nn.Module):
    """A Linear or Conv layer factorised as ``second(first(x))`` with ``rank`` channels
    between: ``first`` has the original kernel and no bias, ``second`` is 1×1 with the bias."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    @property
    def rank(self) -> int:
        return self.second.weight.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def lowrank_layers(old: nn.Module, rank: int) -> LowRank:
    """The (uninitialised) two-layer replacement of a Linear or Conv layer at ``rank``."""
    if isinstance(old, nn.Linear):
        return LowRank(
            nn.Linear(old.in_features, rank, bias=False),
            nn.Linear(rank, old.out_features, bias=old.bias is not None),
        )
    conv = type(old)
    first = conv(
        old.in_channels,
        rank,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=False,
    )
    return LowRank(first, conv(rank, old.out_channels, 1, bias=old.bias is not None))


def _placeholder_lowrank(old: nn.Module, record: dict[str, Any]) -> nn.Module:
    return lowrank_layers(old, int(record["rank"]))


def _placeholder_attention(old: nn.Module, record: dict[str, Any]) -> nn.Module:
    heads = int(record["heads"])
    return Attention(old.embed_dim, heads, old.head_dim, old.dropout)


REPLACEMENTS: dict[str, Callable[[nn.Module, dict[str, Any]], nn.Module]] = {
    "lowrank": _placeholder_lowrank,
    "attention": _placeholder_attention,
}


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(get_module(model, parent), leaf, new)


def record_replacement(model: nn.Module, path: str, record: dict[str, Any]) -> None:
    structure = dict(getattr(model, STRUCTURE_ATTR, {}) or {})
    structure[path] = record
    object.__setattr__(model, STRUCTURE_ATTR, structure)


def structure_of(model: nn.Module) -> dict[str, Any]:
    """What a saved model needs to rebuild beyond its zoo spec: replaced modules by path,
    and under ``""`` whether units were removed (tensor shapes then come from the weights).
    Records of compressed sub-models (an ensemble's members) are included under their path."""
    out = dict(getattr(model, STRUCTURE_ATTR, {}) or {})
    for path, module in model.named_modules():
        if path and path not in out:
            for sub, record in (getattr(module, STRUCTURE_ATTR, {}) or {}).items():
                key = f"{path}.{sub}" if sub else path
                out.setdefault(key, record)
    if any(k for k in out) and "" not in out:
        out[""] = {"type": "resized"}  # shapes come from the weights
    return out


# -- keeping module attributes true to their tensors ----------------------------------------


def sync_attributes(module: nn.Module) -> None:
    """Set a standard module's size attributes from its (resized) tensors."""
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.conv._ConvNd):
        groups = module.groups
        module.out_channels = module.weight.shape[0]
        module.in_channels = module.weight.shape[1] * groups
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = (
            module.running_mean.shape[0]
            if module.running_mean is not None
            else (module.weight.shape[0])
        )
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            module.normalized_shape = tuple(module.weight.shape)
    elif isinstance(module, nn.GroupNorm):
        if module.weight is not None:
            module.num_channels = module.weight.shape[0]
    elif isinstance(module, nn.RNNBase):
        gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
        module.hidden_size = module.weight_hh_l0.shape[1]
        module.input_size = module.weight_ih_l0.shape[1]
        if gates * module.hidden_size != module.weight_hh_l0.shape[0]:
            raise ConfigError(f"inconsistent recurrent weights after resizing {module}.")
        module._init_flat_weights()
    elif isinstance(module, Attention):
        module.num_heads = module.in_proj_weight.shape[0] // (3 * module.head_dim)
    elif isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = module.weight.shape


def set_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    if name in module._parameters:
        old = module._parameters[name]
        module._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        module._buffers[name] = value


def conform(model: nn.Module, shapes: dict[str, tuple[int, ...]], structure: dict[str, Any]):
    """Make a freshly built model match a saved one: replace the recorded modules, then
    resize every tensor whose saved shape differs (its values are loaded afterwards)."""
    for path, record in sorted(structure.items(), key=lambda kv: kv[0].count(".")):
        kind = record.get("type")
        if kind == "resized":  # the model (or a member) had units removed: shapes below
            continue
        if kind not in REPLACEMENTS:
            raise ConfigError(f"saved model names an unknown module replacement {kind!r}.")
        set_module(model, path, REPLACEMENTS[kind](get_module(model, path), record))
    object.__setattr__(model, STRUCTURE_ATTR, dict(structure))
    for path, module in model.named_modules():
        changed = False
        for name, tensor in [*module._parameters.items(), *module._buffers.items()]:
            key = f"{path}.{name}" if path else name
            if tensor is not None and key in shapes and tuple(tensor.shape) != shapes[key]:
                set_tensor(module, name, torch.zeros(shapes[key], dtype=tensor.dtype))
                changed = True
        if changed:
            sync_attributes(module)
    return model
