"""Tasks: built-in data sets and file loaders behind one call, :func:`load_task`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tidian.exceptions import ConfigError, DataError, bad_value
from tidian.registry import check_options
from tidian.tasks.builtin import TASKS
from tidian.tasks.loaders import array_task, load_file, loader_for, read_idx
from tidian.tasks.task import Split, Task

__all__ = [
    "TASKS",
    "Split",
    "Task",
    "array_task",
    "check_task",
    "load_task",
    "read_idx",
    "task_target",
]


def task_target(task: str | Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A task as a recipe writes it — a built-in name, ``{name: ..., **options}`` or ``{path:
    FILE, **options}`` — as (built-in name or file path, loading options)."""
    if isinstance(task, str):
        return task, {}
    options = dict(task)
    return options.pop("name", None) or options.pop("path", None), options


def load_task(name_or_path: str | Path | Task | Mapping[str, Any], **options: Any) -> Task:
    """A built-in task by name (``tidian tasks`` lists them), or a task read from a file/folder
    (also written as a recipe writes it: ``{"name" or "path": ..., **options}``).

    >>> load_task("iris", seed=1)                                # doctest: +SKIP
    >>> load_task("reviews.tsv", text="text", target="label")    # doctest: +SKIP
    """
    if isinstance(name_or_path, Mapping):  # as a recipe writes it
        where, spec = task_target(name_or_path)
        if not isinstance(where, str):
            raise bad_value("task", "a mapping with a 'name' or 'path' and options", spec)
        return load_task(where, **spec, **options)
    if isinstance(name_or_path, Task):
        if options:
            raise ConfigError("options cannot be applied to an already built Task.")
        return name_or_path
    if isinstance(name_or_path, str) and name_or_path in TASKS:
        entry = TASKS.entry(name_or_path)
        check_options(f"task {name_or_path!r}", entry.obj, options)
        return entry.obj(**options)
    path = Path(name_or_path)
    if path.exists():
        return load_file(path, **options)
    if isinstance(name_or_path, str) and not any(c in name_or_path for c in "/\\."):
        raise TASKS.unknown(name_or_path)

    raise DataError(
        f"{str(name_or_path)!r} is neither a built-in task nor an existing file or folder. "
        "`tidian tasks` lists the built-in tasks."
    )


SPLIT_SIZES = ("val_size", "test_size")


def check_task(name_or_path: str | Path, options: dict[str, Any]) -> None:
    """Check a task's options without loading its data: each option by kind against the
    loader that would read it (a built-in task's, or the file's: a number for ``val_size``,
    text for ``target``…), and the split sizes as fractions that leave training rows. A
    file that is not there is left to the run (a recipe may be checked on another machine)."""
    if isinstance(name_or_path, str) and name_or_path in TASKS:
        where, loader = f"task {name_or_path!r}", TASKS.entry(name_or_path).obj
    else:
        path = Path(name_or_path)
        if not path.exists():
            return
        where, loader = f"loading {path.name!r}", loader_for(path, options)
    check_options(where, loader, options, typed=True)
    sizes = {k: options[k] for k in SPLIT_SIZES if k in options}
    for key, size in sizes.items():
        if not 0 <= size < 1:
            raise ConfigError(f"{where}: option {key!r} is a fraction in [0, 1); got {size!r}.")
    if sum(sizes.values()) >= 1:
        raise ConfigError(f"{where}: val_size + test_size must be below 1; got {sizes}.")
