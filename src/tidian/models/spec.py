"""Building zoo models by name, and the spec that rebuilds them: :func:`create_model`,
:func:`model_spec`, :func:`register_model`.

This module sits below the families: a family that holds other zoo models (an ensemble, a
multi-task model, trees converted to tensors) builds them through :func:`create_model` here,
and the families register themselves into ``MODELS`` (``models.base``) as they are imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from tidian.models.base import MODELS, Head, Signature, refuse
from tidian.registry import check_options, import_in_workers

SPEC_ATTR = "_tidian_spec"


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a zoo model: its registered name, options and the task signature."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options, "signature": self.signature}


def create_model(name: str, task: Any, **options: Any) -> nn.Module:
    """Build zoo model ``name`` for ``task`` (a Task or a saved signature).

    Unknown names and options raise errors naming the close matches; a model that cannot take
    the task's input kind says which models can. The returned module remembers its spec so
    :func:`tidian.save_model` can store it as weights plus JSON.
    """
    entry = MODELS.entry(name)
    sig = Signature.of(task)
    inputs = entry.meta.get("inputs", ())
    if sig.input_kind not in inputs:
        raise refuse(name, sig, inputs, entry.meta.get("instead", "another model"))
    check_options(f"model {name!r}", entry.obj, options, typed=True)
    # Options are stored as JSON; normalise now so a rebuilt model gets exactly the same values.
    options = json.loads(json.dumps(options))
    model = entry.obj(sig, **options)
    y = getattr(getattr(task, "train", None), "y", None)
    if sig.target_kind == "values" and y is not None and len(y):
        set_output_scale(model, np.asarray(y, dtype=np.float64))
    set_spec(model, ModelSpec(name, options, sig.to_dict()))
    return model


def set_output_scale(model: nn.Module, y: np.ndarray) -> None:
    """Point every regression head of ``model`` at the scale of targets ``y``."""
    for module in model.modules():
        if isinstance(module, Head) and module.regression:
            module.shift.fill_(float(y.mean()))
            module.scale.fill_(float(y.std()) or 1.0)


def model_spec(model: nn.Module) -> ModelSpec | None:
    """The zoo spec of a model made by :func:`create_model`, or None for a user's own module."""
    spec = getattr(model, SPEC_ATTR, None)
    return spec if isinstance(spec, ModelSpec) else None


def set_spec(model: nn.Module, spec: ModelSpec) -> None:
    """Record how to rebuild ``model`` (what :func:`create_model` does for zoo models)."""
    setattr(model, SPEC_ATTR, spec)


def register_model(name: str, *, inputs: tuple[str, ...], instead: str = "another model"):
    """Decorator adding a user's model builder ``fn(signature, **options)`` to the zoo.

    A registered model can then be named in recipes and rebuilt from a saved spec; worker
    processes import the builder's module before their jobs (unless it is a script's
    ``__main__``, which the worker re-runs itself). The command line finds builders through
    ``--import MODULE`` or the ``tidian.models`` entry-point group.
    """
    register = MODELS.register(name, inputs=tuple(inputs), instead=instead)

    def decorator(fn):
        import_in_workers(getattr(fn, "__module__", "") or "")
        return register(fn)

    return decorator


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
