"""A model trained from scratch: built with weights drawn from a seed, then :func:`fit`.

Every place that trains a new model (a seed of a candidate, a tuning trial, an ensemble
member, a cleaned or multi-task retraining, a distilled student) goes through
:func:`seeded_model`, so "seed s" means the same initial weights everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from tidian.exceptions import ConfigError
from tidian.models import create_model
from tidian.training.config import TrainConfig
from tidian.training.loop import History, Step, fit

# train.seed_stream k moves every seed this far: past any seed a run uses (seeds, CV units,
# the confirmation's from 10,000, an ensemble's seed × 1000 + i for seeds below 1,000)
SEED_STREAM_STEP = 1_000_003

# A model recipe: a zoo spec {name: ..., **options}, or a factory task -> nn.Module.
ModelMaker = Mapping[str, Any] | Callable[[Any], nn.Module]


def seeded_model(model: ModelMaker, task: Any, seed: int) -> nn.Module:
    """Build ``model`` for ``task`` with its initial weights drawn from ``seed``."""
    torch.manual_seed(seed)
    if isinstance(model, Mapping):
        options = dict(model)
        built = create_model(options.pop("name"), task, **options)
    else:
        built = model(task)
    if not isinstance(built, nn.Module):
        raise ConfigError(f"the model factory returned {type(built).__name__}, not an nn.Module.")
    return built


def train_new(
    model: ModelMaker,
    task: Any,
    config: TrainConfig | dict[str, Any] | None,
    seed: int,
    *,
    data: Any = None,
    step: Step | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[nn.Module, History]:
    """:func:`seeded_model`, then :func:`fit` with the same seed on ``data`` (the task, or a
    variant of it with other training rows). Returns the trained model and its history.
    ``config.seed_stream`` k draws seed ``s``'s randomness from seed ``s + k × 1,000,003``."""
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    seed = seed + SEED_STREAM_STEP * config.seed_stream
    built = seeded_model(model, task, seed)
    if hasattr(built, "fit_with"):  # a library-fitted family (trees, svm, glm), not the loop
        start = time.perf_counter()
        trained, info = built.fit_with(task if data is None else data, seed)
        seconds = time.perf_counter() - start
        return trained, History(monitor=None, seconds=seconds, library={**info, "seconds": seconds})
    history = fit(
        built, task if data is None else data, config, seed=seed, step=step, on_epoch=on_epoch
    )
    return built, history
