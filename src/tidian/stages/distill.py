"""The ``distill`` stage: train a small student towards a teacher's soft targets.

Teachers: the incumbent (its model of the same seed, so the student stays paired with it), an
ensemble of the run's best candidates so far (their probabilities averaged, seed by seed), or a
LightGBM model trained inside the job on the training split (vector and sequence tasks). The
student is a zoo model named in the recipe, or ``{fraction: f}``: the teacher's own family with
its widths scaled until it has about ``f`` of the teacher's parameters.

The student is trained from scratch with :class:`~tidian.training.steps.DistillStep`:
soft-target KL at temperature T (× T²) mixed with the label loss by ``alpha``, plus optional
hints — feature terms (a student layer matched to a teacher layer by module path, through a
learned projection when the widths differ) and attention-map terms for transformer students.
Teacher outputs, features and attention maps are computed once per seed and cached.
``augment`` adds noisy copies of the training inputs to the transfer set (the teacher labels
them). With ``compare_alone`` (default) the same student trained on labels alone is a candidate
too, so the ledger shows what the teacher added on the same seeds (with ``augment``, trained on
the same augmented set with the labels, so the augmentation's share is not credited to the
teacher).

The job runs in the pipeline's workers through the transform mechanism
(``compression.apply``): one ``{"distill": {...}}`` step per candidate.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tidian.compression.apply import StepContext, transform_step
from tidian.evaluation.evaluate import score_splits
from tidian.exceptions import ConfigError, bad_value
from tidian.export import model_inputs, task_manifest
from tidian.metrics import DEFAULT_METRICS, greater_is_better, predict
from tidian.models import MODELS, count_parameters, create_model
from tidian.models.base import trained_by_library
from tidian.models.ensemble import Ensemble
from tidian.models.io import load_model, seed_folder
from tidian.models.trees import train_boosting
from tidian.stages.base import Context, Proposal, Stage, register_stage
from tidian.tasks.task import Split
from tidian.training.build import seeded_model
from tidian.training.config import TrainConfig
from tidian.training.distill import Hint, captured, projections, teacher_targets
from tidian.training.loop import fit
from tidian.training.losses import make_loss
from tidian.training.steps import DistillStep

TEACHERS = ("incumbent", "ensemble", "lightgbm")
GATES = ("superiority", "non_inferiority")
AUGMENT_KEYS = ("copies", "noise", "shift", "token_dropout")
# Options that set a zoo model's width; an automatic student scales these.
WIDTH_OPTIONS = ("width", "hidden", "embed_dim")


def _number(where: str, value: Any, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise bad_value(where, f"a number >= {low}" + (f" and <= {high}" if high else ""), value)
    if high is not None and value > high:
        raise bad_value(where, f"a number in [{low}, {high}]", value)
    return float(value)


def _hints(raw: Any, kind: str) -> list[Hint]:
    if not isinstance(raw, list):
        raise bad_value(f"distill.{kind}s", "a list of {student: PATH, teacher: PATH}", raw)
    out = []
    for i, item in enumerate(raw):
        where = f"distill.{kind}s[{i}]"
        if not isinstance(item, dict) or set(item) - {"student", "teacher", "weight"}:
            raise bad_value(where, "{student: MODULE_PATH, teacher: MODULE_PATH, weight: w}", item)
        if not all(isinstance(item.get(k), str) and item.get(k) for k in ("student", "teacher")):
            raise bad_value(where, "module paths for both student and teacher", item)
        out.append(
            Hint(item["student"], item["teacher"], kind, _number(where, item.get("weight", 1.0), 0))
        )
    return out


@dataclass(frozen=True)
class DistillConfig:
    """student: a zoo model ``{name: cnn1d, width: 16}`` or ``{fraction: 0.25}`` (the
    teacher's family at about that share of its parameters).
    teacher: incumbent | ensemble (``members`` best candidates so far) | lightgbm (trained in
    the job; ``lightgbm`` holds its options).
    temperature, alpha: soft-target temperature and weight (1 - alpha on the labels).
    features / attentions: hints ``[{student: PATH, teacher: PATH, weight: 1.0}]``.
    augment: ``{copies: k, noise: σ, shift: s, token_dropout: p}`` — k augmented copies of the
    training inputs join the transfer set, labelled by the teacher.
    unlabeled: a file of raw inputs without labels (NPZ array ``x``, a table with the task's
    columns, or .txt lines for text), made into model inputs by the task's preprocessing; its
    rows join the transfer set with the teacher's outputs as their only targets (Hinton et
    al.'s transfer set "could consist entirely of unlabeled data").
    train: changes to the student's training config (epochs, lr…), which starts from the
    recipe's ``train`` for a named student and from the incumbent's for ``{fraction: f}``.
    gate: superiority (the student must beat the incumbent) or non_inferiority (within the
    recipe's margin, and it must be faster or smaller on the deployment runtime).
    compare_alone: also evaluate the student trained on labels alone, on the same seeds (and
    the same augmented set, when ``augment`` is given; unlabeled rows have no labels to train
    on, so the student alone never sees them).
    """

    student: dict[str, Any] = field(default_factory=lambda: {"fraction": 0.25})
    teacher: str = "incumbent"
    members: int = 3
    temperature: float = 4.0
    alpha: float = 0.7
    features: list[dict[str, Any]] = field(default_factory=list)
    attentions: list[dict[str, Any]] = field(default_factory=list)
    augment: dict[str, Any] = field(default_factory=dict)
    unlabeled: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    lightgbm: dict[str, Any] = field(default_factory=dict)
    gate: str = "non_inferiority"
    compare_alone: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.student, dict) or not self.student:
            raise bad_value(
                "distill.student", "a zoo model {name: ..., options} or {fraction: f}", self.student
            )
        if "fraction" in self.student:
            if set(self.student) != {"fraction"}:
                raise bad_value("distill.student", "{fraction: f} alone", self.student)
            _number("distill.student.fraction", self.student["fraction"], 1e-6, 1.0)
        elif "name" not in self.student:
            raise bad_value("distill.student", "a mapping with 'name' or 'fraction'", self.student)
        elif trained_by_library(self.student["name"]):
            raise ConfigError(
                f"distill.student: {self.student['name']} is trained by its library on labels, "
                "not by tidian's loop on a teacher's soft targets; name a network student "
                "({name: mlp, ...}). A tree model can be the teacher (teacher: incumbent)."
            )
        if self.teacher not in TEACHERS:
            raise bad_value("distill.teacher", f"one of {TEACHERS}", self.teacher)
        if isinstance(self.members, bool) or not isinstance(self.members, int) or self.members < 2:
            raise bad_value("distill.members", "an integer >= 2", self.members)
        if _number("distill.temperature", self.temperature, 0) <= 0:
            raise bad_value("distill.temperature", "a positive number", self.temperature)
        _number("distill.alpha", self.alpha, 0, 1)
        hints = _hints(self.features, "feature") + _hints(self.attentions, "attention")
        if hints and self.teacher != "incumbent":
            raise ConfigError(
                "distill: feature and attention hints need one torch teacher with modules; "
                f"teacher {self.teacher!r} has none. Use teacher: incumbent, or drop the hints."
            )
        if not isinstance(self.augment, dict) or set(self.augment) - set(AUGMENT_KEYS):
            raise bad_value(
                "distill.augment", f"a mapping with keys from {AUGMENT_KEYS}", self.augment
            )
        copies = self.augment.get("copies", 1 if self.augment else 0)
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
            raise bad_value("distill.augment.copies", "a non-negative integer", copies)
        for key in ("noise", "shift"):
            _number(f"distill.augment.{key}", self.augment.get(key, 0), 0)
        _number("distill.augment.token_dropout", self.augment.get("token_dropout", 0), 0, 0.95)
        if self.gate not in GATES:
            raise bad_value("distill.gate", f"one of {GATES}", self.gate)
        if self.unlabeled is not None and (
            not isinstance(self.unlabeled, str) or not self.unlabeled.strip()
        ):
            raise bad_value("distill.unlabeled", "a path to a file of inputs", self.unlabeled)
        if not isinstance(self.train, dict) or not isinstance(self.lightgbm, dict):
            raise bad_value(
                "distill.train / distill.lightgbm", "mappings", (self.train, self.lightgbm)
            )

    @property
    def hints(self) -> list[Hint]:
        return _hints(self.features, "feature") + _hints(self.attentions, "attention")


# -- the student ---------------------------------------------------------------------------------


def _scaled(options: dict[str, Any], factor: float, heads: int | None) -> dict[str, Any]:
    out = dict(options)
    for key in WIDTH_OPTIONS:
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [max(1, round(v * factor)) for v in value]
        elif isinstance(value, int) and not isinstance(value, bool):
            width = max(1, round(value * factor))
            if key == "width" and heads:  # a transformer's width must divide into its heads
                width = max(heads, heads * round(width / heads))
            out[key] = width
    return out


def _spec(model: dict[str, Any]) -> str:
    """'cnn1d(width=32, depth=3)'."""
    options = ", ".join(f"{k}={v}" for k, v in model.items() if k != "name")
    return f"{model['name']}({options})"


def auto_student(teacher: dict[str, Any], task: Any, fraction: float) -> dict[str, Any]:
    """The teacher's family with its width options scaled so that the student has the
    parameter count closest to ``fraction`` of the teacher's (searched on a grid of scales)."""

    name = teacher["name"]
    entry = MODELS.entry(name)
    defaults = {k: v for k, v in entry.options().items() if k in WIDTH_OPTIONS}
    options = {**defaults, **{k: v for k, v in teacher.items() if k != "name"}}
    heads = options.get("heads") if name == "transformer" else None
    if not any(k in options for k in WIDTH_OPTIONS):
        raise ConfigError(
            f"distill.student: cannot size down {name!r} automatically (no width option); name "
            "the student instead, e.g. student: {name: mlp, width: 32}."
        )
    target = fraction * count_parameters(create_model(name, task, **options))
    best = None
    for factor in np.geomspace(0.01, 1.0, 80):
        trial = _scaled(options, float(factor), heads)
        params = count_parameters(create_model(name, task, **trial))
        gap = abs(math.log(params / target))
        if best is None or gap < best[0]:
            best = (gap, trial)
    return {"name": name, **best[1]}


# -- the stage -----------------------------------------------------------------------------------


@register_stage("distill", config=DistillConfig, kind="quality")
class Distill(Stage):
    """Knowledge distillation into a student (logits, features, attention), gated."""

    edits_model = True

    def requirements(self) -> list[tuple[str, str]]:
        return [("lightgbm", "boost")] if self.config.teacher == "lightgbm" else []

    example: ClassVar[dict[str, Any]] = {"student": {"fraction": 0.5}, "train": {"epochs": 1}}

    def gate_kind(self) -> str:
        return "quality" if self.config.gate == "superiority" else "cost"

    def check(self, task: Any) -> None:
        # read the unlabeled file now, so a missing or misshapen file fails before the run
        with_unlabeled(task, self.config.unlabeled)

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        c = self.config
        if c.teacher == "lightgbm" and ctx.task.input_kind not in ("vector", "sequence"):
            raise ConfigError(
                f"distill.teacher lightgbm takes vector or sequence tasks; this task is "
                f"{ctx.task.input_kind}. Use teacher: incumbent or ensemble."
            )
        if "fraction" in c.student:
            if trained_by_library(incumbent.model.get("name", "")):
                return ctx.skip(
                    f"a student scaled down from the incumbent ({incumbent.model['name']}) "
                    "would be a model its library fits on labels (a tree, svm or glm family), "
                    "not on a teacher's soft targets; name a network student ({name: mlp, ...})"
                )
            student = auto_student(incumbent.model, ctx.task, float(c.student["fraction"]))
        else:
            student = dict(c.student)

        create_model(student["name"], ctx.task, **{k: v for k, v in student.items() if k != "name"})
        if c.teacher == "incumbent" and student == incumbent.model:
            held = ctx.incumbent or {}
            if held.get("stage") == "baseline":
                # e.g. a transfer stage before this one was rejected: the teacher it was meant
                # to give is not there, and the baseline would teach a copy of itself
                return ctx.skip(
                    f"the teacher would be the incumbent, which is still the run's baseline "
                    f"(#{held['id']}), the same model as the student ({_spec(student)}): no "
                    "earlier stage gave a better teacher, and a model has nothing to teach a "
                    "copy of itself. Name a smaller student, or put a stage that improves the "
                    "model first."
                )
        # A named student starts from the recipe's training set-up (the incumbent's may be a
        # pretrained teacher's fine-tuning one); a scaled-down teacher from the incumbent's.
        start = (
            incumbent.train if "fraction" in c.student else (ctx.baseline_train or incumbent.train)
        )
        train = {**start, **c.train}
        members: list[str] = []
        if c.teacher == "ensemble":
            ranked = [h for h in ctx.history if h.get("folder") and h.get("val_mean") is not None]

            sign = -1 if greater_is_better(ctx.metric) else 1
            ranked.sort(key=lambda h: sign * h["val_mean"])
            members = [h["folder"] for h in ranked[: c.members]]
            if len(members) < 2:
                raise ConfigError(
                    "distill.teacher ensemble needs at least two finished candidates before "
                    f"this stage; the run has {len(members)}. Put a tuning or architecture "
                    "stage first, or use teacher: incumbent."
                )
        step = {
            "student": student,
            "teacher": c.teacher,
            "folders": members,
            "temperature": c.temperature,
            "alpha": c.alpha,
            "features": list(c.features),
            "attentions": list(c.attentions),
            "augment": dict(c.augment),
            "lightgbm": dict(c.lightgbm),
            "unlabeled": str(Path(c.unlabeled).resolve()) if c.unlabeled else None,
        }
        name = _spec(student)
        label = f"{name} distilled from {c.teacher}"
        if c.teacher == "ensemble":
            label += f" of {len(members)}"
        label += f", T={c.temperature:g}, alpha={c.alpha:g}"
        if c.hints:
            label += f", {len(c.hints)} hints"
        if c.augment:
            label += f", augment {c.augment}"
        if c.unlabeled:
            label += f", unlabeled {Path(c.unlabeled).name}"
        proposals = [
            Proposal(
                label,
                student,
                train,
                {"student": student, "distill": {k: v for k, v in step.items() if v}},
                transform=[{"distill": step}],
            )
        ]
        if c.compare_alone and c.augment:
            # The control for an augmented transfer set: the same set with the labels
            # (alpha 0), so the teacher's share of the gain is not the augmentation's.
            alone = {**step, "alpha": 0.0, "features": [], "attentions": [], "unlabeled": None}
            proposals.append(
                Proposal(
                    f"{name} alone, augment {c.augment}",
                    student,
                    train,
                    {"student": student, "distill": None, "augment": dict(c.augment)},
                    transform=[{"distill": alone}],
                )
            )
        elif c.compare_alone:
            proposals.append(
                Proposal(
                    f"{name} alone",
                    student,
                    train,
                    {"student": student, "distill": None},
                )
            )
        return proposals


# -- the job (runs in a worker, through compression.apply) --------------------------------------


def augmented(task: Any, augment: dict[str, Any], seed: int) -> Any:
    """The task with ``copies`` augmented copies of its training inputs appended (seeded)."""

    copies = augment.get("copies", 1) if augment else 0
    if not copies:
        return task
    rng = np.random.default_rng([seed, 7919])
    x, parts = task.train.x, [task.train.x]
    for _ in range(copies):
        if task.input_kind == "text":
            p = float(augment.get("token_dropout", 0.1))
            unk = _unknown_id(task)
            drop = (rng.random(x.shape) < p) & (x != 0)
            parts.append(np.where(drop, unk, x).astype(np.int64))
            continue
        new = x.astype(np.float32, copy=True)
        shift = int(augment.get("shift", 0))
        if shift and new.ndim >= 2:
            axis = 1  # time for sequences, features for vectors
            for i, s in enumerate(rng.integers(-shift, shift + 1, len(new))):
                new[i] = np.roll(new[i], int(s), axis=axis - 1)
        noise = float(augment.get("noise", 0.0))
        if noise:
            std = x.std(axis=0, keepdims=True)
            new += (noise * std * rng.standard_normal(new.shape)).astype(np.float32)
        parts.append(new)
    train = Split(np.concatenate(parts), np.concatenate([task.train.y] * (copies + 1)))
    return dataclasses.replace(task, train=train)


def with_unlabeled(task: Any, path: str | None) -> tuple[Any, int]:
    """The task with the inputs of file ``path`` appended to its training split, and how many
    rows were appended. Their labels are placeholders (class 0, value 0) that the
    distillation step masks out: these rows train on the soft targets only."""
    if not path:
        return task, 0

    if not Path(path).is_file():
        raise ConfigError(f"distill.unlabeled: {path!r} is not a file.")
    try:
        x = model_inputs(path, task_manifest(task))
    except ConfigError as err:
        raise ConfigError(f"distill.unlabeled {path!r}: {err}") from None
    if len(x) == 0:
        raise ConfigError(f"distill.unlabeled: {path!r} holds no rows.")
    y = task.train.y
    placeholder = np.zeros((len(x), *y.shape[1:]), dtype=y.dtype)
    train = Split(
        np.concatenate([task.train.x, x.astype(task.train.x.dtype)]),
        np.concatenate([y, placeholder]),
    )
    return dataclasses.replace(task, train=train), len(x)


def _unknown_id(task: Any) -> int:
    vocab = task.vocab or ()
    for token in ("<unk>", "[UNK]", "<UNK>"):
        if token in vocab:
            return vocab.index(token)
    return 1


def distill_(
    teacher: nn.Module | None,
    config: dict[str, Any],
    task: Any,
    *,
    train: Any,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a fresh student (seed ``seed``) towards ``teacher`` (or the teacher the config
    names); returns the student and a report with the teacher's own scores."""

    stage_config = DistillConfig(
        **{k: v for k, v in config.items() if k != "folders"},
    )
    hints = stage_config.hints
    classes = task.target_kind == "classes"
    start = time.perf_counter()
    transfer, unlabeled = with_unlabeled(
        augmented(task, stage_config.augment, seed), stage_config.unlabeled
    )
    metrics = list(DEFAULT_METRICS[task.target_kind])
    kind = stage_config.teacher
    if kind == "incumbent":
        if teacher is None:
            raise ConfigError("distill: the incumbent teacher's model is missing.")
        targets = teacher_targets(teacher, transfer.train.x, {h.teacher: h.kind for h in hints})
        teacher_scores = score_splits(task, lambda x: predict(teacher, x), metrics)
    else:  # a teacher made here: the run's best candidates averaged, or a LightGBM model
        if kind == "ensemble":
            folders = list(config.get("folders") or [])
            members = [load_model(seed_folder(folder, seed)) for folder in folders]
            teacher = Ensemble(members, "average", classes, task.n_outputs)
        else:
            teacher = train_boosting("lightgbm", task, stage_config.lightgbm, seed)
        teacher.eval()
        targets = teacher_targets(teacher, transfer.train.x, {})
        teacher_scores = score_splits(task, lambda x: predict(teacher, x), metrics)
    teacher_seconds = time.perf_counter() - start

    student = seeded_model(stage_config.student, task, seed)
    width = targets.outputs.shape[1] if targets.outputs.ndim == 2 else 1
    with torch.no_grad():
        probe = student.eval()(torch.as_tensor(task.train.x[:2]))
    student.train()
    if probe.shape[1] != width:
        raise ConfigError(
            f"distill: the teacher gives {width} outputs per example but the student gives "
            f"{probe.shape[1]}; both must be made for this task."
        )
    config_t = TrainConfig.coerce(train)
    projection = None
    if hints:
        projection = projections(student, torch.as_tensor(transfer.train.x[:2]), hints, targets)
        student.add_module("_distill_projections", projection)  # trained with the student
    with captured(student, {h.student: h.kind for h in hints}, "student") as capture:
        step = DistillStep(
            make_loss(config_t, task.target_kind),
            targets.outputs,
            temperature=stage_config.temperature,
            alpha=stage_config.alpha,
            classes=classes,
            hints=hints,
            hint_targets=targets.hints,
            capture=capture,
            projections=projection,
            # only an unlabeled set needs the mask (the step then checks it every batch)
            labelled=(torch.arange(len(transfer.train)) < len(transfer.train) - unlabeled)
            if unlabeled
            else None,
        )
        history = fit(student, transfer, config_t, seed=seed, step=step)
    if projection is not None:
        del student._distill_projections
    report = {
        "teacher": kind,
        "teacher_scores": teacher_scores,
        "teacher_seconds": round(teacher_seconds, 3),
        "transfer_rows": len(transfer.train),
        "unlabeled_rows": unlabeled,
        "hints": [dataclasses.asdict(h) for h in hints],
        "best_epoch": history.best_epoch,
        "epochs": len(history.epochs),
    }
    return student, report


@transform_step(
    "distill",
    config=lambda **config: DistillConfig(**{k: v for k, v in config.items() if k != "folders"}),
    new_model=True,
    needs_parent=lambda config: config.get("teacher") == "incumbent",
)
def distill_step(teacher: nn.Module | None, config: dict[str, Any], ctx: StepContext):
    """The ``distill`` step: :func:`distill_` for the seed (the parent is the teacher)."""
    return distill_(teacher, config, ctx.task, train=ctx.train, seed=ctx.seed)
