"""Upgrade stages. Importing this package registers every stage it holds: each module here is
imported, and a stage registers itself where it is defined (``@register_stage``), so a new
stage is one new file in this folder."""

import importlib
import pkgutil

from tidian.stages.base import STAGES, Context, Proposal, Stage, register_stage

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STAGES", "Context", "Proposal", "Stage", "register_stage"]
