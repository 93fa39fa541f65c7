"""The Task: what to learn, on which splits, judged by which metric.

A Task holds three splits as NumPy arrays (train / validation / test), the kind of its inputs
and targets, and the names a person needs (classes, features, vocabulary). It is built once —
by a built-in loader or a file loader — validated, and then only read: stages and trainers
never modify a Task, so one Task can be shared by every candidate and every worker process.

Array layouts, per input kind (``n`` samples):
  vector    float32 (n, features)
  sequence  float32 (n, length, channels)       — time first, channels last
  image     float32 (n, channels, height, width)
  text      int64   (n, length) token ids; 0 is padding, 1 is the unknown token
Targets: int64 class codes 0..k-1 for ``classes``; float32 (n,) for ``values``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tidian.exceptions import DataError, bad_value
from tidian.models.base import Signature
from tidian.tasks.preprocess import Preprocess

INPUT_KINDS = ("vector", "sequence", "image", "text")
TARGET_KINDS = ("classes", "values")
_INPUT_NDIM = {"vector": 2, "sequence": 3, "image": 4, "text": 2}


@dataclass(frozen=True, eq=False)
class Split:
    """One split: inputs ``x`` and targets ``y`` with the same number of rows; ``aux`` holds
    a multi-target task's other targets, row for row (see ``Task.aux_targets``)."""

    x: np.ndarray
    y: np.ndarray
    aux: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, rows: Any) -> Split:
        """The rows ``rows`` (indices or a boolean mask) of the inputs, the targets and every
        further target, row for row: what any step that picks or resamples rows must use."""
        return Split(self.x[rows], self.y[rows], {k: v[rows] for k, v in self.aux.items()})

    @staticmethod
    def concat(parts: Sequence[Split]) -> Split:
        """The splits' rows one after the other; a further target is kept when every part
        has it."""
        keys = set.intersection(*(set(p.aux) for p in parts)) if parts else set()
        return Split(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            {k: np.concatenate([p.aux[k] for p in parts]) for k in sorted(keys)},
        )


