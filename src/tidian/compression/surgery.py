"""Model surgery: which units of a network can be removed together, and removing them.

A *unit group* is a set of tensor slices that stand or fall together: a Linear layer's output
neuron is its weight row and bias entry, the normalisation layer's entries for that feature,
and the matching input column of every layer that reads it. Removing a unit slices all of
them, so the result is a smaller *dense* model (fewer parameters, fewer FLOPs, faster), not a
mask.

The groups come from the model family, because the coupling between layers (residual adds,
gate blocks of a GRU, heads of attention, a flattening readout) lives in ``forward`` code, not
in the module tree. The zoo's families are known here; a user's own module can add a finder
with :func:`register_groups`. Widths that a residual connection ties together form one group
(a *stream*): its units are removed from every layer that reads or adds to it; a stream that
starts at the model's input is left alone (its units are input features).

Saved models rebuild through :func:`conform`: modules are resized to the saved tensor shapes
and the few replaced module types (pruned attention, low-rank factors) are re-created from
the ``structure`` record kept beside the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tidian.exceptions import ConfigError

STRUCTURE_ATTR = "_tidian_structure"  # {module path: {"type": ..., ...}} of replaced modules


@dataclass(frozen=True)
class Member:
    """One tensor slice of a group. Unit ``j`` owns, along ``axis``, in each of ``blocks``
    consecutive blocks (gates, q/k/v, directions, positions), indices ``j*repeat … +repeat``.

    ``role``: "out" slices produce the unit (their weights measure its importance), "in"
    slices consume it, "norm" slices are per-feature normalisation parameters and statistics.
    """

    module: str
    tensor: str
    axis: int
    role: str
    blocks: int = 1
    repeat: int = 1


@dataclass
class Group:
    """Units removable together; ``size`` units now."""

    name: str
    size: int
    members: list[Member] = field(default_factory=list)

    def indices(self, member: Member, keep: torch.Tensor) -> torch.Tensor:
        """Tensor indices along ``member.axis`` that the kept units occupy, in order."""
        r, block = member.repeat, self.size * member.repeat
        within = (keep.view(-1, 1) * r + torch.arange(r).view(1, -1)).flatten()
        return torch.cat([b * block + within for b in range(member.blocks)])


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


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
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
                _set_tensor(module, name, torch.zeros(shapes[key], dtype=tensor.dtype))
                changed = True
        if changed:
            sync_attributes(module)
    return model


# -- finding groups ---------------------------------------------------------------------------

GROUP_FINDERS: dict[type, Callable[[nn.Module], list[Group]]] = {}


def register_groups(cls: type) -> Callable:
    """Decorator: ``@register_groups(MyNet) def groups(model) -> list[Group]``."""

    def wrap(fn: Callable[[nn.Module], list[Group]]) -> Callable[[nn.Module], list[Group]]:
        GROUP_FINDERS[cls] = fn
        return fn

    return wrap


def _out(path: str, module: nn.Module, role: str = "out", **kw: int) -> list[Member]:
    """The per-output-unit tensors of a Linear/Conv/norm layer at ``path``."""
    out = []
    for name in ("weight", "bias", "running_mean", "running_var"):
        tensor = getattr(module, name, None)
        if isinstance(tensor, torch.Tensor):
            out.append(Member(path, name, 0, role, **kw))
    return out


def _norm(path: str, module: nn.Module, **kw: int) -> list[Member]:
    if isinstance(module, nn.Identity):
        return []
    return _out(path, module, "norm", **kw)


def _in(path: str, **kw: int) -> list[Member]:
    return [Member(path, "weight", 1, "in", **kw)]


def unit_groups(model: nn.Module) -> list[Group]:
    """Every removable unit group of ``model`` (empty when none can be removed)."""
    from tidian.models.moe import MoE

    if any(isinstance(m, MoE) for m in model.modules()):
        raise ConfigError(
            "structured pruning of mixture-of-experts layers is not supported (experts and "
            "router share their units); use unstructured pruning (structured: false), "
            "lowrank or quantize on this model."
        )
    for cls in type(model).__mro__:
        if cls in GROUP_FINDERS:
            return GROUP_FINDERS[cls](model)
    raise ConfigError(
        f"structured pruning does not know how units of {type(model).__name__} are wired. "
        "It knows the zoo's families (mlp, cnn1d, cnn2d, gru, lstm, transformer); use "
        "unstructured pruning (structured: false) or describe the model with "
        "tidian.compression.register_groups."
    )


@dataclass
class _Block:
    """One layer of a chain as the stream logic sees it: the tensors that read the incoming
    features, those that write its output, and whether its output is *added* to its input
    (an identity residual), which keeps the incoming width alive instead of starting anew."""

    name: str
    width: int
    reads: list[Member]
    writes: list[Member]
    adds_to_input: bool


def _streams(blocks: list[_Block], final_reads: list[Member]) -> list[Group]:
    """Unit groups of a chain of blocks. A *stream* is one width: it starts at a block that
    writes a fresh tensor and runs through every following block that adds to it (their reads
    and writes share its units), ending at the next reader that starts anew (or the head).
    A stream that starts at the model's input cannot lose units (they are input features)."""
    groups: list[Group] = []
    current: Group | None = None
    from_input = True  # the stream now flowing started at the model's input
    for block in blocks:
        if block.adds_to_input:
            if current is not None:
                current.members += block.reads + block.writes
            continue
        if current is not None:
            current.members += block.reads
            groups.append(current)
        current, from_input = Group(block.name, block.width, list(block.writes)), False
    if current is not None and not from_input:
        current.members += final_reads
        groups.append(current)
    return groups


