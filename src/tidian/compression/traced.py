"""Unit groups of a model tidian has never seen, found from its traced dependency graph.

The zoo's families have hand-written finders (``surgery.GROUP_FINDERS``); any other module —
a user's SE-block CNN, a residual network — is traced by Torch-Pruning's ``DependencyGraph``
(``pip install 'tidian[prune]'``). It follows channels through residual additions,
multiplications (squeeze-and-excitation gates), flattening and normalisation, and is the
best-kept library for the job (maintained, covers far more operators than a tracer written
here would). Its groups are translated into tidian's :class:`~tidian.compression.surgery.Group`,
so importance, removal, saving and loading are tidian's own, as for zoo models.

A group is kept only when every tensor in it is one tidian knows how to slice (Linear and
Conv weights and biases with ``groups=1``, batch norms) and when each unit's
indices in every tensor are the ones the Group's layout says (checked unit by unit against
the graph for the first, second and last unit): anything else — a concatenation, a
depthwise convolution, an embedding — leaves its units in place rather than risk a wrong
cut. A width normalised by a LayerNorm is left whole too: its units share their statistics,
so removing one would change the others. Layers whose output is the model's output are never
narrowed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tidian.compression.surgery import Group, Member, group_finder, refuse_unsupported, unit_groups
from tidian.exceptions import ConfigError, require

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def find_groups(model: nn.Module, example: torch.Tensor | None = None) -> list[Group]:
    """The unit groups of ``model``: by its class's registered finder (the zoo's families,
    ``register_groups``), else traced on ``example`` (a small batch of real inputs)."""
    refuse_unsupported(model)
    if group_finder(model) is not None or example is None:
        return unit_groups(model)
    return traced_groups(model, example)


def traced_groups(model: nn.Module, example: torch.Tensor) -> list[Group]:
    """Every unit group of ``model`` that can be removed safely, traced on ``example`` (a
    small batch of real inputs)."""
    tp = require("torch_pruning", "prune", "structured pruning of a model tidian does not know")
    names = {module: path for path, module in model.named_modules()}
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # the graph is traced through autograd
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        with torch.no_grad():
            heads = _output_layers(model, example)
        groups = []
        for tp_group in graph.get_all_groups(ignored_layers=heads, root_module_types=_WEIGHTED):
            group = _translate(tp_group, names)
            if group is not None and _same_layout(graph, tp_group, group, names):
                groups.append(group)
    except (RuntimeError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(
            f"structured pruning could not trace {type(model).__name__} ({type(err).__name__}: "
            f"{err}); use unstructured pruning (structured: false) or describe its units with "
            "tidian.compression.register_groups."
        ) from None
    finally:
        model.train(was_training)
    return groups


def _output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers whose output is the model's output (their width is the task's)."""
    outputs: list[tuple[nn.Module, Any]] = []
    hooks = [
        m.register_forward_hook(lambda m, _i, out: outputs.append((m, out)))
        for m in model.modules()
        if isinstance(m, _WEIGHTED)
    ]
    try:
        result = model(example)
    finally:
        for h in hooks:
            h.remove()
    final = [m for m, out in outputs if out is result]
    if final or not outputs:
        return final
    # the output was post-processed (scaled, reshaped): the last layer of its width
    width = result.shape[-1] if result.dim() else 1
    for module, out in reversed(outputs):
        if isinstance(out, torch.Tensor) and out.dim() > 1 and out.shape[1] == width:
            return [module]
    return [outputs[-1][0]]


def _is_out(item: Any) -> bool:
    return "out" in getattr(item.dep.handler, "__name__", "")


def _indices(item: Any) -> list[int]:
    return sorted(int(getattr(i, "idx", i)) for i in item.idxs)


def _translate(tp_group: Any, names: dict[nn.Module, str]) -> Group | None:
    """tidian's Group for one Torch-Pruning group, or None when it touches a tensor tidian
    does not know how to slice."""
    items = list(tp_group)
    root = items[0]
    size = len(_indices(root))
    if size < 2 or names.get(root.dep.target.module) is None:
        return None
    members: dict[tuple[str, str, int], Member] = {}
    for item in items:
        module = item.dep.target.module
        path = names.get(module)
        if path is None:
            if type(module).__module__.startswith("torch_pruning"):
                continue  # the graph's own operator nodes (add, mul, reshape): no tensors
            return None  # a bare tensor (an unwrapped parameter) would go unsliced
        count = len(_indices(item))
        if count % size:
            return None
        repeat = count // size
        if isinstance(module, _WEIGHTED):
            if getattr(module, "groups", 1) != 1:
                return None
            if _is_out(item):
                found = [Member(path, "weight", 0, "out", repeat=repeat)]
                if module.bias is not None:
                    found.append(Member(path, "bias", 0, "out", repeat=repeat))
            else:
                found = [Member(path, "weight", 1, "in", repeat=repeat)]
        elif isinstance(module, nn.LayerNorm):
            # normalised together: removing one unit changes the others' mean and variance,
            # so no unit of this width can go without changing what the model computes
            return None
        elif isinstance(module, _NORMS):
            found = [
                Member(path, name, 0, "norm", repeat=repeat)
                for name in ("weight", "bias", "running_mean", "running_var")
                if isinstance(getattr(module, name, None), torch.Tensor)
            ]
        elif any(True for _ in module.parameters(recurse=False)) or any(
            b is not None for b in module._buffers.values()
        ):
            return None  # a layer with tensors of its own that tidian does not slice
        else:
            continue  # an activation, dropout, flatten: nothing to slice
        for member in found:
            members.setdefault((member.module, member.tensor, member.axis), member)
    if not any(m.role == "out" for m in members.values()):
        return None
    return Group(names[root.dep.target.module], size, list(members.values()))


def _same_layout(graph: Any, tp_group: Any, group: Group, names: dict[nn.Module, str]) -> bool:
    """Whether the graph gives units 0, 1 and the last the indices ``group`` assumes (unit
    ``j`` owns ``j*repeat … j*repeat+repeat-1`` in every tensor)."""
    root = next(iter(tp_group))
    by_place = {(m.module, m.role == "in"): m for m in group.members}
    for unit in sorted({0, 1, group.size - 1}):
        single = graph.get_pruning_group(root.dep.target.module, root.dep.handler, idxs=[unit])
        for item in single:
            path = names.get(item.dep.target.module)
            member = by_place.get((path, not _is_out(item) and path is not None))
            if path is None or member is None:
                continue
            expected = group.indices(member, torch.tensor([unit])).tolist()
            if _indices(item) != sorted(expected):
                return False
    return True
