"""Upgrade stages. Importing this package registers the built-in ones."""

from tidian.stages import variants  # noqa: F401  (registers train_variants, architecture)
from tidian.stages.base import STAGES, Context, Proposal, Stage

__all__ = ["STAGES", "Context", "Proposal", "Stage"]
