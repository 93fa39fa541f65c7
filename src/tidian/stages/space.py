"""Search spaces written as recipe data, sampled through an Optuna trial.

A space is a mapping from a name to either a fixed value or a distribution:

    lr:           {float: [1.0e-4, 1.0e-1], log: true}     # also step: 0.01
    epochs:       {int: [10, 60], step: 10}                # also log: true
    optimizer:    {choice: [adam, adamw, nesterov]}
    model:
      choice:                                              # conditional sub-spaces
        - {name: cnn1d, width: {int: [16, 128], log: true}, depth: {int: [2, 5]}}
        - {name: gru, hidden: {int: [32, 256]}}

A choice among mappings is a conditional branch: the branch is picked first (by its ``name``,
or its position) and only the picked branch's parameters are sampled, named
``<key>.<branch>.<param>``. ``check_space`` validates a space up front so that errors name
their place in the recipe; ``sample`` turns a trial into plain values.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tidian.exceptions import ConfigError

KINDS = ("float", "int", "choice")


def is_distribution(value: Any) -> bool:
    """Whether a space's value is a distribution (``{float: …}``, ``{int: …}``, ``{choice: …}``)."""
    return isinstance(value, dict) and any(k in value for k in KINDS)


def _branch_names(options: list[Any]) -> list[Any]:
    """What Optuna draws for a ``choice``: its options themselves when they are plain values
    (Optuna takes None, bools, numbers and strings), the ``name`` of each mapping, the JSON of
    each list (``hidden: {choice: [[32], [64, 32]]}`` draws "[32]" or "[64, 32]"), else the
    options' positions. The drawn name is mapped back to its option."""
    names = [o.get("name") if isinstance(o, dict) else o for o in options]
    if all(isinstance(o, dict) for o in options) and len(set(map(str, names))) == len(names):
        return [str(n) for n in names]
    if all(o is None or isinstance(o, bool | int | float | str) for o in options):
        return list(options)
    if not any(isinstance(o, dict) for o in options):
        texts = [json.dumps(o, default=str) for o in options]
        if len(set(texts)) == len(texts):
            return texts
    return list(range(len(options)))


