"""TrainConfig: every knob of the training loop, validated when made, round-trips to dict/YAML."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from tidian.exceptions import ConfigError, bad_value
from tidian.training.augment import OPERATIONS
from tidian.training.losses import LOSSES
from tidian.training.optim import OPTIMIZERS

SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
INITS = ("default", "xavier", "kaiming", "orthogonal")
BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class TrainConfig:
    """How to train a model. Frozen; ``replace(**changes)`` makes a variant.

    optimizer      sgd | nesterov | adam | adamw | rmsprop (momentum: sgd, nesterov, rmsprop)
    weight_decay   L2 penalty on weight matrices (decoupled for adamw); biases and norms are exempt
    l1             L1 penalty coefficient on the same weights, added to the loss
    schedule       constant | step (every step_size epochs × gamma) | cosine | onecycle |
                   plateau (× gamma after plateau_patience epochs without validation progress)
    warmup_epochs  linear learning-rate warm-up (fractions allowed); onecycle has its own
    loss           auto (cross_entropy for classes, mse for values) | cross_entropy |
                   label_smoothing | focal | hinge | mse | mae | huber
    patience       early stopping: epochs without validation progress before stopping (None: off);
                   the weights of the best epoch are restored (restore_best)
    monitor        the validation metric watched by early stopping and plateau (None: task metric)
    clip_grad_norm clip the global gradient norm to this value (None: off)
    init           default (PyTorch's) | xavier | kaiming | orthogonal — re-initialises weights
    device         auto (CUDA when present, else CPU) | cpu | cuda | cuda:N
    amp            mixed precision on CUDA (bfloat16 where supported, else float16 with scaling)
    augment        a per-batch augmentation policy {operation: strength} (training/augment.py);
                   which operations apply depends on the task's input kind
    distributed    {workers: N, backend: auto | gloo | nccl}: one model trained by N processes
                   (torch DDP): each takes its share of every batch of ``batch_size × N``
                   (batch_size is per process), gradients are averaged; None: one process
    seed_stream    another stream of randomness for the same seeds (initial weights, data
                   order): 0 is the run's; k re-draws them — the same candidate again, for an
                   A/A check of the gate (bench/pipeline_aa.py)
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    l1: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    plateau_patience: int = 3
    loss: str = "auto"
    label_smoothing: float = 0.1
    focal_gamma: float = 2.0
    huber_delta: float = 1.0
    batch_size: int = 64
    epochs: int = 20
    patience: int | None = None
    monitor: str | None = None
    min_delta: float = 0.0
    restore_best: bool = True
    clip_grad_norm: float | None = None
    init: str = "default"
    device: str = "auto"
    amp: bool = True
    eval_batch_size: int = 1024
    augment: dict[str, float] | None = None
    distributed: dict[str, Any] | None = None
    seed_stream: int = 0

    def __post_init__(self) -> None:
        def choice(name: str, options: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in options:
                close = difflib.get_close_matches(str(value), options, n=2)
                hint = f"Did you mean {' or '.join(close)}?" if close else ""
                raise bad_value(f"train.{name}", f"one of {', '.join(options)}", value, hint)

        def number(
            name: str,
            low: float,
            high: float = float("inf"),
            *,
            integer: bool = False,
            optional: bool = False,
            open_low: bool = False,
        ) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            kinds = (int,) if integer else (int, float)
            ok = isinstance(value, kinds) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)  # .inf passed every ">= low" before
            ok = ok and (value > low if open_low else value >= low) and value <= high
            if not ok:
                bound = f"> {low}" if open_low else f">= {low}"
                what = "an integer" if integer else "a number"
                raise bad_value(
                    f"train.{name}",
                    f"{what} {bound}" + (f" and <= {high}" if high != float("inf") else ""),
                    value,
                )

        choice("optimizer", tuple(OPTIMIZERS.names()))
        choice("schedule", SCHEDULES)
        choice("init", INITS)
        choice("loss", ("auto", *LOSSES.names()))
        number("lr", 0, 1e4, open_low=True)  # 1e40 is a typo, not a learning rate
        number("momentum", 0, 1)
        number("weight_decay", 0)
        number("l1", 0)
        number("warmup_epochs", 0)
        number("step_size", 1, integer=True)
        number("gamma", 0, 1, open_low=True)
        number("plateau_patience", 0, integer=True)
        number("label_smoothing", 0, 1)
        number("focal_gamma", 0)
        number("huber_delta", 0, open_low=True)
        number("batch_size", 1, integer=True)
        number("epochs", 1, integer=True)
        number("patience", 1, integer=True, optional=True)
        number("min_delta", 0)
        number("clip_grad_norm", 0, open_low=True, optional=True)
        number("eval_batch_size", 1, integer=True)
        number("seed_stream", 0, 1_000_000, integer=True)
        if self.augment is not None:
            known = {o for ops in OPERATIONS.values() for o in ops}
            if not isinstance(self.augment, dict) or set(self.augment) - known:
                raise bad_value(
                    "train.augment",
                    f"a mapping of operations ({', '.join(sorted(known))}) to strengths",
                    self.augment,
                )
        if self.distributed is not None:
            d = self.distributed
            workers = d.get("workers", 1) if isinstance(d, dict) else None
            if (
                not isinstance(d, dict)
                or set(d) - {"workers", "backend"}
                or isinstance(workers, bool)
                or not isinstance(workers, int)
                or workers < 1
            ):
                raise bad_value("train.distributed", "{workers: N >= 1, backend: auto}", d)
            if d.get("backend", "auto") not in BACKENDS:
                raise bad_value("train.distributed.backend", f"one of {BACKENDS}", d["backend"])
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)
        ):
            raise bad_value("train.device", "'auto', 'cpu', 'cuda' or 'cuda:N'", self.device)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, where: str = "train") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a close match."""
        data = dict(data or {})
        fields = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{where}: unknown option {key!r}{hint}. Options: {', '.join(fields)}."
                )
        return cls(**data)

    @classmethod
    def coerce(cls, config: TrainConfig | dict[str, Any] | None) -> TrainConfig:
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, dict):
            return cls.from_dict(config)
        raise bad_value("config", "a TrainConfig, a dict or None", type(config).__name__)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def processes(self) -> int:
        """How many processes train one model (``distributed.workers``; 1 without it)."""
        return int((self.distributed or {}).get("workers", 1))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