@dataclass(frozen=True, eq=False)
class Task:
    """A supervised learning problem with fixed splits. Immutable once built."""

    name: str
    train: Split
    val: Split
    test: Split
    input_kind: str
    target_kind: str
    class_names: tuple[str, ...] | None = None
    metric: str = ""
    feature_names: tuple[str, ...] | None = None
    vocab: tuple[str, ...] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)  # raw inputs → model inputs
    # further targets of a multi-target task: name -> {"kind", "class_names"}; their values sit
    # in each split's ``aux``. The main target (``y``) is what the metric and the gate judge.
    aux_targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # how each column of a table was read: "number", "category (3 values)", "date → year, …"
    columns_read: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise bad_value("input_kind", f"one of {INPUT_KINDS}", self.input_kind)
        if self.target_kind not in TARGET_KINDS:
            raise bad_value("target_kind", f"one of {TARGET_KINDS}", self.target_kind)
        if not self.metric:
            default = "accuracy" if self.target_kind == "classes" else "rmse"
            object.__setattr__(self, "metric", default)
        for split_name in ("train", "val", "test"):
            self._check_split(split_name, getattr(self, split_name))
        if len(self.train) == 0:
            raise DataError(f"task {self.name!r}: the training split is empty.")
        if self.target_kind == "classes":
            if not self.class_names:
                raise DataError(f"task {self.name!r}: a classification task needs class_names.")
            present = np.unique(self.train.y)
            if len(present) < 2:
                raise DataError(
                    f"task {self.name!r}: the training split has a single class "
                    f"({self.class_names[int(present[0])]!r}); a classifier needs at least two. "
                    "Check the target column, or use a regression target."
                )
        if self.input_kind == "text" and not self.vocab:
            raise DataError(f"task {self.name!r}: a text task needs its vocabulary.")
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if split.aux and set(split.aux) != set(self.aux_targets):
                raise DataError(
                    f"task {self.name!r}, {split_name} split: auxiliary targets "
                    f"{sorted(split.aux)} do not match the task's {sorted(self.aux_targets)}."
                )
            for name, values in split.aux.items():
                if len(values) != len(split):
                    raise DataError(
                        f"task {self.name!r}, {split_name} split: target {name!r} has "
                        f"{len(values)} rows but the inputs have {len(split)}; multi-task "
                        "targets must have the same length."
                    )

    def _check_split(self, split_name: str, split: Split) -> None:
        where = f"task {self.name!r}, {split_name} split"
        x, y = split.x, split.y
        if len(x) != len(y):
            raise DataError(
                f"{where}: inputs have {len(x)} rows but targets have {len(y)}; "
                "they must have the same length."
            )
        want = _INPUT_NDIM[self.input_kind]
        if x.ndim != want:
            raise DataError(
                f"{where}: {self.input_kind} inputs must have {want} dimensions "
                f"(samples first); got shape {x.shape}."
            )
        if self.input_kind == "text":
            if x.dtype != np.int64:
                raise DataError(f"{where}: text inputs must be int64 token ids; got {x.dtype}.")
        else:
            if x.dtype != np.float32:
                raise DataError(f"{where}: inputs must be float32; got {x.dtype}.")
            check_finite(x, where=where, names=self.feature_names)
        if self.target_kind == "classes":
            if y.dtype != np.int64:
                raise DataError(f"{where}: class targets must be int64 codes; got {y.dtype}.")
            if len(y) and (y.min() < 0 or y.max() >= len(self.class_names or ())):
                raise DataError(
                    f"{where}: class codes must lie in 0..{len(self.class_names or ()) - 1}."
                )
        else:
            if y.dtype != np.float32 or y.ndim != 1:
                raise DataError(f"{where}: regression targets must be float32 of shape (n,).")
            if len(y) and not np.isfinite(y).all():
                raise DataError(
                    f"{where}: {int((~np.isfinite(y)).sum())} targets are NaN or infinite. "
                    "Drop those rows (missing='drop' for file tasks)."
                )

    # -- what a model needs to know -----------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (without the batch dimension)."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    @property
    def n_outputs(self) -> int:
        """Width of a model's output: one logit per class, or one value."""
        return self.n_classes if self.target_kind == "classes" else 1

    @property
    def is_classification(self) -> bool:
        return self.target_kind == "classes"

    def signature(self) -> Signature:
        """What a model built for this task depends on (what a registered model's builder
        receives); saved beside a model's weights."""
        return Signature(
            input_kind=self.input_kind,
            input_shape=tuple(self.input_shape),
            target_kind=self.target_kind,
            n_outputs=self.n_outputs,
            vocab_size=len(self.vocab) if self.vocab else None,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input": f"{self.input_kind} {'x'.join(map(str, self.input_shape))}",
            "target": (
                f"{self.n_classes} classes" if self.is_classification else "values (regression)"
            ),
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "metric": self.metric,
        }

    def replace(self, **changes: Any) -> Task:
        return dataclasses.replace(self, **changes)

    def kfold(self, k: int = 5, *, seed: int = 0) -> Iterator[Task]:
        """Yield k tasks whose validation splits are the folds of train+val; test stays fixed.

        Folds are stratified for classification. Use it to select models on small data sets
        where one validation split is too noisy.
        """
        from sklearn.model_selection import KFold, StratifiedKFold

        if not isinstance(k, int) or k < 2:
            raise bad_value("k", "an integer >= 2", k)
        pooled = Split.concat([self.train, self.val])
        y = pooled.y
        if k > len(y):
            raise bad_value("k", f"at most the number of train+val samples ({len(y)})", k)
        if self.is_classification and np.bincount(y).min(initial=k) >= k:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        else:
            splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
        for fold, (tr, va) in enumerate(splitter.split(pooled.x, y)):
            yield self.replace(
                name=f"{self.name}[fold {fold + 1}/{k}]",
                train=pooled.take(tr),
                val=pooled.take(va),
            )

    def cv_unit(self, unit: int, folds: int, *, repeated: bool = False) -> Task:
        """Cross-validation unit ``unit`` of ``folds``-fold CV over all rows (train, val and
        test pooled): its test split is fold ``unit % folds`` of a stratified partition (the
        same partition for every unit, or a fresh shuffle per group of ``folds`` units when
        ``repeated``); the other rows are split into train and validation keeping this task's
        validation share. Over ``folds`` consecutive units every row is tested exactly once."""
        from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

        if not isinstance(folds, int) or folds < 2:
            raise bad_value("folds", "an integer >= 2", folds)
        if not isinstance(unit, int | np.integer) or unit < 0:
            raise bad_value("unit", "a non-negative integer", unit)
        pooled = Split.concat([p for p in (self.train, self.val, self.test) if len(p)])
        x, y = pooled.x, pooled.y
        if folds > len(y):
            raise bad_value("folds", f"at most the number of rows ({len(y)})", folds)
        repeat, fold = divmod(int(unit), folds)
        shuffle = repeat if repeated else 0
        stratify = self.is_classification and np.bincount(y).min(initial=folds) >= folds
        splitter = (
            StratifiedKFold(folds, shuffle=True, random_state=shuffle)
            if stratify
            else KFold(folds, shuffle=True, random_state=shuffle)
        )
        rest, test = list(splitter.split(x, y))[fold]
        share = len(self.val) / max(len(self.train) + len(self.val), 1)
        if share > 0:
            labels = y[rest] if stratify else None
            try:
                tr, va = train_test_split(
                    rest, test_size=share, random_state=int(unit), stratify=labels
                )
            except ValueError:  # a class too small to stratify the validation split
                tr, va = train_test_split(rest, test_size=share, random_state=int(unit))
        else:
            tr, va = rest, rest[:0]
        tr, va = np.sort(tr), np.sort(va)
        return self.replace(
            name=f"{self.name}[cv {fold + 1}/{folds}"
            + (f", repeat {repeat + 1}]" if repeated else "]"),
            train=pooled.take(tr),
            val=pooled.take(va),
            test=pooled.take(test),
        )


