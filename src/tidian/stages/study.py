"""Optuna studies kept in the run's own store database (the ``tune`` and ``compress`` stages).

One place for how a stage opens its study: on the store's database (so ``optuna-dashboard
<store-url>`` shows it and a resumed run continues it), named uniquely per run and stage
position, quiet (the pipeline reports, not Optuna).
"""

from __future__ import annotations

import logging
import time
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
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(6):
        try:
            with warnings.catch_warnings():  # heartbeats: "experimental" in name since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **beats)
        except SQLAlchemyError:
            # Runs that start together on a new store race to create Optuna's tables; the
            # loser fails ("already exists", a unique violation on its version table). Once
            # the winner is done the tables are there: opening again is safe.
            if attempt == 5:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


class _OneLine(logging.Filter):
    """Optuna's failed-trial warnings as one line: the traceback is dropped (the failure's
    reason is in the ledger, and the stage's report)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


def quiet(optuna: Any) -> None:
    """Optuna's log: warnings only, each on one line."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger = logging.getLogger("optuna")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())
    for handler in logger.handlers:
        if not any(isinstance(f, _OneLine) for f in handler.filters):
            handler.addFilter(_OneLine())


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
    quiet(optuna)
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
    quiet(optuna)
    return optuna.load_study(
        study_name=name, storage=storage(url, heartbeat), sampler=sampler, pruner=pruner
    )


# User attribute of a trial that was lost (its run killed, its node gone) and does not count:
# it holds no place in the budget and its sample is drawn again.
RETRIED = "tidian_retried"


def places(trials: Any) -> dict[int, int]:
    """Trial number → its place in the budget (trials before it, less lost ones), for every
    one of ``trials`` (a study's) that holds one. Samplers draw by place, and labels and
    reports name trials by it: a resumed study numbers its trials after the lost ones too,
    and would otherwise name the same trial differently from an uninterrupted run."""
    out: dict[int, int] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if not t.user_attrs.get(RETRIED):
            out[t.number] = len(out)
    return out


def make_positional(factory: Any, seed: int) -> Any:
    """An Optuna sampler whose every trial is drawn as if it were the study's ``k``-th, where
    ``k`` is its place in the budget (trials before it, less lost ones): the sampler
    ``factory(seed + k)`` makes draws it. A resumed study therefore continues the sequence an
    uninterrupted one draws, and workers sharing a study draw distinct samples without seed
    offsets.

    Optuna's samplers keep one random generator per process, which a resumed run restarts
    from its seed, so it re-draws what it tried before; Optuna has no way to seed a single
    trial, hence this wrapper (a fresh sampler per trial is cheap: the model-based ones read
    their history from the study, not from themselves)."""
    optuna = require("optuna", "tune", "Optuna studies")

    class Positional(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._factory, self._seed = factory, seed
            self._current: dict[int, tuple[Any, int]] = {}  # trial id -> (its sampler, place)
            self._idle = factory(seed)  # for calls outside a trial (reseed_rng)

        def _for(self, study: Any, trial: Any) -> tuple[Any, int]:
            if trial._trial_id not in self._current:
                done = study._storage.get_all_trials(study._study_id, deepcopy=False)
                k = places(done)[trial.number]
                self._current[trial._trial_id] = (self._factory(self._seed + k), k)
            return self._current[trial._trial_id]

        def before_trial(self, study: Any, trial: Any) -> None:
            sampler, k = self._for(study, trial)
            # The grid sampler takes its first pass over the grid in order of trial number:
            # it sees the trial numbered by its place. (Only here: TPE, for one, tells the
            # trial apart from its history by its number.)
            sampler.before_trial(study, _renumbered(trial, k))

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._for(study, trial)[0].infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._for(study, trial)[0].sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, distribution) -> Any:
            sampler = self._for(study, trial)[0]
            return sampler.sample_independent(study, trial, name, distribution)

        def after_trial(self, study, trial, state, values) -> None:
            sampler, _ = self._current.pop(trial._trial_id, (self._idle, None))
            sampler.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self._idle.reseed_rng()

    return Positional()


def _renumbered(trial: Any, k: int) -> Any:
    """A copy of ``trial`` numbered by its place in the budget."""
    import copy

    seen = copy.copy(trial)
    seen.number = k
    return seen


def retire_lost(study: Any) -> list[Any]:
    """Trials a killed run left RUNNING: failed and flagged as retried, so they neither count
    against the budget nor hold a place in the sampler's sequence. Returns them."""
    optuna = require("optuna", "tune", "Optuna studies")
    states = optuna.trial.TrialState
    lost = study.get_trials(deepcopy=False, states=(states.RUNNING,))
    for trial in lost:
        study._storage.set_trial_user_attr(trial._trial_id, RETRIED, True)
        study._storage.set_trial_state_values(trial._trial_id, states.FAIL)
    return lost
