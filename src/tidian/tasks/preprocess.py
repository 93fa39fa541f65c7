"""How raw inputs become a model's inputs — fitted on the training split, saved as JSON.

A task keeps the preprocessing it applied (standardisation statistics, imputation medians,
one-hot categories, the text vocabulary), so an exported model can take *raw* rows
(``tidian predict``) and give the answers the evaluation measured. The same object transforms
the task's own data when it is built, so training and deployment cannot drift apart.

Kinds:

* ``none``  — inputs are used as they are (shape checked);
* ``scale`` — ``(x - shift) / scale`` with per-feature or scalar ``shift`` / ``scale``;
* ``table`` — numeric columns: missing → training median (when imputing), then standardised;
  categorical columns: one-hot over the training categories (unseen → all zeros); date
  columns (ISO 8601 text): numeric parts ``COLUMN.year``, ``.month``, ``.day``, ``.weekday``
  (``.hour``, ``.minute`` where times are given), then treated as numeric columns;
* ``text``  — tokenised, mapped through the training vocabulary, padded to ``max_len``; or,
  with ``tokenizer`` (a pretrained directory), tokenised by that tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tidian.exceptions import DataError, bad_value
from tidian.models.pretrained import tokenizer_at
from tidian.tasks import text as textlib

KINDS = ("none", "scale", "table", "text")
MISSING_CATEGORY = "<missing>"


@dataclass(frozen=True)
class Preprocess:
    """A fitted preprocessing step; ``spec`` is plain JSON data (see the module docstring)."""

    kind: str = "none"
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise bad_value("preprocess.kind", f"one of {KINDS}", self.kind)

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def standardize(cls, train: np.ndarray) -> Preprocess:
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        std[std == 0] = 1.0  # a constant column stays constant (0) instead of dividing by zero
        return cls("scale", {"shift": mean.tolist(), "scale": std.tolist()})

    @classmethod
    def table(
        cls,
        train_frame,
        numeric: list[str],
        categorical: list[str],
        impute: bool,
        dates: dict[str, Sequence[str]] | None = None,
    ):
        date_spec = [{"column": c, "parts": list(parts)} for c, parts in (dates or {}).items()]
        if date_spec:
            train_frame = _with_date_parts(train_frame, date_spec)
            numeric = [*numeric, *(f"{d['column']}.{p}" for d in date_spec for p in d["parts"])]
        numeric_spec = []
        for c in numeric:  # a column at a time: a copy of one column, not of the table
            values = train_frame[c].to_numpy(dtype=np.float64)
            gaps = np.isnan(values)
            median = float(np.median(values[~gaps])) if (~gaps).any() else 0.0
            if gaps.any():
                values = np.where(gaps, median, values)
            std = float(values.std()) if len(values) else 0.0
            numeric_spec.append(
                {
                    "column": c,
                    "median": median,
                    "mean": float(values.mean()) if len(values) else 0.0,
                    "std": std or 1.0,
                }
            )
        categorical_spec = [
            {
                "column": c,
                "categories": sorted(
                    train_frame[c].astype("string").fillna(MISSING_CATEGORY).unique()
                ),
            }
            for c in categorical
        ]
        spec = {"numeric": numeric_spec, "categorical": categorical_spec, "impute": impute}
        if date_spec:
            spec["dates"] = date_spec
        return cls("table", spec)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Preprocess:
        return cls() if not data else cls(data["kind"], dict(data.get("spec") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "spec": self.spec}

    # -- use ---------------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        if self.kind != "table":
            return []
        names = [n["column"] for n in self.spec["numeric"]]
        for c in self.spec["categorical"]:
            names += [f"{c['column']}={v}" for v in c["categories"]]
        return names

    def categories(self, column: str) -> list[str]:
        """The training categories of a categorical table column."""
        return next(c["categories"] for c in self.spec["categorical"] if c["column"] == column)

    @property
    def columns(self) -> list[str]:
        """The raw columns a table or text input must have."""
        if self.kind == "table":
            derived = {f"{d['column']}.{p}" for d in self._dates for p in d["parts"]}
            return (
                [n["column"] for n in self.spec["numeric"] if n["column"] not in derived]
                + [d["column"] for d in self._dates]
                + [c["column"] for c in self.spec["categorical"]]
            )
        if self.kind == "text":
            return [self.spec["column"]]
        return []

    def apply(self, raw: Any, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Raw inputs → model inputs. ``raw``: a DataFrame (table, text), a list of strings
        (text) or an array (none, scale); ``input_shape`` (without the batch axis) is checked."""
        if self.kind == "table":
            return self._table(raw)
        if self.kind == "text":
            return self._text(raw)
        x = _numeric(raw)
        if input_shape is not None:
            size = int(np.prod(input_shape))
            if x[0].size == size and tuple(x.shape[1:]) != tuple(input_shape):
                x = x.reshape(len(x), *input_shape)  # flattened rows, or no channel axis
            if tuple(x.shape[1:]) != tuple(input_shape):
                raise bad_value("inputs", f"samples of shape {tuple(input_shape)}", x.shape[1:])
        if self.kind == "scale":
            shift = np.asarray(self.spec["shift"], dtype=np.float64)
            scale = np.asarray(self.spec["scale"], dtype=np.float64)
            x = (x - shift) / scale
        return np.ascontiguousarray(x, dtype=np.float32)

    def to_raw(self, j: int, values: Any) -> np.ndarray | None:
        """Model-input values of feature ``j`` in the raw units they were read in (the
        standardisation undone), or None where feature ``j`` has none (one-hot, text)."""
        v = np.asarray(values, dtype=np.float64)
        if self.kind == "table":
            numeric = self.spec["numeric"]
            return v * numeric[j]["std"] + numeric[j]["mean"] if j < len(numeric) else None
        if self.kind == "scale":
            shift = np.ravel(np.asarray(self.spec["shift"], dtype=np.float64))
            scale = np.ravel(np.asarray(self.spec["scale"], dtype=np.float64))
            if j >= max(shift.size, scale.size):
                return None
            return v * scale[j % scale.size] + shift[j % shift.size]  # scalars broadcast
        if self.kind == "none":
            return v
        return None

    def unusable_rows(self, raw: Any) -> dict[int, str]:
        """Rows of a raw table this preprocessing cannot turn into inputs, by position, with
        why: missing or infinite numbers when the task was loaded without imputation. (Every
        other kind takes every row it can read.)"""
        if self.kind != "table" or self.spec.get("impute") or not self.spec["numeric"]:
            return {}
        frame = self._frame(raw)
        cols = [n["column"] for n in self.spec["numeric"]]
        try:
            values = frame[cols].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            return {}  # apply() names the columns that are not numbers
        gaps = ~np.isfinite(values)
        return {
            int(i): "missing or infinite " + ", ".join(c for c, g in zip(cols, gaps[i]) if g)
            for i in np.flatnonzero(gaps.any(axis=1))
        }

    @property
    def _dates(self) -> list[dict[str, Any]]:
        return (self.spec.get("dates") or []) if self.kind == "table" else []

    def _frame(self, raw: Any):
        import pandas as pd

        frame = raw if isinstance(raw, pd.DataFrame) else pd.DataFrame(raw)
        frame.columns = [str(c) for c in frame.columns]
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"the input lacks the columns {missing}; the model was trained on {self.columns}."
            )
        return _with_date_parts(frame, self._dates) if self._dates else frame

    def _table(self, raw: Any) -> np.ndarray:
        import pandas as pd

        frame = self._frame(raw)
        numeric = self.spec["numeric"]
        # written a column at a time into the float32 result: no float64 copy of the table
        x = np.zeros((len(frame), len(self.feature_names)), dtype=np.float32)
        bad = []
        for j, n in enumerate(numeric):
            try:
                values = frame[n["column"]].to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                cols = [n["column"] for n in numeric]
                raise DataError(f"the columns {cols} must be numeric.") from None
            gaps = ~np.isfinite(values)
            if gaps.any():
                bad.append(n["column"])
                values = np.where(gaps, n["median"], values)
            x[:, j] = (values - n["mean"]) / n["std"]
        if bad and not self.spec.get("impute"):
            raise DataError(
                f"missing or infinite values in {bad}; the task was loaded without "
                "imputation (missing='impute'), so the model cannot fill them."
            )
        j = len(numeric)
        rows = np.arange(len(frame))
        for c in self.spec["categorical"]:
            column = frame[c["column"]].astype("string").fillna(MISSING_CATEGORY)
            codes = pd.Categorical(column, categories=c["categories"]).codes
            seen = codes >= 0  # a category training never saw: all zeros
            x[rows[seen], j + codes[seen]] = 1.0
            j += len(c["categories"])
        return x

    def _text(self, raw: Any) -> np.ndarray:
        if isinstance(raw, list | tuple) or (isinstance(raw, np.ndarray) and raw.ndim == 1):
            texts = [str(t) for t in raw]
        else:
            texts = [str(t) for t in self._frame(raw)[self.spec["column"]]]
        if self.spec.get("tokenizer"):
            return _pretrained_ids(self.spec["tokenizer"], texts, self.spec["max_len"])
        lowercase = self.spec.get("lowercase", True)
        tokens = [textlib.tokenize(t, lowercase=lowercase) for t in texts]
        return textlib.encode(tokens, self.spec["vocab"], max_len=self.spec["max_len"])


