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

Removing units records the change in the model's structure record
(``models.structure``), so a pruned model saves and reloads like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from tidian.exceptions import ConfigError
from tidian.models.cnn import CNN, ConvBlock
from tidian.models.mlp import MLP
from tidian.models.moe import MoE
from tidian.models.rnn import RNN
from tidian.models.structure import (
    Attention,
    LowRank,
    get_module,
    record_replacement,
    set_module,
    set_tensor,
    sync_attributes,
)
from tidian.models.transformer import Transformer


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


def refuse_unsupported(model: nn.Module) -> None:
    """Raise ConfigError for models whose units structured pruning cannot remove at all."""
    if any(isinstance(m, MoE) for m in model.modules()):
        raise ConfigError(
            "structured pruning of mixture-of-experts layers is not supported (experts and "
            "router share their units); use unstructured pruning (structured: false), "
            "lowrank or quantize on this model."
        )
    factorised = [path for path, m in model.named_modules() if isinstance(m, LowRank)]
    if factorised:
        raise ConfigError(
            f"structured pruning of factorised (low-rank) layers is not supported "
            f"({', '.join(factorised[:3])}); prune before lowrank in the recipe (compress "
            "does both in that order), or use unstructured pruning (structured: false)."
        )


def group_finder(model: nn.Module) -> Callable[[nn.Module], list[Group]] | None:
    """The registered unit-group finder of ``model``'s class (or a base class), if any."""
    for cls in type(model).__mro__:
        if cls in GROUP_FINDERS:
            return GROUP_FINDERS[cls]
    return None


def unit_groups(model: nn.Module) -> list[Group]:
    """Every removable unit group of ``model`` by its registered finder (empty when none can
    be removed). Models without one are traced (``compression.traced.find_groups``)."""
    refuse_unsupported(model)
    finder = group_finder(model)
    if finder is not None:
        return finder(model)
    raise ConfigError(
        f"structured pruning does not know how units of {type(model).__name__} are wired "
        "without tracing it on example inputs (give the task); or use unstructured pruning "
        "(structured: false), or describe the model with tidian.compression.register_groups."
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


GROUP_FINDERS.setdefault(MLP, _mlp_groups)
GROUP_FINDERS.setdefault(CNN, _cnn_groups)
GROUP_FINDERS.setdefault(RNN, _rnn_groups)
GROUP_FINDERS.setdefault(Transformer, _transformer_groups)


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
            set_tensor(module, member.tensor, tensor.index_select(member.axis, index).clone())
        touched[member.module] = module
    record_replacement(model, "", {"type": "resized"})
    for path, module in touched.items():
        sync_attributes(module)
        if isinstance(module, Attention):
            record_replacement(model, path, {"type": "attention", "heads": module.num_heads})
    group.size = len(keep)
