"""The ``clean`` stage: find what is wrong with the training data, report it, and propose the
incumbent retrained without it — gated like any candidate, so cleaning is kept only if it
pays on the (untouched) test split.

* ``duplicates``: repeated training rows, conflicting labels on identical inputs, and
  validation/test rows that also sit in the training split (leakage — reported; the fix is to
  drop those rows from training, which one candidate does);
* ``label_noise``: confident learning on out-of-fold probabilities of the incumbent's recipe
  (``evaluation/cleaning.py``, cleanlab); candidates retrain with the suspects removed and
  with them down-weighted (``weight``);
* ``outliers``: rows with a feature beyond ``z`` standard deviations — reported, and a
  candidate trains on the training inputs clipped (winsorised) at ±z SD per feature.

The suspects are found once, with the run's first seed, before any candidate trains; the same
rows are then removed for every seed so candidates stay paired. Missing values are handled when
a task is loaded (its preprocessing imputes them), so a Task never holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from tidian.compression.apply import StepContext, transform_step
from tidian.evaluation.cleaning import duplicates, label_issues, out_of_fold, outliers
from tidian.exceptions import ConfigError, bad_value
from tidian.models.base import trained_by_library
from tidian.stages.base import Context, Proposal, Stage, register_stage
from tidian.tasks.task import Split
from tidian.training.build import seeded_model, train_new
from tidian.training.config import TrainConfig
from tidian.training.loop import fit
from tidian.training.losses import make_loss
from tidian.training.optim import penalized
from tidian.training.steps import PlainStep


@dataclass(frozen=True)
class CleanConfig:
    """duplicates / label_noise: look for them and propose the retrained incumbent; near:
    Euclidean distance for near-duplicate leakage (0: exact only); folds for out-of-fold
    probabilities; weight: the down-weighted suspects' loss weight; outliers: z (0: off);
    max_share: the most of the training split a candidate may remove."""

    duplicates: bool = True
    label_noise: bool = True
    near: float = 0.0
    folds: int = 5
    weight: float = 0.3
    outliers: float = 6.0
    max_share: float = 0.3

    def __post_init__(self) -> None:
        if not (self.duplicates or self.label_noise):
            raise ConfigError("clean: turn on duplicates or label_noise (or both).")
        if not isinstance(self.folds, int) or self.folds < 2:
            raise bad_value("clean.folds", "an integer >= 2", self.folds)
        if not 0 <= self.weight < 1:
            raise bad_value("clean.weight", "a loss weight in [0, 1)", self.weight)
        if self.near < 0 or self.outliers < 0:
            raise bad_value("clean.near / clean.outliers", "non-negative numbers", self.near)
        if not 0 < self.max_share <= 1:
            raise bad_value("clean.max_share", "a share in (0, 1]", self.max_share)


@register_stage("clean", config=CleanConfig, kind="quality")
class Clean(Stage):
    """Duplicates, leakage and label noise found, reported and removed (gated)."""

    keeps_model_class = True

    edits_model = True

    def requirements(self) -> list[tuple[str, str]]:
        return [("cleanlab", "clean")] if self.config.label_noise else []

    example: ClassVar[dict[str, Any]] = {"folds": 2}

    def check(self, task: Any) -> None:
        if self.config.label_noise and task.target_kind != "classes":
            raise ConfigError("label_noise: needs a classification task; set it to false.")

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        c: CleanConfig = self.config
        self.check(ctx.task)
        task, report, proposals = ctx.task, {}, []
        limit = int(c.max_share * len(task.train))

        # a tree family's library trains it: rows can be dropped or clipped, but its loss
        # cannot be re-weighted through the torch step
        fitted = trained_by_library(incumbent.model["name"])

        def propose(label: str, rows: list[int], action: str, why: dict[str, Any]) -> None:
            if not rows or (fitted and action == "downweight"):
                return
            if len(rows) > limit:
                raise ConfigError(
                    f"clean: {label} would touch {len(rows)} of {len(task.train)} training rows, "
                    f"more than max_share {c.max_share}; check the data (or raise max_share)."
                )
            step = {
                "rows": sorted(int(r) for r in rows),
                "action": action,
                "weight": c.weight,
                "model": dict(incumbent.model),
                "train": dict(incumbent.train),
            }
            proposals.append(
                Proposal(
                    label,
                    dict(incumbent.model),
                    dict(incumbent.train),
                    why,
                    transform=[{"clean": step}],
                )
            )

        if c.duplicates:
            found = duplicates(task, near=c.near)
            report["duplicates"] = found
            drop = sorted(set(found["repeated_rows"]) | set(found["leaked_train_rows"]))
            propose(
                f"without {len(drop)} duplicate / leaked training rows",
                drop,
                "remove",
                {"clean": "duplicates", "rows": len(drop)},
            )
        if c.outliers and task.input_kind != "text":
            report["outliers"] = found = outliers(task, z=c.outliers)
            if found["rows"]:
                proposals.append(
                    Proposal(
                        f"training values clipped at {c.outliers:g} SD ({len(found['rows'])} "
                        "rows had outliers)",
                        dict(incumbent.model),
                        dict(incumbent.train),
                        {"clean": "outliers", "rows": len(found["rows"]), "z": c.outliers},
                        transform=[
                            {
                                "clean": {
                                    "rows": found["rows"],
                                    "action": "clip",
                                    "z": c.outliers,
                                    "weight": c.weight,
                                    "model": dict(incumbent.model),
                                    "train": dict(incumbent.train),
                                }
                            }
                        ],
                    )
                )
        if c.label_noise:
            proba = out_of_fold(
                incumbent.model,
                task,
                incumbent.train,
                folds=c.folds,
                seed=ctx.seeds[0],
                executor=ctx.executor,
                resources=ctx.resources,
                progress=(lambda done, total: ctx.progress("out-of-fold trainings", done, total))
                if ctx.progress
                else None,
            )
            issues = label_issues(task.train.y, proba, task.class_names)
            report["label_issues"] = issues
            rows = [i["row"] for i in issues]
            propose(
                f"without {len(rows)} suspect labels",
                rows,
                "remove",
                {"clean": "label_noise", "rows": len(rows)},
            )
            propose(
                f"{len(rows)} suspect labels down-weighted to {c.weight:g}",
                rows,
                "downweight",
                {"clean": "label_noise", "rows": len(rows), "weight": c.weight},
            )
        ctx.notes["clean"] = report
        return proposals


class WeightedStep:
    """The inner step's loss with some rows down-weighted: the batch is split into the
    full-weight rows and the down-weighted ones, and the two mean losses are combined as a
    weighted mean over rows (so any mean-reduced loss works)."""

    def __init__(self, inner: Any, light: np.ndarray, weight: float) -> None:
        self.inner, self.weight = inner, weight
        self.light = torch.as_tensor(light, dtype=torch.bool)

    def __call__(self, model, x, y, index):
        light = self.light.to(index.device)[index]
        parts = []
        for mask, w in ((~light, 1.0), (light, self.weight)):
            if mask.any() and w > 0:
                n = float(mask.sum())
                parts.append((w * n, self.inner(model, x[mask], y[mask], index[mask])))
        total = sum(w for w, _ in parts)
        return sum(w * loss for w, loss in parts) / total


def clean_(
    parent: Any, config: dict[str, Any], task: Any, *, train: Any = None, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Train the incumbent's recipe (seed ``seed``) with the listed rows removed or
    down-weighted."""

    rows = np.asarray(config["rows"], dtype=np.int64)
    train_config = TrainConfig.from_dict(config["train"])
    if config["action"] == "remove":
        keep = np.setdiff1d(np.arange(len(task.train)), rows)
        part = task.replace(train=task.train.take(keep))
        model = train_new(config["model"], task, train_config, seed, data=part)[0]
    elif config["action"] == "clip":
        # winsorise the training inputs at ±z training SDs per feature; inputs at prediction
        # time are not clipped (the model must still cope with them: the gate judges that)
        flat = task.train.x.reshape(len(task.train), -1).astype(np.float64)
        mean, std = flat.mean(0), flat.std(0)
        std[std == 0] = 1.0
        z = float(config["z"])
        clipped = np.clip(flat, mean - z * std, mean + z * std).astype(np.float32)
        part = task.replace(
            train=Split(clipped.reshape(task.train.x.shape), task.train.y, task.train.aux)
        )
        model = train_new(config["model"], task, train_config, seed, data=part)[0]
    else:
        model = seeded_model(config["model"], task, seed)
        light = np.zeros(len(task.train), dtype=bool)
        light[rows] = True
        inner = PlainStep(
            make_loss(train_config, task.target_kind), train_config.l1, penalized(model)
        )
        fit(
            model,
            task,
            train_config,
            seed=seed,
            step=WeightedStep(inner, light, float(config["weight"])),
        )
    return model, {"rows": len(rows), "action": config["action"]}


def _check_step(**config: Any) -> None:
    if config.get("action") not in ("remove", "downweight", "clip") or "rows" not in config:
        raise bad_value("clean step", "{rows: [...], action: remove | downweight | clip}", config)


@transform_step("clean", config=_check_step, new_model=True, needs_parent=False)
def clean_step(parent: Any, config: dict[str, Any], ctx: StepContext):
    """The ``clean`` step: :func:`clean_` for the seed."""
    return clean_(parent, config, ctx.task, train=ctx.train, seed=ctx.seed)