def check_space(space: Any, where: str) -> None:
    """Raise ConfigError naming the place of the first malformed entry."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"{where}: a space is a non-empty mapping of names to values or "
            f"distributions; got {space!r}."
        )
    for key, spec in space.items():
        _check(spec, f"{where}.{key}")


# Keys of other libraries' range syntax: a mapping of them is a mistaken distribution, not a
# fixed value (it would fail only when the first trial builds its config).
_RANGE_WORDS = {"low", "high", "min", "max", "log", "step", "values", "choices", "range"} | {
    # distribution names of other tuners (Ray Tune, Hyperopt, Optuna's suggest_*)
    "uniform",
    "loguniform",
    "quniform",
    "qloguniform",
    "randint",
    "lograndint",
    "randn",
    "normal",
    "lognormal",
    "categorical",
    "grid_search",
    "sample_from",
    "discrete_uniform",
    "int_uniform",
    "suggest_float",
    "suggest_int",
    "suggest_categorical",
}


def _check(spec: Any, where: str) -> None:
    if not is_distribution(spec):
        if isinstance(spec, dict) and set(spec) & _RANGE_WORDS and "name" not in spec:
            raise ConfigError(
                f"{where}: {spec!r} is not a distribution here; write {{float: [low, high], "
                "log: true}, {int: [low, high], step: 1} or {choice: [a, b, ...]}."
            )
        if isinstance(spec, dict) and any(is_distribution(v) for v in spec.values()):
            check_space(spec, where)
        return
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of float, int or choice; got {kinds}.")
    kind = kinds[0]
    allowed = {kind, "log", "step"} if kind != "choice" else {"choice"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(
            f"{where}: unknown key(s) {extra} for a {kind} distribution; "
            f"allowed: {sorted(allowed)}."
        )
    if kind == "choice":
        options = spec["choice"]
        if not isinstance(options, list) or not options:
            raise ConfigError(
                f"{where}.choice: must be a non-empty list of options; got {options!r}."
            )
        for i, option in enumerate(options):
            if isinstance(option, dict):
                for k, v in option.items():
                    _check(v, f"{where}.choice[{i}].{k}")
        return
    bounds = spec[kind]
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(
            isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b)
            for b in bounds
        )
    ):
        raise ConfigError(f"{where}.{kind}: must be [low, high], finite numbers; got {bounds!r}.")
    low, high = bounds
    if kind == "int" and not all(float(b).is_integer() for b in bounds):
        raise ConfigError(f"{where}.int: bounds must be integers; got {bounds!r}.")
    if not low < high:
        raise ConfigError(
            f"{where}.{kind}: the range [{low}, {high}] is empty or inverted; "
            "low must be below high."
        )
    log, step = spec.get("log", False), spec.get("step")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range must be above 0; got [{low}, {high}].")
    if log and step is not None:
        raise ConfigError(f"{where}: use log or step, not both.")
    if step is not None and not (
        isinstance(step, int | float) and not isinstance(step, bool) and 0 < step <= high - low
    ):
        raise ConfigError(f"{where}.step: must be positive and at most high - low; got {step!r}.")
    if kind == "int" and step is not None and not float(step).is_integer():
        raise ConfigError(f"{where}.step: an int range steps by whole numbers; got {step!r}.")


def sample(trial: Any, space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Concrete values for one trial; only active branches are sampled."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        out[key] = _sample(trial, spec, prefix + key)
    return out


def _sample(trial: Any, spec: Any, name: str) -> Any:
    if not is_distribution(spec):
        if isinstance(spec, dict):
            return sample(trial, spec, name + ".")
        return spec
    if "float" in spec:
        low, high = spec["float"]
        return trial.suggest_float(
            name, float(low), float(high), log=bool(spec.get("log")), step=spec.get("step")
        )
    if "int" in spec:
        low, high = spec["int"]
        return trial.suggest_int(
            name, int(low), int(high), log=bool(spec.get("log")), step=int(spec.get("step") or 1)
        )
    options = spec["choice"]
    names = _branch_names(options)
    picked = trial.suggest_categorical(name, names)
    option = options[names.index(picked)]
    if isinstance(option, dict):
        return sample(trial, option, f"{name}.{picked}.")
    return option


def has_categorical(space: Any) -> bool:
    if isinstance(space, dict):
        if "choice" in space and is_distribution(space):
            return True
        return any(has_categorical(v) for v in space.values())
    return False


MAX_GRID = 100_000  # points a grid search may enumerate (each a trial to run)


def _grid_size(spec: Any) -> float:
    """How many values a grid takes from one distribution (0: not a distribution or not a
    finite one, which ``grid`` refuses with its own message)."""
    if not is_distribution(spec):
        return 0
    if "choice" in spec:
        return len(spec["choice"]) if isinstance(spec["choice"], list) else 0
    kind = "int" if "int" in spec else "float"
    low, high = spec[kind]
    step = spec.get("step") or (1 if kind == "int" else 0)
    return math.floor((high - low) / step + 1e-9) + 1 if step else 0


def grid(space: dict[str, Any], where: str) -> dict[str, list[Any]]:
    """The grid of a space for GridSampler: every distribution must be finite (choice, int,
    or float with a step) and branches may not be conditional."""
    out: dict[str, list[Any]] = {}
    sizes = {key: _grid_size(spec) for key, spec in space.items()}
    points = math.prod(n for n in sizes.values() if n)
    if points > MAX_GRID:
        shown = " × ".join(f"{n:,} {key}" for key, n in sizes.items() if n)
        raise ConfigError(
            f"{where}: the grid has {points:,.0f} points ({shown}); at most {MAX_GRID:,}. "
            "Give a larger step, fewer choices, or use sampler random or tpe."
        )
    for key, spec in space.items():
        name = f"{where}.{key}"
        if not is_distribution(spec):
            if isinstance(spec, dict) and any(is_distribution(v) for v in spec.values()):
                raise ConfigError(
                    f"{name}: grid search needs a flat space of choices, ints and "
                    "stepped floats; use sampler random or tpe here."
                )
            continue
        if "choice" in spec:
            if any(
                isinstance(o, dict) and any(is_distribution(v) for v in o.values())
                for o in spec["choice"]
            ):
                raise ConfigError(
                    f"{name}: grid search cannot follow conditional branches; "
                    "use sampler random or tpe."
                )
            out[key] = _branch_names(spec["choice"])
        elif "int" in spec:
            low, high = spec["int"]
            out[key] = list(range(int(low), int(high) + 1, int(spec.get("step") or 1)))
        elif spec.get("step"):
            low, high = spec["float"]
            n = math.floor((high - low) / spec["step"] + 1e-9) + 1
            out[key] = [low + i * spec["step"] for i in range(n)]
        else:
            raise ConfigError(f"{name}: grid search needs a step for float ranges.")
    return out
