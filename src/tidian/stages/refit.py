"""The ``refit`` stage: the incumbent's configuration trained again on the training *and*
validation rows (what AutoGluon's ``refit_full`` does), gated like any other candidate.

Validation rows do two jobs in a run: they choose (architectures, trials, ensemble weights)
and they stop training early. Once the choice is made, the rows can train the chosen model
too — more data, usually a better model, most on small tables. Whether it *is* better is the
gate's question: the refit is paired seed by seed with the incumbent and scored on the same
test rows, which neither ever trained on.

How long the refit trains is taken from each seed of the incumbent, since there is no
validation split left to stop it: a network trains for that seed's best epoch (its full run
without early stopping), a boosting family for that seed's boosting rounds (what early
stopping chose); a forest has nothing to stop. The refit's own validation scores are on rows
it trained on, so a stage that ranks candidates by validation (``ensemble: members: top``)
belongs before it.

Refused (the stage is skipped with the reason): an incumbent that a transform made (an
ensemble, a pruned or quantised model — refit the model it started from, earlier), and one
trained with ``schedule: plateau``, which watches the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tidian.compression.apply import StepContext, transform_step
from tidian.exceptions import bad_value
from tidian.models.io import read_metadata, read_spec
from tidian.models.trees import ROUNDS_OPTION
from tidian.stages.base import Context, Proposal, Stage, register_stage
from tidian.tasks.task import Split
from tidian.training.build import train_new
from tidian.training.config import TrainConfig


@dataclass(frozen=True)
class RefitConfig:
    """epochs: ``best`` (each seed's best epoch, or its epochs run) or a number of epochs for a
    network's refit."""

    epochs: str | int = "best"

    def __post_init__(self) -> None:
        if self.epochs != "best" and not (
            isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs > 0
        ):
            raise bad_value("refit.epochs", "'best' or a positive whole number", self.epochs)


@register_stage("refit", config=RefitConfig, kind="quality")
class Refit(Stage):
    """The incumbent retrained on training + validation rows, gated like any candidate."""

    example: ClassVar[dict[str, Any]] = {"epochs": "best"}

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        if incumbent.transform:
            return ctx.skip(
                f"the incumbent ({incumbent.label}) is made by a transform "
                f"({', '.join(next(iter(s)) for s in incumbent.transform)}); refit retrains a "
                "model trained from its recipe — put refit before that stage"
            )
        if not len(ctx.task.val):
            return ctx.skip("the task has no validation rows to add")
        train = TrainConfig.from_dict(incumbent.train)
        # with early stopping the best epoch's weights were kept, else the last epoch's
        best = train.patience is not None
        lengths = {str(s): self._length(folder, best) for s, folder in ctx.artifacts.items()}
        network = any("epochs" in length for length in lengths.values())
        if network and train.schedule == "plateau":
            return ctx.skip(
                "the incumbent trains with schedule plateau, which watches the validation "
                "rows; a refit has none left"
            )
        step = {"model": dict(incumbent.model), "train": dict(incumbent.train), "lengths": lengths}
        rows = len(ctx.task.train) + len(ctx.task.val)
        return [
            Proposal(
                f"refit on training + validation rows ({rows})",
                dict(incumbent.model),
                dict(incumbent.train),
                {"refit": {"rows": rows}},
                transform=[{"refit": step}],
            )
        ]

    def _length(self, folder: str, best: bool) -> dict[str, int]:
        """How long a seed's incumbent trained: ``{"rounds": n}`` for a tree family,
        ``{"epochs": n}`` for a network (its best epoch when ``best``, else every epoch it
        ran), ``{}`` when that was not recorded (the training config's epochs then)."""
        spec = read_spec(folder)
        if spec["name"] == "trees":
            return {"rounds": int(spec["options"].get("rounds") or 0)}
        if self.config.epochs != "best":
            return {"epochs": int(self.config.epochs)}
        training = read_metadata(folder).get("training") or {}
        epochs = training.get("best_epoch") if best else training.get("epochs")
        return {"epochs": int(epochs)} if epochs else {}


def _check_step(**config: Any) -> None:
    if not {"model", "train", "lengths"} <= set(config):
        raise bad_value("refit step", "{model: ..., train: ..., lengths: {seed: ...}}", config)


@transform_step("refit", config=_check_step, new_model=True, needs_parent=False)
def refit_step(parent: Any, config: dict[str, Any], ctx: StepContext):
    """Train the incumbent's recipe for seed ``ctx.seed`` on training + validation rows."""
    task = ctx.task
    length = config["lengths"].get(str(ctx.seed), {})
    model = dict(config["model"])
    train = TrainConfig.from_dict(config["train"])
    if "rounds" in length:  # a tree family: its boosting rounds fixed (a forest has none)
        option = ROUNDS_OPTION.get(model["name"])
        if option and length["rounds"]:
            model[option] = length["rounds"]
    else:  # a network: no validation rows left to stop it or to watch
        epochs = length.get("epochs") or train.epochs
        train = train.replace(epochs=int(epochs), patience=None, monitor=None)
    rows = Split.concat([task.train, task.val])
    data = task.replace(train=rows, val=task.val.take(np.arange(0)))
    trained, _ = train_new(model, task, train, ctx.seed, data=data)
    # it trained on the validation rows: a score there would be in-sample, and an ensemble's
    # `top` members or a later choice would favour it for that; it records none
    ctx.held_out["val"] = None
    return trained, {"rows": len(data.train), **length}
