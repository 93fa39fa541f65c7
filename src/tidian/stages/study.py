"""Optuna studies kept in the run's own store database (the ``tune`` and ``compress`` stages).

One place for how a stage opens its study: on the store's database (so ``optuna-dashboard
<store-url>`` shows it and a resumed run continues it), named uniquely per run and stage
position, quiet (the pipeline reports, not Optuna).
"""

from __future__ import annotations

import warnings
from typing import Any

from tidian.exceptions import require

# Trial workers beat every HEARTBEAT seconds; a running trial silent for GRACE seconds (its
# worker's node died) is failed by the next worker that starts a trial, so a study never
# waits on a trial nobody runs.
HEARTBEAT, GRACE = 10, 60


def storage(url: str | None, heartbeat: bool = False) -> Any:
    """Optuna storage on the store's database (None: in memory). SQLite waits up to a minute
    for a lock instead of failing with "database is locked" when several trial workers write
    at once. ``heartbeat``: trial workers that may run on other machines beat, so that their
    trials are failed when they stop."""
    if url is None:
        return None
    optuna = require("optuna", "tune", "Optuna studies")
    kwargs = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    beats = {"heartbeat_interval": HEARTBEAT, "grace_period": GRACE} if heartbeat else {}
    with warnings.catch_warnings():  # heartbeats are "experimental" in name since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **beats)


def open_study(
    url: str | None,
    name: str | None,
    directions: list[str],
    sampler: Any,
    pruner: Any = None,
    *,
    feature: str,
) -> Any:
    """The study ``name`` on the store at ``url``, created or continued. ``feature`` names
    what needs Optuna, for the install hint."""
    optuna = require("optuna", "tune", feature)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage(url),
        study_name=name or None,
        load_if_exists=True,
        directions=directions,
        sampler=sampler,
        pruner=pruner,
    )


def load_study(
    url: str, name: str, sampler: Any, pruner: Any = None, *, heartbeat: bool = False
) -> Any:
    """A worker's handle on an existing study, with its own sampler."""
    optuna = require("optuna", "tune", "Optuna studies")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(
        study_name=name, storage=storage(url, heartbeat), sampler=sampler, pruner=pruner
    )