def _with_date_parts(frame, dates: list[dict[str, Any]]):
    """``frame`` with the numeric parts of its date columns added (``COLUMN.year``…); a value
    that is not a date gives missing parts (filled like any missing number)."""
    import pandas as pd

    parts = {}
    for d in dates:
        when = pd.to_datetime(
            frame[d["column"]].astype("string").str.strip(),
            errors="coerce",
            format="ISO8601",
            utc=True,
        )
        for part in d["parts"]:
            values = when.dt.day_of_week if part == "weekday" else getattr(when.dt, part)
            parts[f"{d['column']}.{part}"] = values.astype("float64")
    return frame.assign(**parts)


def _pretrained_ids(path: str, texts: list[str], max_len: int) -> np.ndarray:
    """Ids from a pretrained tokenizer (special tokens added, truncated, padded), with its
    padding id moved to 0 (tidian's convention; ``models.pretrained.tokenizer_vocab``)."""

    tokenizer = tokenizer_at(path)
    ids = tokenizer(
        texts, max_length=max_len, truncation=True, padding="max_length", return_tensors="np"
    )["input_ids"].astype(np.int64)
    pad = tokenizer.pad_token_id or 0
    if pad:
        ids = np.where(ids == pad, -1, ids)
        ids = np.where(ids == 0, pad, ids)
        ids[ids == -1] = 0
    return ids


def _numeric(raw: Any) -> np.ndarray:
    try:
        import pandas as pd

        if isinstance(raw, pd.DataFrame):
            raw = raw.to_numpy()
        x = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("the inputs must be numeric for this model.") from None
    if x.ndim < 2:
        raise bad_value("inputs", "an array with one row per sample", x.shape)
    if not np.isfinite(x).all():
        raise DataError("the inputs hold missing or infinite values.")
    return x