# -- helpers shared by the built-in tasks and the file loaders -----------------------------------


def check_finite(x: np.ndarray, *, where: str, names: Sequence[str] | None = None) -> None:
    """Raise a DataError naming the features that hold NaN or infinite values, with counts."""
    if x.size == 0 or np.isfinite(x).all():
        return
    flat = x.reshape(len(x), -1)
    nan = np.isnan(flat).sum(axis=0)
    inf = np.isinf(flat).sum(axis=0)
    bad = np.flatnonzero(nan + inf)
    parts = []
    for j in bad[:10]:
        label = names[j] if names is not None and j < len(names) else f"feature {j}"
        counts = ", ".join(
            f"{n} {what}" for n, what in ((int(nan[j]), "NaN"), (int(inf[j]), "inf")) if n
        )
        parts.append(f"{label!r} ({counts})")
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise DataError(
        f"{where}: features contain missing or infinite values: {'; '.join(parts)}{more}. "
        "Clean them, or load with missing='impute' (median / most frequent) or missing='drop'."
    )


def encode_labels(y: np.ndarray | Sequence[Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class labels of any type → int64 codes 0..k-1 and the sorted class names."""
    import pandas as pd

    # pandas' hash-based factorize: np.unique sorts every value (seconds on millions of text
    # labels); the classes and codes are the same, sorted.
    codes, classes = pd.factorize(np.asarray(y), sort=True, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), tuple(str(c) for c in classes)


def require_scorable(task: Any) -> None:
    """A task every candidate can be scored on: test rows (:func:`require_test_rows`), and
    for classes, no test label that training never shows (it could only be got wrong)."""
    require_test_rows(task)
    if task.target_kind == "classes":
        unseen = sorted(set(np.unique(task.test.y)) - set(np.unique(task.train.y)))
        if unseen:
            names = [str(task.class_names[int(c)]) for c in unseen]
            rows = int(np.isin(task.test.y, unseen).sum())
            raise DataError(
                f"task {task.name!r}: {rows} test row(s) carry label(s) {names} that no "
                "training row has; the model can never predict them. Move such rows into "
                "training or drop them (check the split column)."
            )


def require_test_rows(task: Any) -> None:
    """Refuse, before anything trains, a task whose test split is empty (``test_size: 0``, a
    split column without test rows, an NPZ with an empty ``x_test``): every candidate is
    scored on it."""
    if len(task.test) == 0:
        raise DataError(
            f"task {task.name!r} has no test rows ({len(task.train)} train, {len(task.val)} "
            "val): every candidate is scored on the test split. Give it test rows (test_size "
            "above 0, rows marked 'test' in the split column, x_test/y_test in an NPZ) or "
            "evaluate by cross-validation (evaluate: {folds: k} pools all rows)."
        )


# A holdout of fewer rows than this cannot tell a model's score from another's within several
# points (the standard error of an accuracy near 0.8 on 40 rows is 6 points).
MIN_HOLDOUT_ROWS = 40


def carve_holdout(task: Task, fraction: float, *, seed: int = 0) -> tuple[Task, Split]:
    """``task`` without its holdout, and the holdout: ``fraction`` of all rows, drawn
    (stratified by class) from the validation and test rows only, so the training rows — and
    everything fitted on them, such as the preprocessing — stay exactly as loaded; the rows
    left go back to the split they came from. Raises DataError saying why, with the numbers,
    when the task cannot spare :data:`MIN_HOLDOUT_ROWS` rows and still keep as many
    validation and test rows."""
    from sklearn.model_selection import train_test_split

    total = len(task.train) + len(task.val) + len(task.test)
    want = round(fraction * total)
    pool = Split.concat([p for p in (task.val, task.test) if len(p)] or [task.test])
    if want < MIN_HOLDOUT_ROWS or len(pool) - want < MIN_HOLDOUT_ROWS:
        raise DataError(
            f"{fraction:.0%} of the task's {total} rows is {want}, and a holdout "
            f"needs at least {MIN_HOLDOUT_ROWS} rows drawn from the {len(pool)} validation "
            f"and test rows while leaving at least {MIN_HOLDOUT_ROWS} of them"
        )
    rows = np.arange(len(pool))
    labels = pool.y if task.is_classification else None
    try:
        kept, held = train_test_split(rows, test_size=want, random_state=seed, stratify=labels)
    except ValueError:  # a class with a single validation or test row: drawn unstratified
        kept, held = train_test_split(rows, test_size=want, random_state=seed)
    kept = np.sort(kept)
    n_val = len(task.val)
    return (
        task.replace(val=pool.take(kept[kept < n_val]), test=pool.take(kept[kept >= n_val])),
        pool.take(np.sort(held)),
    )


def split_indices(
    y: np.ndarray,
    *,
    classes: bool,
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled train / validation / test row indices; stratified by class when ``classes``.

    Sizes are fractions of all rows. A size of 0 gives an empty split. ``class_names`` (the
    labels of the encoded classes) name a class too rare to split.
    """
    from sklearn.model_selection import train_test_split

    for name, size in (("val_size", val_size), ("test_size", test_size)):
        if not (isinstance(size, int | float) and 0 <= size < 1):
            raise bad_value(name, "a fraction in [0, 1)", size)
    if val_size + test_size >= 1:
        raise bad_value("val_size + test_size", "below 1", val_size + test_size)
    rows = np.arange(len(y))

    def cut(idx: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
        if size == 0:
            return idx, idx[:0]
        stratify = y[idx] if classes else None
        try:
            keep, held = train_test_split(idx, test_size=size, random_state=seed, stratify=stratify)
        except ValueError as err:
            values, counts = np.unique(y[idx], return_counts=True)
            rare = [
                str(class_names[int(v)]) if class_names is not None else str(v)
                for v, c in zip(values, counts)
                if c < 2
            ]
            if rare:
                raise DataError(
                    f"cannot make a stratified split: the class(es) {rare} have a single row "
                    "each, and every split needs rows of every class. Drop those rows or "
                    "merge them into another class."
                ) from None
            raise DataError(
                f"cannot make a stratified split of {len(idx)} rows into {size:.0%} held out: "
                f"{err} Give more rows per class, or smaller val_size / test_size."
            ) from None
        return np.sort(keep), np.sort(held)

    rest, test = cut(rows, test_size)
    train, val = cut(rest, val_size / (1 - test_size) if val_size else 0.0)
    return train, val, test


def from_indices(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    scale: bool = False,
    **task_fields: Any,
) -> Task:
    """Build a Task from full arrays and (train, val, test) row indices. ``scale``
    standardises every feature with statistics of the training rows only."""
    xs = [x[idx] for idx in parts]
    if scale:
        pre = Preprocess.standardize(xs[0].astype(np.float64))
        xs = [pre.apply(a) for a in xs]
        before = task_fields.get("preprocess")
        if before is not None and before.kind == "scale":  # x was already (raw - a) / b
            a, b = (np.asarray(before.spec[k], dtype=np.float64) for k in ("shift", "scale"))
            mean, std = (np.asarray(pre.spec[k]) for k in ("shift", "scale"))
            pre = Preprocess(
                "scale", {"shift": (a + b * mean).tolist(), "scale": (b * std).tolist()}
            )
        task_fields["preprocess"] = pre
    aux = task_fields.pop("aux", None) or {}
    splits = [
        Split(np.ascontiguousarray(a), y[idx], {k: v[idx] for k, v in aux.items()})
        for a, idx in zip(xs, parts)
    ]
    return Task(name, *splits, **task_fields)
