"""Upgrade stages. Importing this package registers the built-in ones."""

from tidian.stages import calibrate, compress, distill, transfer, tune, variants  # noqa: F401  (registers the built-in stages)
from tidian.stages.base import STAGES, Context, Proposal, Stage

__all__ = ["STAGES", "Context", "Proposal", "Stage"]