def _mlp_groups(model: nn.Module) -> list[Group]:
    blocks = [
        _Block(
            f"blocks.{i}",
            block[0].out_features,
            _in(f"blocks.{i}.0"),
            _out(f"blocks.{i}.0", block[0]) + _norm(f"blocks.{i}.1", block[1]),
            model.skips[i],
        )
        for i, block in enumerate(model.blocks)
    ]
    return _streams(blocks, _in("head.linear"))


def _cnn_groups(model: nn.Module) -> list[Group]:
    from tidian.models.cnn import ConvBlock

    blocks = []
    for i, block in enumerate(model.blocks):
        if not isinstance(block, ConvBlock):
            continue  # pooling keeps channels
        conv_skip = block.skip is not None and not isinstance(block.skip, nn.Identity)
        reads = _in(f"blocks.{i}.body.0") + (_in(f"blocks.{i}.skip") if conv_skip else [])
        writes = _out(f"blocks.{i}.body.0", block.body[0])
        writes += _norm(f"blocks.{i}.body.1", block.body[1])
        if conv_skip:
            writes += _out(f"blocks.{i}.skip", block.skip)  # added to the body's output
        identity = isinstance(block.skip, nn.Identity)
        blocks.append(_Block(f"blocks.{i}", block.body[0].out_channels, reads, writes, identity))
    channels = blocks[-1].width if blocks else 1
    return _streams(blocks, _in("head.linear", repeat=model.head.linear.in_features // channels))


def _rnn_groups(model: nn.Module) -> list[Group]:
    directions = 2 if model.bidirectional else 1
    groups = []
    for i, layer in enumerate(model.layers):
        gates = {"LSTM": 4, "GRU": 3}[layer.mode]
        path = f"layers.{i}"
        members = []
        for suffix in ("_l0", "_l0_reverse")[:directions]:
            members += [
                Member(path, f"weight_ih{suffix}", 0, "out", blocks=gates),
                Member(path, f"weight_hh{suffix}", 0, "out", blocks=gates),
                Member(path, f"weight_hh{suffix}", 1, "in"),
                Member(path, f"bias_ih{suffix}", 0, "out", blocks=gates),
                Member(path, f"bias_hh{suffix}", 0, "out", blocks=gates),
            ]
        if i + 1 < len(model.layers):
            for suffix in ("_l0", "_l0_reverse")[:directions]:
                members.append(
                    Member(f"layers.{i + 1}", f"weight_ih{suffix}", 1, "in", blocks=directions)
                )
        else:
            # The readout: (N, [L,] directions × hidden) — 'flatten' repeats the layout per step.
            blocks = directions * (model.input.length if model.readout == "flatten" else 1)
            if not isinstance(model.norm, nn.Identity):
                members += _out("norm", model.norm, "norm", blocks=blocks)
            members += _in("head.linear", blocks=blocks)
        groups.append(Group(path, layer.hidden_size, members))
    if model.residual and len(groups) > 1:
        # Each layer adds its output to its input, so hidden unit j of every layer is one
        # unit of the residual stream: they are removed together.
        return [Group("layers", groups[0].size, [m for g in groups for m in g.members])]
    return groups


def plain_attention(model: nn.Module, path: str) -> Attention:
    """Replace the ``nn.MultiheadAttention`` of the encoder layer at ``path`` by the equivalent
    :class:`Attention` (idempotent). The layer then takes its plain path, which a layer with
    pruned heads or factorised feed-forward weights needs: the fused path reads the original
    tensors directly."""
    attention = get_module(model, f"{path}.self_attn")
    if isinstance(attention, nn.MultiheadAttention):
        attention = Attention.from_mha(attention)
        set_module(model, f"{path}.self_attn", attention)
        record_replacement(
            model, f"{path}.self_attn", {"type": "attention", "heads": attention.num_heads}
        )
    return attention


def _transformer_groups(model: nn.Module) -> list[Group]:
    groups = []
    for i, layer in enumerate(model.encoder.layers):
        path = f"encoder.layers.{i}"
        attention = plain_attention(model, path)
        d = attention.head_dim
        groups.append(
            Group(
                f"{path}.heads",
                attention.num_heads,
                [
                    Member(f"{path}.self_attn", "in_proj_weight", 0, "out", blocks=3, repeat=d),
                    Member(f"{path}.self_attn", "in_proj_bias", 0, "out", blocks=3, repeat=d),
                    Member(f"{path}.self_attn.out_proj", "weight", 1, "in", repeat=d),
                ],
            )
        )
        groups.append(
            Group(
                f"{path}.feedforward",
                layer.linear1.out_features,
                _out(f"{path}.linear1", layer.linear1) + _in(f"{path}.linear2"),
            )
        )
    return groups


def _register_zoo() -> None:
    from tidian.models.cnn import CNN
    from tidian.models.mlp import MLP
    from tidian.models.rnn import RNN
    from tidian.models.transformer import Transformer

    GROUP_FINDERS.setdefault(MLP, _mlp_groups)
    GROUP_FINDERS.setdefault(CNN, _cnn_groups)
    GROUP_FINDERS.setdefault(RNN, _rnn_groups)
    GROUP_FINDERS.setdefault(Transformer, _transformer_groups)


_register_zoo()


def remove_units(model: nn.Module, group: Group, keep: torch.Tensor) -> None:
    """Keep only units ``keep`` (sorted indices) of ``group`` in ``model``, in place."""
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    if len(keep) == 0:
        raise ConfigError(f"cannot remove every unit of {group.name}: keep at least one.")
    touched = {}
    for member in group.members:
        module = get_module(model, member.module)
        tensor = getattr(module, member.tensor)
        index = group.indices(member, keep).to(tensor.device)
        with torch.no_grad():
            _set_tensor(module, member.tensor, tensor.index_select(member.axis, index).clone())
        touched[member.module] = module
    record_replacement(model, "", {"type": "resized"})
    for path, module in touched.items():
        sync_attributes(module)
        if isinstance(module, Attention):
            record_replacement(model, path, {"type": "attention", "heads": module.num_heads})
    group.size = len(keep)
