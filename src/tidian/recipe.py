"""Recipes: YAML data naming a task, a baseline model, training, evaluation and stages.

A recipe can only *name* registered things (tasks, models, optimizers, losses, metrics,
stages); loading one never imports or runs code. Every error names its place in the file,
e.g. ``stages[1].architecture.candidates[0].name: unknown model 'cnn' (did you mean cnn1d,
cnn2d?)``. The schema (``recipe_schema()``, ``tidian recipe schema``) comes from the same
pydantic models that validate, so editor completion and validation cannot disagree.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import stat
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from tidian.evaluation.cv import make_cv
from tidian.exceptions import ConfigError, DataError, TidianError
from tidian.metrics import METRICS, check_amount, quality_amount
from tidian.models.base import MODELS
from tidian.registry import check_options
from tidian.stages import STAGES
from tidian.stages.space import is_distribution
from tidian.tasks import TASKS, check_task, load_task, task_target
from tidian.tasks.task import carve_holdout
from tidian.training.config import TrainConfig


class RecipeError(ConfigError):
    """A recipe is malformed; the message starts with the place in the recipe."""


class _Spec(BaseModel):
    """A part of a recipe: unknown keys refused, and a boolean is not a number (pydantic
    would read ``max_params: true`` as 1 and ``seeds: false`` as 0)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and not _allows_bool(cls.model_fields[info.field_name]):
            raise ValueError(f"a number or text is needed here, not {str(value).lower()}")
        return value


def _allows_bool(field: Any) -> bool:
    annotation = field.annotation
    return annotation is bool or bool in get_args(annotation) or annotation is Any


