"""``fit``: the one training loop. It reads top to bottom: lr, forward, loss, backward, clip,
step, log — then validation, early stopping, and the restore of the best weights."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tidian.exceptions import ConfigError
from tidian.metrics import compute_metrics, greater_is_better, predict
from tidian.models.moe import MoE, routing_stats
from tidian.training.augment import Augmenter, AugmentStep
from tidian.training.config import TrainConfig
from tidian.training.losses import make_loss
from tidian.training.optim import Schedule, initialize, make_optimizer, penalized
from tidian.training.steps import PlainStep

Step = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class History:
    """Per-epoch learning curves and how training ended."""

    monitor: str | None
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    device: str = "cpu"
    library: dict[str, Any] | None = None  # a tree family's training (rounds, trees, seconds)

    def curve(self, key: str) -> list[float]:
        """One column over epochs, e.g. ``curve("train_loss")`` or ``curve("val_accuracy")``."""
        return [row[key] for row in self.epochs if key in row]

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "stopped_early": self.stopped_early,
            "seconds": self.seconds,
            "device": self.device,
            **({"library": self.library} if self.library else {}),
        }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device is {name!r} but CUDA is not available here; use device='auto' or 'cpu'."
        )
    return device


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the torch.distributed group this process trains in, or
    ``(0, 1)`` alone. An executor sets the group up for a job that asks for several processes
    (``train.distributed``); ``fit`` then trains one model with them."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fit(
    model: nn.Module,
    task: Any,
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    seed: int = 0,
    step: Step | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train ``model`` in place on ``task.train``; validate on ``task.val`` after each epoch.

    Deterministic on CPU for a given seed (data order, dropout and any re-initialisation all
    come from ``seed``). Inside a torch.distributed group of N processes (see
    :func:`process_group`) the model is trained by all of them with DDP: each takes its share
    of every batch of ``batch_size × N`` and gradients are averaged, so N processes with
    batch B equal one with batch N·B (up to float summation order); every rank validates on
    the whole validation split, so early stopping and the best-weights restore are decided
    alike everywhere. With ``config.patience`` set, training stops after that many epochs
    without progress on the monitored validation metric and the best epoch's weights are put
    back. ``on_epoch(epoch, row)`` is called after each epoch with that epoch's curves; it may
    raise to stop training (a tuner's pruner does). Returns the :class:`History`; the model is
    left in eval mode on its device.
    """
    config = TrainConfig.coerce(config)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(
            f"{type(model).__name__} has no trainable parameters; tidian cannot train it "
            "(a converted tree ensemble is trained by its own library)."
        )
    device = resolve_device(config.device)
    has_val = len(task.val) > 0
    monitor = config.monitor or task.metric
    if config.patience is not None and not has_val:
        raise ConfigError(
            "early stopping (train.patience) needs a validation split, and this "
            "task has none; set patience to null or load the task with val_size > 0."
        )
    if config.schedule == "plateau" and not has_val:
        raise ConfigError(
            "schedule 'plateau' watches the validation metric, and this task has "
            "no validation split; use another schedule or add one."
        )
    greater = greater_is_better(monitor) if has_val else True
    rank, world = process_group()
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    model.to(device)
    initialize(model, config.init)
    x = torch.as_tensor(task.train.x).to(device)
    y = torch.as_tensor(task.train.y).to(device)
    n = len(y)
    step = step or PlainStep(make_loss(config, task.target_kind), config.l1, penalized(model))
    if config.augment:  # each batch transformed as it is drawn, seeded by the training seed
        step = AugmentStep(step, Augmenter(config.augment, task, seed))
    val_loss = make_loss(config.replace(loss="auto"), task.target_kind) if has_val else None
    optimizer = make_optimizer(model, config)
    # Batch boundaries; a final batch of one sample breaks batch norm and adds a noisy step,
    # so it is folded into the batch before it. With N processes a batch is N times larger
    # and each process takes every N-th of its rows (DistributedSampler's striding, applied
    # to this loop's own seeded order — torch's sampler draws another order, and then one
    # process and N would not see the same batches).
    starts = list(range(0, n, config.batch_size * world))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    bounds = list(zip(starts, [*starts[1:], n]))
    schedule = Schedule(optimizer, config, len(bounds), greater)
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)  # fp16 only
    sizes = torch.tensor(
        [len(range(start + rank, stop, world)) for start, stop in bounds], dtype=torch.float32
    )
    trainer = model
    if world > 1:
        # parameters some batches do not reach (unrouted experts) would stall DDP's reduction
        sparse = any(isinstance(m, MoE) for m in model.modules())
        trainer = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=sparse,
        )

    history = History(monitor=monitor if has_val else None, device=str(device))
    best_state, waited, start_time = None, 0, time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        tick = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        losses = []
        for start, stop in bounds:
            index = order[start + rank : stop : world]  # this process's share of the batch
            lr = optimizer.param_groups[0]["lr"]
            with autocast:
                loss = step(trainer, x[index], y[index], index)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.after_batch()
            losses.append(loss.detach())  # kept on the device: no sync per step
        total = torch.stack(losses).float().cpu() @ sizes
        if world > 1:  # every process's rows: the same number on every rank
            dist.all_reduce(total)
        row = {
            "epoch": epoch,
            "train_loss": float(total) / n,
            "lr": lr,
            "seconds": time.perf_counter() - tick,
        }
        usage = routing_stats(model)
        if usage is not None:  # mixture-of-experts layers: each expert's share of selections
            row["moe_usage"] = usage
        if not math.isfinite(row["train_loss"]):
            raise ConfigError(
                f"training diverged at epoch {epoch} (loss {row['train_loss']}); "
                "lower train.lr, set clip_grad_norm, or check the data scale."
            )

        monitored = None
        if has_val:
            out = predict(model, task.val.x, batch_size=config.eval_batch_size, device=device)
            scores = compute_metrics(task.val.y, out, [monitor])
            out_t = torch.from_numpy(out)
            row["val_loss"] = float(val_loss(out_t, torch.as_tensor(task.val.y)))
            row.update({f"val_{k}": v for k, v in scores.items()})
            monitored = scores[monitor]
            improved = history.best_value is None or (
                monitored > history.best_value + config.min_delta
                if greater
                else monitored < history.best_value - config.min_delta
            )
            if improved:
                history.best_epoch, history.best_value, waited = epoch, monitored, 0
                if config.patience is not None and config.restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
        schedule.after_epoch(monitored)
        history.epochs.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
        if config.patience is not None and waited >= config.patience:
            history.stopped_early = True
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start_time
    model.eval()
    return history
