"""Compression: pruning, low-rank factorisation, ONNX export and ONNX Runtime quantisation."""

from tidian.compression.prune import (
    PruneConfig,
    magnitude_masks,
    prune_,
    prune_structured,
    sparsity,
)
from tidian.compression.surgery import (
    Attention,
    Group,
    LowRank,
    Member,
    register_groups,
    unit_groups,
)

__all__ = [
    "Attention",
    "Group",
    "LowRank",
    "Member",
    "PruneConfig",
    "magnitude_masks",
    "prune_",
    "prune_structured",
    "register_groups",
    "sparsity",
    "unit_groups",
]