class EvaluateSpec(_Spec):
    model_config = ConfigDict(extra="forbid")
    metric: str | None = Field(None, description="Gate metric; default: the task's metric.")
    seeds: int | list[int] = Field(
        5, description="Number of seeds (0..k-1) or explicit seeds (at most 1,000)."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of intervals.")
    ci: str = Field("t", pattern="^(t|bootstrap)$", description="t-interval or bootstrap.")
    min_effect: float | str = Field(
        0.0,
        description="Gain a quality stage must show beyond: a number in the metric's units, "
        "points of a fraction metric ('0.5pt') or a percent of the incumbent's score ('1%').",
    )
    margin: float | str | None = Field(
        None,
        description="Loss a cost stage may show (non-inferiority), written as min_effect; "
        "default: 1 point of a fraction metric (accuracy 0.01), else 1% of the incumbent's score.",
    )
    folds: int | None = Field(
        None,
        ge=2,
        description="Cross-validation: each seed gives `folds` units, each tested on one fold "
        "of all rows pooled (for small data sets); intervals use the corrected variance.",
    )
    repeated: bool = Field(
        False, description="With folds: reshuffle the folds per seed (repeated k-fold)."
    )
    select: str = Field(
        "validation",
        pattern="^(validation|holm)$",
        description="How a quality stage with several candidates decides. validation: it "
        "chooses one on the validation split (the best mean; among those equal to it, the "
        "cheaper) and gates that one alone on test at the full level. holm: every candidate is "
        "gated on test with Holm's correction, the best accepted on validation is chosen. "
        "Without validation scores (folds, val_size 0) a stage uses holm.",
    )
    test_rows: str = Field(
        "sample",
        pattern="^(sample|fixed)$",
        description="sample: the test rows are a sample of the rows the model will meet, and "
        "a gate counts their sampling as well as the seeds' (a candidate that gets other rows "
        "right than the incumbent may look better on every seed by which rows were drawn). "
        "fixed: the test set is all that is claimed about (a fixed benchmark split); the gate "
        "counts the seeds alone. Cross-validation units always count the seeds alone.",
    )
    holdout: float | None = Field(
        None,
        ge=0,
        le=0.5,
        description="Share of all rows set aside before anything trains (drawn from the "
        "validation and test rows) and read only by the confirmation, whose score on it is the "
        "run's headline; 0: none. Default: 0.15 when the task can spare it (else the run says "
        "why it has none).",
    )


_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(
    rf"\s*(?:{_NUMBER}\s*h)?\s*(?:{_NUMBER}\s*m(?:in)?)?\s*(?:{_NUMBER}\s*s)?\s*"
)
MAX_DURATION = 30 * 24 * 3600.0  # a month: beyond it, a typo


def parse_duration(value: Any, what: str = "budget.time") -> float:
    """Seconds from a number of seconds or a text like ``90s``, ``15m``, ``1h30m``, ``2.5h``."""
    seconds = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif (match := _DURATION.fullmatch(text)) and any(match.groups()):
            h, m, sec = (float(g) if g else 0.0 for g in match.groups())
            seconds = 3600 * h + 60 * m + sec
    if seconds is None or not 0 < seconds <= MAX_DURATION:
        raise ConfigError(
            f"{what}: " * bool(what) + "a positive duration up to 30 days, in seconds or as "
            f"text like 90s, 15m, 1h30m; got {value!r}."
        )
    return seconds


def duration_text(seconds: float) -> str:
    """``14 min 5 s``, ``46 s``, ``1 h 2 min``: a duration as people read it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class BudgetSpec(_Spec):
    """What the whole run may spend (``tidian run --time-limit`` sets ``time``)."""

    model_config = ConfigDict(extra="forbid")
    time: float | str | None = Field(
        None,
        description="Wall-clock limit of a run (each session of it, a resume included): "
        "seconds, or text like 90s, 15m, 1h30m. Time for the confirmation is kept aside; "
        "stages run in order while time is left, a stage's candidates in waves (every seed "
        "of a candidate, or of none; a wave starts while the time left is at least what the "
        "one before it took), a search stage (tune) searches for at most half of what is "
        "left; what the limit cut is recorded and shown. None: no limit.",
    )

    @field_validator("time")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is not None:
            parse_duration(value, "")
        return value

    def seconds(self) -> float | None:
        return None if self.time is None else parse_duration(self.time)


class ConfirmSpec(_Spec):
    """The confirmation after the last stage: the baseline and the final model's path re-run
    on fresh seeds, paired seed by seed and scored on the holdout."""

    model_config = ConfigDict(extra="forbid")
    seeds: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="Fresh seeds (none of them used by a stage); default: as many as "
        "evaluate.seeds, at least 5 (with 3 a t-interval has 2 degrees of freedom and the "
        "confirmation misses most real gains: bench/pipeline_aa.py); 0: no confirmation.",
    )


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?")
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Any, what: str = "constraints.max_bytes") -> int:
    """Bytes from a whole number of bytes or a text like ``1MB``, ``500 kB``, ``2MiB``."""
    size = None  # a finite float first: int() of an infinity raises OverflowError
    if isinstance(value, int) and not isinstance(value, bool):
        size = float(value) if value < 2**63 else math.inf
    elif isinstance(value, float) and value == value and value.is_integer():
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip().lower())):
        size = float(match[1]) * _UNITS[match[2] or "b"]
    if size is None or not 1 <= size < math.inf:
        raise ConfigError(
            f"{what}: " * bool(what) + "a positive size in bytes, or text like 500kB, 1MB, "
            f"2MiB; got {value!r:.60}."
        )
    return int(size)


class Constraints(_Spec):
    """What the deployed model may cost; a candidate above any limit is rejected, whatever its
    gain (``tidian run --max-bytes / --max-latency-ms / --max-params`` set them)."""

    model_config = ConfigDict(extra="forbid")
    max_latency_ms: float | None = Field(
        None, gt=0, description="Batch-1 latency on the deployment runtime, milliseconds."
    )
    max_params: int | None = Field(None, gt=0, description="Parameters.")
    max_bytes: int | None = Field(
        None, gt=0, description="The saved model's size: bytes, or text like 500kB, 1MB."
    )

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return value if value is None else parse_size(value, "")


class ResourcesSpec(_Spec):
    """What one job needs on a cluster (``--executor ray``); the local executor runs one job
    per worker process and ignores it."""

    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(1.0, ge=0, description="CPUs per job.")
    gpus: float = Field(0.0, ge=0, description="GPUs per job (fractions share a device).")
    memory_gb: float | None = Field(None, gt=0, description="Memory to reserve per job, GiB.")


class DeploySpec(_Spec):
    model_config = ConfigDict(extra="forbid")
    runtime: str = Field(
        "auto",
        pattern="^(auto|onnxruntime|torch)$",
        description="Where costs are measured: onnxruntime, torch, or auto (ONNX Runtime when "
        "the onnx extra is installed, else torch). Quantised models always run on ONNX Runtime.",
    )
    threads: int = Field(
        1, ge=1, le=1024, description="Intra-op threads for latency and throughput."
    )
    batch_size: int = Field(
        256, ge=1, le=65536, description="Batch size of the throughput measurement."
    )


class Recipe(_Spec):
    """The whole recipe. Stage entries are one-key mappings ``{stage_name: config}``."""

    model_config = ConfigDict(extra="forbid")
    task: str | dict[str, Any] = Field(
        "mnist1d", description="Built-in name, {name: ...} or {path: ...}."
    )
    model: dict[str, Any] = Field(description="The baseline: {name: <zoo model>, **options}.")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig options.")
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    confirm: ConfirmSpec = Field(default_factory=ConfirmSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    constraints: Constraints | None = None
    deploy: DeploySpec = Field(default_factory=DeploySpec)
    resources: ResourcesSpec | None = Field(
        None, description="Per job, on a cluster; a stage entry may override it (resources:)."
    )
    stages: list[dict[str, dict[str, Any]]] = Field(default_factory=list)

    # -- derived views used by the pipeline -----------------------------------------------------
    def load_task(self) -> Any:
        """The task every stage receives: the recipe's task, loaded (built-in name, or file
        with its loading options), without its holdout rows."""
        return self.load_tasks()[0]

    def load_tasks(self) -> tuple[Any, Any, str | None]:
        """``(task, holdout, why)``: the task the stages see, the holdout rows (a Split, or
        None) and why there is none. The holdout is carved out here, once, so nothing that
        receives the task can read it. A holdout the recipe asks for explicitly and the task
        cannot spare is an error; the default one is left out with the reason."""
        target, options = task_target(self.task)
        task = load_task(target, **options)
        share = self.evaluate.holdout
        if share == 0:
            return task, None, "evaluate.holdout is 0"
        try:
            staged, holdout = carve_holdout(task, share or DEFAULT_HOLDOUT)
        except DataError as err:
            if share is not None:
                raise DataError(
                    f"evaluate.holdout {share:g}: {err}. Lower it, give the task more rows, or "
                    "set holdout: 0 (the headline is then scored on the test split)."
                ) from None
            return task, None, str(err)
        return staged, holdout, None

    def confirm_seeds(self) -> list[int]:
        """The confirmation's fresh seeds: above every seed (and cross-validation unit) that
        the stages use, from CONFIRM_SEED up."""
        count = self.confirm.seeds
        count = max(len(self.seed_list()), MIN_CONFIRM_SEEDS) if count is None else count
        start = max([CONFIRM_SEED - 1, *self.seed_list(), *self.units()]) + 1
        return list(range(start, start + count))

    def seed_list(self) -> list[int]:
        seeds = self.evaluate.seeds
        return list(range(seeds)) if isinstance(seeds, int) else list(seeds)

    def cv(self):
        """The cross-validation of ``evaluate.folds`` (None: one fixed split)."""

        return make_cv(self.evaluate.folds, self.evaluate.repeated)

    def units(self) -> list[int]:
        """What every candidate is evaluated on: the seeds, or with folds the CV units."""
        cv = self.cv()
        return cv.units(self.seed_list()) if cv else self.seed_list()

    def stage_resources(self, index: int) -> dict[str, Any] | None:
        """What one job of stage ``index`` needs: its own ``resources`` entry over the
        recipe's (None: the executor's default)."""
        ((_, raw),) = self.stages[index].items()
        base = self.resources.model_dump(exclude_none=True) if self.resources else {}
        own = (raw or {}).get(RESOURCES) or {}
        return {**base, **own} or None

    def stage_entries(self) -> list[tuple[str, Any]]:
        """(name, validated config object) for each stage, in order."""
        out = []
        for i, entry in enumerate(self.stages):
            ((name, raw),) = entry.items()
            out.append((name, _stage_config(name, raw, i)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "recipe"


def _pydantic_message(err: dict[str, Any], fields: list[str]) -> str:
    if err["type"] == "value_error":  # a config's own check (__post_init__): its message says all
        return str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {key!r}{hint}; allowed: {', '.join(fields)}"
    return f"{err['msg']}; got {err.get('input')!r}"


def _raise_validation(error: ValidationError, prefix: tuple[Any, ...], fields_of) -> None:
    errors = error.errors()
    lines = []
    for err in errors[:MAX_PROBLEMS]:  # the rest are only counted: not worth their formatting
        loc = prefix + tuple(err["loc"])
        message = _pydantic_message(err, fields_of(err["loc"][:-1]))
        lines.append(f"{_short(_where(loc), 120)}: {_short(message)}")
    raise _problems(lines, len(errors))


MAX_PROBLEMS = 10  # problems listed in one message (then a count)


def _problems(lines: list[str], total: int | None = None) -> RecipeError:
    """One error for a recipe's problems: the first MAX_PROBLEMS lines, then a count of the
    rest (``total``: how many there are, when only the first lines were formatted)."""
    total = len(lines) if total is None else total
    shown = lines[:MAX_PROBLEMS]
    if total > MAX_PROBLEMS:
        shown.append(f"… and {total - MAX_PROBLEMS:,} more problems")
    return RecipeError("\n".join(shown))


MAX_SEEDS = 1000
DEFAULT_HOLDOUT = 0.15  # evaluate.holdout when the task can spare it
CONFIRM_STAGE = "confirm"  # the ledger's stage name of the confirmation's candidates
CONFIRM_SEED = 10_000  # the confirmation's first fresh seed
MIN_CONFIRM_SEEDS = 5  # its default number of seeds, at least (bench/pipeline_aa.py --power)


def _stage_config(name: str, raw: Any, index: int) -> Any:
    where = f"stages[{index}].{name}"
    if name not in STAGES:
        raise RecipeError(f"stages[{index}]: {STAGES.unknown(name)}")
    cls = STAGES.entry(name).meta["config"]
    fields = list(cls.__dataclass_fields__)
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a stage's config must be a mapping; got {raw!r}.")
    if RESOURCES in raw:  # what this stage's jobs need: not part of the stage's own config
        raw = dict(raw)
        try:
            ResourcesSpec.model_validate(raw.pop(RESOURCES))
        except ValidationError as err:
            _raise_validation(
                err, ("stages", index, name, RESOURCES), lambda _: list(ResourcesSpec.model_fields)
            )
    unknown = [k for k in raw if k not in fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(
            f"{where}: unknown option {unknown[0]!r}{hint}; allowed: {', '.join(fields)}."
        )
    try:
        config = TypeAdapter(cls).validate_python(raw)
    except ValidationError as err:
        _raise_validation(err, ("stages", index, name), lambda _: fields)
    _check_stage_names(config, where)
    return config


# The key a stage entry may carry besides its config: what one of its jobs needs.
RESOURCES = "resources"


def _drawn(value: Any) -> list[Any]:
    """The values a search-space entry can give a trial, as far as checking goes: each
    option of a ``choice``, both ends of an ``int`` / ``float`` range, or the fixed value."""
    if not is_distribution(value):
        return [value]
    return [
        v
        for kind in ("choice", "int", "float")
        if isinstance(value.get(kind), list)
        for v in value[kind]
    ]


def _check_model(spec: Any, where: str, searched: bool = False) -> None:
    """A zoo model and its options, each checked by kind. ``searched``: a branch of a tune
    space, whose options may be distributions: every value one can draw is checked (each
    option of a ``choice``, both ends of an ``int`` / ``float`` range)."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise RecipeError(
            f"{where}: a model is a mapping with a 'name' (a zoo model) and its "
            f"options; got {spec!r}."
        )
    try:
        entry = MODELS.entry(spec["name"])
    except TidianError as err:
        raise RecipeError(f"{where}.name: {err}") from None
    options = {k: v for k, v in spec.items() if k != "name"}
    drawn = [options]
    if searched:
        fixed = {k: v for k, v in options.items() if not is_distribution(v)}
        drawn = [fixed] + [
            {key: value}
            for key, dist in options.items()
            if is_distribution(dist)
            for value in _drawn(dist)
        ]
    try:
        for values in drawn:
            check_options(f"model {spec['name']!r}", entry.obj, values, typed=True)
    except TidianError as err:
        raise RecipeError(f"{where}: {err}") from None


