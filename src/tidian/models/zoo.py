"""The model zoo: importing this module registers every built-in family."""

from __future__ import annotations

from typing import Any

# Importing the family modules registers their models.
from tidian.models import (  # noqa: F401
    cnn,
    ensemble,
    kernels,
    mlp,
    multitask,
    pretrained,
    rnn,
    transformer,
    trees,
)
from tidian.models.base import MODELS


def describe_models() -> list[dict[str, Any]]:
    """Rows for ``tidian models``: name, accepted input kinds, description, options."""
    return [
        {
            "name": e.name,
            "inputs": list(e.meta.get("inputs", ())),
            "description": e.description,
            "options": e.options(),
        }
        for e in MODELS.entries()
    ]
