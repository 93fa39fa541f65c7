"""One generic registry, used for tasks, models, optimizers, losses, metrics and (later) stages.

Things register themselves where they are defined::

    MODELS = Registry("model", listing="tidian models")

    @MODELS.register("mlp", inputs=("vector", "sequence", "image", "text"))
    def mlp(task, *, hidden=(100, 100), ...): ...

A lookup of an unknown name raises :class:`~tidian.exceptions.UnknownNameError` naming the
close matches and the command that lists them all. Registries are filled at import time and
only read afterwards, so reading them from several threads is safe.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

from tidian.exceptions import ConfigError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its name, one-line description and free-form metadata."""

    name: str
    obj: T
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """Keyword-only parameters of a registered callable and their defaults."""
        if not callable(self.obj):
            return {}
        params = inspect.signature(self.obj).parameters.values()
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }


class Registry(Generic[T]):
    """Name → object, with close-match errors and pattern listing."""

    def __init__(self, kind: str, listing: str | None = None) -> None:
        self.kind = kind
        self.listing = listing
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, description: str | None = None, **meta: Any):
        """Decorator registering ``obj`` under ``name``; the docstring's first line describes it."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description=description, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, description: str | None = None, **meta: Any) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError(f"a {self.kind} name must be a non-empty string; got {name!r}.")
        if name in self._entries:
            raise ConfigError(
                f"{self.kind} {name!r} is already registered; pick another name for yours."
            )
        if description is None:
            doc = inspect.getdoc(obj) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        self._entries[name] = Entry(name, obj, description, dict(meta))

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def unknown(self, name: object) -> UnknownNameError:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        # Prefix matches catch abbreviations difflib scores low ("cnn" → cnn1d, cnn2d).
        close += [n for n in self._entries if n.startswith(str(name)) and n not in close]
        message = f"unknown {self.kind} {name!r}"
        if close:
            message += f" (did you mean {', '.join(close[:3])}?)"
        message += "."
        if self.listing:
            message += f" `{self.listing}` lists them all."
        else:
            message += f" Known: {', '.join(sorted(self._entries))}."
        return UnknownNameError(message)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self, pattern: str = "*") -> list[Entry[T]]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


def check_options(
    where: str, func: Callable[..., Any], options: dict[str, Any], *, typed: bool = False
) -> None:
    """Reject options that ``func`` does not take, naming the ones it does; with ``typed``,
    also values of the wrong kind (a flag for a list of widths, 8.5 for a width), judged
    from the parameter's annotation or default (models: their options are such plain
    kinds)."""
    params = inspect.signature(func).parameters.values()
    # free-form options besides the named ones: the callable validates those itself
    free = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    # Options are the keyword-only parameters; positional ones (the task, a path) are not.
    kinds = {inspect.Parameter.KEYWORD_ONLY}
    if not any(p.kind in kinds for p in params):
        kinds.add(inspect.Parameter.POSITIONAL_OR_KEYWORD)
    accepted = {p.name for p in params if p.kind in kinds}
    unknown = sorted(set(options) - accepted)
    if unknown and not free:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(accepted), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{where} does not take the option(s) {', '.join(hints)}. "
            f"It takes: {', '.join(sorted(accepted)) or 'no options'}."
        )
    by_name = {p.name: p for p in params}
    for name, value in options.items() if typed else ():
        if name not in accepted:
            continue  # a free-form option
        problem = _unlike(value, by_name[name]) or _out_of_range(name, value)
        if problem:
            raise ConfigError(f"{where}: option {name!r} {problem}; got {value!r}.")


MAX_WIDTH = 100_000  # an integer in a list option (a layer width, a kernel size) beyond this


def _out_of_range(name: str, value: Any) -> str | None:
    """Options whose name fixes their range, whatever callable takes them: a dropout
    (``dropout``, ``attention_dropout``…) is a probability below 1."""
    if name.endswith("dropout") and isinstance(value, int | float) and not 0 <= value < 1:
        return "is a probability in [0, 1)"
    return None


# What an option annotated so must be (annotations are read as text: modules use
# ``from __future__ import annotations``).
_SCALARS = {
    "bool": (lambda v: isinstance(v, bool), "is a flag (true or false)"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "is a whole number"),
    "float": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        "is a finite number",
    ),
    "str": (lambda v: isinstance(v, str), "is text"),
}


def _unlike(value: Any, param: inspect.Parameter) -> str | None:
    """Why ``value`` cannot be given for ``param`` (None: it can): by its annotation when it
    is a plain one (bool, int, float, str, a list of ints), else by the kind of its default
    (a flag, a number, text, a list of numbers). Anything else is the callable's to check."""
    annotation = param.annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    kinds = [k.strip() for k in str(text).split("|")]
    if value is None:
        return None if "None" in kinds or param.default is None else "cannot be null"
    if kinds and all(k in _SCALARS or k in _LISTS or k == "None" for k in kinds):
        if any(k in _SCALARS and _SCALARS[k][0](value) for k in kinds):
            return None
        if any(k in _LISTS for k in kinds) and isinstance(value, list | tuple):
            ok = all(_width(v) for v in value)
            return None if ok else f"is a list of whole numbers in 1..{MAX_WIDTH:,}"
        wanted = [
            _SCALARS[k][1] if k in _SCALARS else "is a list of whole numbers"
            for k in kinds
            if k != "None"
        ]
        return " or ".join(dict.fromkeys(wanted))
    return _unlike_default(value, param.default)


