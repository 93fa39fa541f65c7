"""tidian's errors.

Every foreseeable mistake (a bad option, a malformed file, an unknown name) raises a
:class:`TidianError` subclass whose message says what was wrong, what was given and what to do
next. Each subclass also derives from the built-in exception a Python user would expect
(``ValueError``, ``KeyError``…), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DependencyError",
    "TidianError",
    "UnknownNameError",
]


class TidianError(Exception):
    """Base class of every error tidian raises on purpose."""


class ConfigError(TidianError, ValueError):
    """A parameter or option has a value tidian cannot use."""


class UnknownNameError(ConfigError):
    """A name (task, model, optimizer, loss, metric…) is not registered."""


class DataError(TidianError, ValueError):
    """Data is missing, malformed or unusable (NaNs, a single class, unreadable file…)."""


class DependencyError(TidianError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def bad_value(param: str, expected: str, got: object, hint: str = "") -> ConfigError:
    """One message shape for bad input: parameter, what it must be, what was given, next step."""
    message = f"{param} must be {expected}; got {got!r}."
    if hint:
        message += f" {hint}"
    return ConfigError(message)


def require(module: str, extra: str, feature: str):
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DependencyError(
            f"{feature} needs the optional package {module!r}, which is not installed. "
            f"Install it with: pip install 'tidian[{extra}]'"
        ) from err
