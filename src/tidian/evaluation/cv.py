"""Cross-validation as the unit of evaluation, for small data sets where one test split is
too few rows to tell candidates apart.

With ``folds = k``, each seed s gives k *units* u = s·k + f (f = 0..k−1): unit u trains with
seed u on :meth:`Task.cv_unit` ``(u, k)`` — test = fold f, the rest split into train and
validation. Everything downstream (the ledger's per-seed rows, paired comparisons, the gate)
treats units exactly as seeds: two candidates' unit u share the same rows.

Scores of CV units are correlated (their training sets overlap), so intervals and tests use
Nadeau & Bengio's corrected variance, σ²·(1/n + n_test/n_train) instead of σ²/n
(:func:`tidian.evaluation.stats.variance_factor`); ``correction`` gives that ρ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidian.exceptions import bad_value


@dataclass(frozen=True)
class CV:
    """``folds``-fold cross-validation; ``repeated``: a fresh shuffle of the rows per seed
    (repeated k-fold) instead of one partition shared by all seeds."""

    folds: int
    repeated: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.folds, int) or self.folds < 2:
            raise bad_value("folds", "an integer >= 2", self.folds)

    def units(self, seeds: Sequence[int]) -> list[int]:
        if any(int(s) < 0 for s in seeds):
            raise bad_value("seeds", "non-negative integers with cross-validation", list(seeds))
        return [int(s) * self.folds + f for s in seeds for f in range(self.folds)]

    def task(self, task: Any, unit: int) -> Any:
        return task.cv_unit(unit, self.folds, repeated=self.repeated)

    def correction(self, task: Any) -> float:
        """ρ = n_test / n_train of one unit (the same for all units, up to rounding)."""
        unit = self.task(task, 0)
        return len(unit.test) / max(len(unit.train), 1)


def make_cv(folds: int | None, repeated: bool = False) -> CV | None:
    return CV(int(folds), bool(repeated)) if folds else None
