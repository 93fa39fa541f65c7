"""tidian's errors.

Every foreseeable mistake (a bad option, a malformed file, an unknown name) raises a
:class:`TidianError` subclass whose message says what was wrong, what was given and what to do
next. Each subclass also derives from the built-in exception a Python user would expect
(``ValueError``, ``KeyError``…), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = [
    "ConfigError",
    "DataError",
    "DependencyError",
    "Interrupted",
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
            f"Install it with: pip install 'tidian[{extra}]' (or 'tidian[all]': every "
            "optional feature that installs on a CPU machine)"
        ) from err


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal: SIGTERM (container runtimes, systemd, schedulers) or
    SIGHUP (a closed terminal), handled as Ctrl-C is. A ``KeyboardInterrupt``, so whatever
    handles Ctrl-C handles it; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (as
    Ctrl-C raises KeyboardInterrupt), so a stopped run is marked interrupted and its workers
    are ended. Off the main thread (where Python cannot handle signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    before = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