def _check_train(train: Any, where: str) -> None:
    try:
        TrainConfig.from_dict(train, where=where)
    except TidianError as err:
        message = str(err)
        if message.startswith("train."):  # TrainConfig names its fields train.<field>
            message = f"{where}.{message[len('train.') :]}"
        elif not message.startswith(where):
            message = f"{where}: {message}"
        raise RecipeError(message) from None


def _check_stage_names(config: Any, where: str) -> None:
    """Resolve the registry names a built-in stage config holds (models, train options)."""
    for i, item in enumerate(getattr(config, "candidates", []) or []):
        if "name" in item:
            _check_model(item, f"{where}.candidates[{i}]")
        else:
            _check_train(item, f"{where}.candidates[{i}]")
    if isinstance(getattr(config, "train", None), dict):
        _check_train(config.train, f"{where}.train")
    space = getattr(config, "space", None)
    if isinstance(space, dict):
        _check_space_names(space, f"{where}.space")
    student = getattr(config, "student", None)
    if isinstance(student, dict) and "name" in student:
        _check_model(student, f"{where}.student")


def _check_space_names(space: dict[str, Any], where: str) -> None:
    """Keys of a search space are training options, or ``model`` (zoo models with options)."""
    fields = list(TrainConfig.__dataclass_fields__)
    for key, spec in space.items():
        if key == "model":
            chosen = isinstance(spec, dict) and "choice" in spec
            branches = spec["choice"] if chosen else [spec]
            if not isinstance(branches, list) or not branches:
                raise RecipeError(
                    f"{where}.model.choice: a non-empty list of models; got {branches!r}."
                )
            for i, branch in enumerate(branches):
                place = f"{where}.model.choice[{i}]" if chosen else f"{where}.model"
                _check_model(branch, place, searched=True)
        elif key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(
                f"{where}.{key}: not a training option{hint}; a space holds "
                f"training options and 'model'."
            )
        elif not (  # a nested space (augment: {shift: {int: …}}) is checked by its stage
            isinstance(spec, dict)
            and not is_distribution(spec)
            and any(is_distribution(v) for v in spec.values())
        ):
            for value in _drawn(spec):
                try:
                    TrainConfig.from_dict({key: value}, where=f"{where}.{key}")
                except TidianError as err:
                    raise RecipeError(f"{where}.{key}: {err}") from None


