"""Training: one loop (:func:`fit`), its config, losses, optimizers and steps."""

from tidian.training.config import TrainConfig
from tidian.training.loop import History, fit
from tidian.training.losses import LOSSES
from tidian.training.optim import OPTIMIZERS
from tidian.training.steps import PlainStep

__all__ = ["LOSSES", "OPTIMIZERS", "History", "PlainStep", "TrainConfig", "fit"]
