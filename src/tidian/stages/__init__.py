"""Upgrade stages. Importing this package registers the built-in ones."""

from tidian.stages import (  # noqa: F401  (registers the built-in stages)
    augment,
    calibrate,
    clean,
    compress,
    distill,
    ensemble,
    learning_curve,
    multitask,
    transfer,
    tune,
    variants,
)
from tidian.stages.base import STAGES, Context, Proposal, Stage

__all__ = ["STAGES", "Context", "Proposal", "Stage"]