def stored_recipe(data: dict[str, Any]) -> Recipe:
    """The recipe a run recorded in the ledger, read as it ran. A run recorded before runs had
    a holdout and a confirmation (its recipe has no ``confirm`` key) is read with neither, so
    its task's test split is the one it was scored on; one recorded before stages chose on
    validation first (no ``evaluate.select``) resumes with Holm's rule, as it started."""
    if not isinstance(data, dict):
        return validate_recipe(data)
    evaluate = data.get("evaluate") if isinstance(data.get("evaluate"), dict) else {}
    if "confirm" not in data:
        evaluate = {**evaluate, "holdout": 0}
        data = {**data, "confirm": {"seeds": 0}}
    if "select" not in evaluate:
        evaluate = {**evaluate, "select": "holm"}
    return validate_recipe({**data, "evaluate": evaluate})


def validate_recipe(data: Any) -> Recipe:
    """A recipe from a mapping (or a Recipe), fully checked against the registries."""
    if isinstance(data, Recipe):
        data = data.model_dump()
    if not isinstance(data, dict):
        raise RecipeError(
            f"recipe: must be a mapping of keys (task, model, train, evaluate, "
            f"constraints, stages); got {type(data).__name__}."
        )
    fields = list(Recipe.model_fields)
    # each section's own keys, for its unknown-key messages (a new section needs nothing here)
    nested = {
        (name,): list(kind.model_fields)
        for name, field in Recipe.model_fields.items()
        for kind in (field.annotation, *get_args(field.annotation))
        if isinstance(kind, type) and issubclass(kind, _Spec)
    }
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        _raise_validation(err, (), lambda loc: nested.get(tuple(loc), fields))
    # Every section is checked, and every problem found is reported in one message (up to
    # MAX_PROBLEMS): three typos are one `recipe check`, not three.
    problems: list[str] = []

    def check(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ConfigError as err:
            problems.append(str(err))
            return None

    check(_check_task, recipe.task)
    check(_check_model, recipe.model, "model")
    check(_check_train, recipe.train, "train")
    check(_check_evaluate, recipe)
    quantized_at = None
    for i, entry in enumerate(recipe.stages):
        stage = check(_stage_of, i, entry)
        if stage is None:
            continue
        if stage.quantizes():
            quantized_at = quantized_at if quantized_at is not None else i
        elif quantized_at is not None and stage.edits_model:
            problems.append(
                f"stages[{i}].{stage.name}: comes after stages[{quantized_at}], which quantises "
                "the model for ONNX Runtime; torch stages cannot change a quantised model. Move "
                "quantisation to the end."
            )
    if problems:
        raise _problems(problems)
    return recipe


def _check_task(task: Any) -> None:
    if isinstance(task, str):
        if task not in TASKS and not Path(task).suffix:
            raise RecipeError(f"task: {TASKS.unknown(task)}")
    elif "name" in task:
        if not isinstance(task["name"], str):
            raise RecipeError(f"task.name: a task's name is text; got {task['name']!r}.")
        if task["name"] not in TASKS:
            raise RecipeError(f"task.name: {TASKS.unknown(task['name'])}")
    elif "path" not in task:
        raise RecipeError("task: a mapping needs 'name' (a built-in task) or 'path' (a file).")
    if isinstance(task, dict):
        try:
            check_task(*task_target(task))
        except TidianError as err:
            message = str(err)
            raise RecipeError(
                message if message.startswith("task ") else f"task: {message}"
            ) from None


def _check_evaluate(recipe: Recipe) -> None:
    if recipe.evaluate.metric is not None and recipe.evaluate.metric not in METRICS:
        raise RecipeError(f"evaluate.metric: {METRICS.unknown(recipe.evaluate.metric)}")
    for what in ("margin", "min_effect"):
        amount = getattr(recipe.evaluate, what)
        metric = recipe.evaluate.metric  # None: the task's, which the run checks against
        try:
            if amount is not None and metric is None:
                check_amount(amount, f"evaluate.{what}")
            elif amount is not None:
                quality_amount(amount, metric, 1.0, f"evaluate.{what}")
        except TidianError as err:
            raise RecipeError(str(err)) from None
    count = recipe.evaluate.seeds
    if (count if isinstance(count, int) else len(count)) > MAX_SEEDS:
        raise RecipeError(
            f"evaluate.seeds: at most {MAX_SEEDS:,} seeds (each trains every candidate once)."
        )
    seeds = recipe.seed_list()
    if not seeds or len(set(seeds)) != len(seeds):
        raise RecipeError(
            f"evaluate.seeds: must be a positive count or distinct integers; "
            f"got {recipe.evaluate.seeds!r}."
        )
    if recipe.evaluate.folds:
        if min(seeds) < 0:
            raise RecipeError("evaluate.seeds: seeds must be non-negative with folds.")
        if recipe.evaluate.ci != "t":
            raise RecipeError(
                "evaluate.ci: cross-validation (folds) needs the corrected t-interval, 't'."
            )
    elif recipe.evaluate.repeated:
        raise RecipeError("evaluate.repeated: only means something with evaluate.folds.")
    if len(recipe.units()) < 2:
        raise RecipeError("evaluate.seeds: the gate needs at least 2 seeds to estimate noise.")


def _stage_of(i: int, entry: dict[str, Any]) -> Any:
    """Stage entry ``i`` of a recipe as a configured stage (its config checked)."""
    if len(entry) != 1:
        raise RecipeError(
            f"stages[{i}]: a stage entry is a one-key mapping "
            f"{{stage_name: config}}; got keys {list(entry)}."
        )
    ((name, raw),) = entry.items()
    if name == "baseline":
        raise RecipeError(
            f"stages[{i}]: 'baseline' always runs first and is implicit; remove it from the stages."
        )
    config = _stage_config(name, raw, i)  # names an unknown stage with its place
    return STAGES.get(name)(config)


def load_recipe(source: str | Path | dict[str, Any] | Recipe) -> Recipe:
    """A validated recipe from a YAML file path, a YAML string, a mapping or a Recipe."""
    if isinstance(source, dict | Recipe):
        return validate_recipe(source)
    path = Path(source)
    if isinstance(source, Path) or (len(str(source)) < 4096 and path.suffix in (".yaml", ".yml")):
        text, name = _read_recipe_file(path), str(path)
    else:
        text, name = str(source), "<recipe>"
    return validate_recipe(read_yaml(text, name))


# Bounds on what a recipe may be: a recipe is a page of YAML, not a data set.
MAX_RECIPE_BYTES = 1 << 20  # 1 MiB
MAX_RECIPE_VALUES = 100_000  # values after YAML aliases are expanded
MAX_RECIPE_DEPTH = 64  # nesting of mappings and lists


def _read_recipe_file(path: Path) -> str:
    """The text of a recipe file: a regular file of at most MAX_RECIPE_BYTES of UTF-8 text
    (a directory, a FIFO, a device, a compressed or binary file is refused, never read
    unbounded)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise RecipeError(f"no recipe file {str(path)!r}.") from None
    except OSError as err:
        raise RecipeError(f"cannot read the recipe {str(path)!r}: {err.strerror}.") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise RecipeError(f"{str(path)!r} is {kind}; a recipe is a YAML text file.")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_RECIPE_BYTES + 1)
    except OSError as err:
        raise RecipeError(f"cannot read the recipe {str(path)!r}: {err.strerror}.") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"{str(path)!r} is larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a short "
            "YAML file (data belongs in the task's files)."
        )
    if data[:2] == b"\x1f\x8b":
        raise RecipeError(f"{str(path)!r} is gzip-compressed; a recipe is plain YAML text.")
    if b"\x00" in data:
        raise RecipeError(
            f"{str(path)!r} holds NUL bytes: binary data or UTF-16/32 text; save the recipe as "
            "UTF-8 text."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise RecipeError(
            f"{str(path)!r} is not UTF-8 text (line {line}, byte {err.start}: "
            f"{data[err.start : err.start + 1]!r}); save the recipe as UTF-8."
        ) from None


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: no tag constructs an object or calls code) that
    refuses a key given twice in one mapping and reads numbers as YAML 1.2 does: ``1:30:00``
    is text, not the sexagesimal 5400, and ``1e-4`` is a number."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {str(key)[:60]!r} is given twice (first on line "
                    f"{first.line + 1}); keep one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":int", ":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"
    ),
    list("-+0123456789"),
)


def read_yaml(text: str, name: str = "<recipe>") -> Any:
    """Recipe YAML text as plain data, bounded: at most MAX_RECIPE_VALUES values once aliases
    are expanded and MAX_RECIPE_DEPTH levels of nesting; every refusal says which limit."""
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{name}: malformed YAML{where}: {_short(problem)}.") from None
    except RecursionError:
        raise RecipeError(
            f"{name}: nested more than {MAX_RECIPE_DEPTH} levels deep; a recipe is a short "
            "mapping of mappings."
        ) from None
    except (ValueError, TypeError, OverflowError) as err:  # tagged values, 5000-digit numbers
        raise RecipeError(f"{name}: a value cannot be read: {_short(str(err))}.") from None
    _bounded(data, name)
    return data


def _bounded(data: Any, name: str) -> None:
    """Refuse data whose expansion (aliases repeated wherever they are used) holds more than
    MAX_RECIPE_VALUES values or nests deeper than MAX_RECIPE_DEPTH, without expanding it:
    each distinct object's size is counted once (an alias bomb of 9 levels of 9 aliases is
    ~387 million values from a 1 kB file)."""
    sizes: dict[int, int] = {}

    def size(obj: Any, depth: int) -> int:
        if depth > MAX_RECIPE_DEPTH:
            raise RecipeError(
                f"{name}: nested more than {MAX_RECIPE_DEPTH} levels deep (or an alias that "
                "refers to itself)."
            )
        if not isinstance(obj, dict | list):
            return 1
        if id(obj) not in sizes:
            items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
            total = 1
            for item in items:
                total += size(item, depth + 1)
                if total > MAX_RECIPE_VALUES:
                    raise RecipeError(
                        f"{name}: holds or expands to more than {MAX_RECIPE_VALUES:,} "
                        "values (YAML aliases repeat what they refer to); a recipe is a short "
                        "file."
                    )
            sizes[id(obj)] = total
        return sizes[id(obj)]

    size(data, 0)


def _short(text: str, limit: int = 300) -> str:
    """A message part no longer than ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def recipe_schema() -> dict[str, Any]:
    """JSON Schema of recipes, stages included (one-key objects, one per registered stage)."""
    schema = Recipe.model_json_schema()
    variants = []
    for entry in STAGES.entries():
        stage_schema = TypeAdapter(entry.meta["config"]).json_schema()
        stage_schema["additionalProperties"] = False
        variants.append(
            {
                "type": "object",
                "properties": {entry.name: stage_schema},
                "required": [entry.name],
                "additionalProperties": False,
                "description": entry.description,
            }
        )
    schema["properties"]["stages"] = {
        "type": "array",
        "items": {"oneOf": variants},
        "description": "Upgrade stages, run in order.",
    }
    schema["properties"]["model"]["properties"] = {"name": {"enum": MODELS.names()}}
    schema["properties"]["model"]["required"] = ["name"]
    return json.loads(json.dumps(schema))


DEFAULT_RECIPE: dict[str, Any] = {
    "task": "mnist1d",
    # The MNIST-1D paper's MLP: 40 -> 100 -> 100 -> 10 with a residual second layer.
    "model": {"name": "mlp", "hidden": [100, 100], "residual": True},
    "train": {"optimizer": "adam", "lr": 0.01, "epochs": 30, "batch_size": 100},
    "evaluate": {"metric": "accuracy", "seeds": 3, "confidence": 0.95},
    "stages": [
        {
            "train_variants": {
                "candidates": [
                    {"optimizer": "adamw", "weight_decay": 0.01, "schedule": "cosine"},
                    {"loss": "label_smoothing", "schedule": "cosine", "lr": 0.003},
                ]
            }
        },
        {
            "architecture": {
                "candidates": [
                    {
                        "name": "cnn1d",
                        "width": 32,
                        "depth": 3,
                        "kernel_size": 5,
                        "pool": True,
                        "norm": "batch",
                    },
                    {"name": "gru", "hidden": 32, "bidirectional": True, "readout": "mean"},
                ],
                "train": {"lr": 0.003, "schedule": "cosine"},
            }
        },
    ],
}
