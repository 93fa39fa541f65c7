"""Compression: pruning, low-rank factorisation and ONNX Runtime quantisation, each a
transform step (``compression.apply``) as well as a function of its own."""

from tidian.compression.apply import STEPS, StepContext, check_steps, transform_step
from tidian.compression.lowrank import LowRankConfig, lowrank_
from tidian.compression.prune import (
    PruneConfig,
    magnitude_masks,
    prune_,
    prune_structured,
    sparsity,
)
from tidian.compression.quantize import QuantizeConfig, quantize_model
from tidian.compression.surgery import Group, Member, register_groups, unit_groups
from tidian.models.structure import Attention, LowRank

__all__ = [
    "STEPS",
    "Attention",
    "Group",
    "LowRank",
    "LowRankConfig",
    "Member",
    "PruneConfig",
    "QuantizeConfig",
    "StepContext",
    "check_steps",
    "lowrank_",
    "magnitude_masks",
    "prune_",
    "prune_structured",
    "quantize_model",
    "register_groups",
    "sparsity",
    "transform_step",
    "unit_groups",
]