_LISTS = ("Sequence[int]", "list[int]", "tuple[int, ...]")


def _unlike_default(value: Any, default: Any) -> str | None:
    if default is None or default is inspect.Parameter.empty:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "is a flag (true or false)"
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "is a number"
        return None if math.isfinite(value) else "must be finite"
    if isinstance(default, str):
        return None if isinstance(value, str) else "is text"
    if isinstance(default, list | tuple):
        if not isinstance(value, list | tuple):
            return "is a list"
        whole = bool(default) and all(
            isinstance(d, int) and not isinstance(d, bool) for d in default
        )
        if whole and not all(_width(v) for v in value):
            return f"is a list of whole numbers in 1..{MAX_WIDTH:,}"
    return None


def _width(v: Any) -> bool:
    return (
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and float(v).is_integer()
        and 0 < v <= MAX_WIDTH
    )


# Modules outside tidian that register things (a user's models, losses, steps): every worker
# process imports them before its first job, so that names registered in the driver resolve
# there too. Filled by import_plugins and by register_model; read by executors.base.modules.
_WORKER_IMPORTS: dict[str, None] = {}

# The entry-point group an installed package names its modules in, so that the command line
# finds what they register (``[project.entry-points."tidian.models"] mine = "mypkg.models"``).
PLUGIN_GROUP = "tidian.models"


def import_in_workers(module: str) -> None:
    """Have every worker import ``module`` before it runs a job (the driver has it already).
    Scripts (``__main__``) are left out: a worker cannot import them by name."""
    if module and module not in ("__main__", "__mp_main__") and not _is_tidian(module):
        _WORKER_IMPORTS[module] = None


def worker_imports() -> tuple[str, ...]:
    """The modules :func:`import_in_workers` named, in the order they were named."""
    return tuple(_WORKER_IMPORTS)


def _is_tidian(module: str) -> bool:
    return module == "tidian" or module.startswith("tidian.")


def import_plugins(modules: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Import the modules installed packages name in the ``tidian.models`` entry-point group,
    then ``modules`` (``tidian --import mypkg.models``; a module in the working directory is
    found too, as ``python -m`` finds it), so that what they register can be named in
    recipes and rebuilt by export, report, predict and serve. Returns the modules imported.
    Raises ConfigError naming the module when one cannot be imported."""
    loaded: list[str] = []
    for point in metadata.entry_points(group=PLUGIN_GROUP):
        where = f"entry point {point.name!r} of {point.dist.name if point.dist else '?'}"
        loaded.append(_import(point.module, where))
    for name in modules:
        loaded.append(_import(name, "--import"))
    return loaded


def _import(name: str, where: str) -> str:
    try:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            here = {"", os.getcwd()}
            if err.name != name.split(".")[0] or here & set(sys.path):
                raise
            sys.path.insert(0, "")  # the working directory, as `python -m` has it
            importlib.import_module(name)
    except Exception as err:  # a user's module may raise anything while importing
        raise ConfigError(
            f"cannot import {name!r} ({where}): {type(err).__name__}: {err}"
        ) from None
    import_in_workers(name)
    return name
