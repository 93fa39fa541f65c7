"""Tasks from files: CSV / TSV / Parquet / JSONL tables, text tables, NPZ, IDX and image folders.

``load_task(path, **options)`` picks the reader from the file (suffix, magic bytes, or folder
layout). Preprocessing statistics (means, medians, categories, vocabulary) come from the
training split only, so validation and test scores are not contaminated.
"""

from __future__ import annotations

import csv
import gzip
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidian.exceptions import ConfigError, DataError, bad_value
from tidian.models.pretrained import PACKAGED, resolve_pretrained, tokenizer_at, tokenizer_vocab
from tidian.registry import check_options
from tidian.tasks import text as textlib
from tidian.tasks.preprocess import Preprocess
from tidian.tasks.task import (
    INPUT_KINDS,
    Task,
    check_finite,
    encode_labels,
    from_indices,
    split_indices,
)

TABLE_SUFFIXES = {".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq", ".jsonl", ".ndjson", ".json"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MISSING_POLICIES = ("error", "drop", "impute")
_SPLIT_NAMES = {
    "train": 0,
    "training": 0,
    "val": 1,
    "valid": 1,
    "validation": 1,
    "dev": 1,
    "test": 2,
    "testing": 2,
}


def load_file(path: str | Path, **options: Any) -> Task:
    """Load a task from a file or folder; see the module docstring for the formats."""
    path = Path(path)
    return _checked(loader_for(path, options), path, options)


def loader_for(path: Path, options: dict[str, Any]):
    """The loader that reads ``path`` (from its suffix, first bytes or folder layout)."""
    if not path.exists():
        raise DataError(f"no such file or folder: {str(path)!r}.")
    if path.is_dir():
        return idx_folder_task if _mnist_files(path) else image_folder_task
    suffixes = [s.lower() for s in path.suffixes]
    suffix = suffixes[-1] if suffixes else ""
    if suffix == ".gz" and len(suffixes) > 1:
        suffix = suffixes[-2]
    if suffix == ".npz":
        return npz_task
    if _is_idx(path):
        return idx_task
    if suffix in TABLE_SUFFIXES:
        return text_task if "text" in options else table_task
    raise DataError(
        f"cannot tell the format of {str(path)!r}. tidian reads CSV/TSV/Parquet/JSONL tables "
        "(with target=...; add text=... for a text column), NPZ (x/y arrays), IDX files "
        "(MNIST format, plain or .gz) and folders of images with one subfolder per class."
    )


def _checked(loader, path: Path, options: dict[str, Any]) -> Task:
    check_options(
        f"loading {path.name!r} ({loader.__name__.replace('_task', '')})", loader, options
    )
    return loader(path, **options)


# -- tables -------------------------------------------------------------------------------------


def read_table(path: Path, *, sep: str | None = None, columns: Sequence[str] | None = None):
    """Read a table with pandas; every parse failure becomes a DataError naming the file."""
    import pandas as pd

    suffix = next((s for s in reversed([s.lower() for s in path.suffixes]) if s != ".gz"), "")
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            if columns is not None:
                raise ConfigError(
                    "columns= names the columns of a headerless text table; "
                    "a Parquet file has its own column names."
                )
        elif suffix in (".jsonl", ".ndjson", ".json"):
            frame = pd.read_json(path, lines=suffix != ".json")
        else:
            head = _head(path)
            _refuse_binary(path, head)
            tab = suffix in (".tsv", ".tab", ".txt")
            sep = sep if sep is not None else ("\t" if tab else _sniff_sep(head))
            header_kw: dict[str, Any] = {}
            if columns is not None:
                header_kw = {"header": None, "names": list(columns)}
            # TSV text is not quoted: a stray quote in a sentence must not swallow lines.
            quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
            frame = pd.read_csv(path, sep=sep, quoting=quoting, **header_kw)
    except (ConfigError, DataError):
        raise
    except Exception as err:  # pandas/pyarrow raise many types for one cause: a bad file
        raise DataError(
            f"cannot read {str(path)!r} as a table: {type(err).__name__}: {err}"
        ) from None
    if frame.empty:
        raise DataError(f"{str(path)!r} holds no rows.")
    frame.columns = [str(c) for c in frame.columns]
    commas = _read_decimal_commas(frame)
    # How the file was read, for the task's column summary (pandas keeps attrs on copies).
    frame.attrs["tidian"] = {"sep": sep, "decimal_comma": commas}
    return frame


HEAD_BYTES = 65536  # what is read of a text table to tell its encoding and its separator


def _head(path: Path) -> bytes:
    """The first bytes of a text table (decompressed for .gz; b"" when they cannot be read:
    pandas then says why)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(HEAD_BYTES)
    except (OSError, EOFError, zlib.error):
        return b""


def _refuse_binary(path: Path, head: bytes) -> None:
    """Say what a file named as a text table is when its first bytes show it is not text."""
    if head.startswith(b"\x1f\x8b"):
        raise DataError(
            f"{str(path)!r} is gzip-compressed; name it {path.name}.gz to read it as such."
        )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise DataError(
            f"{str(path)!r} is not a text table: it holds NUL bytes (binary data, or UTF-16/32 "
            "text: save it as UTF-8)."
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not merely a character cut at the 4096th byte
            line = head[: err.start].count(b"\n") + 1
            raise DataError(
                f"{str(path)!r} is not UTF-8 text (line {line}: byte "
                f"{head[err.start : err.start + 1]!r}); save it as UTF-8 (from Latin-1: "
                "iconv -f latin1 -t utf-8)."
            ) from None


_SEPARATORS = (",", ";", "\t", "|")
# A number written with a decimal comma, optionally with '.' between thousands: 3,5  -0,25
# 1.234,5  ,5  2,5e3 (a column pandas could not read as numbers because of them).
_DECIMAL_COMMA = r"[+-]?(?:(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d*)?|,\d+)(?:[eE][+-]?\d+)?"


def _sniff_sep(head: bytes) -> str:
    """The separator of a CSV file from its first bytes: of ``, ; TAB |``, the one that
    splits the first (whole) lines into the most fields, the same number on every line (``,``
    when none does better). A ``;``-separated file with decimal commas is so read as its
    columns, not as one column."""
    lines = head.decode("utf-8", errors="replace").splitlines(keepends=True)
    if len(head) == HEAD_BYTES:
        lines = lines[:-1]  # the last one may be cut
    lines = lines[:50]
    best, most = ",", 1
    for candidate in _SEPARATORS:
        try:
            counts = {len(row) for row in csv.reader(lines, delimiter=candidate) if row}
        except csv.Error:
            continue
        if len(counts) == 1 and (fields := counts.pop()) > most:
            best, most = candidate, fields
    return best


def _read_decimal_commas(frame) -> list[str]:
    """Turn text columns whose every value is a number written with a decimal comma into
    numbers (in place); their names."""
    import pandas as pd

    converted = []
    for column in frame.columns:
        values = _text_matching(frame[column], _DECIMAL_COMMA)
        if values is None or not values.str.contains(",", regex=False).any():
            continue
        plain = values.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
        frame[column] = pd.to_numeric(plain, errors="coerce").reindex(frame.index)
        converted.append(column)
    return converted


def _text_matching(column, pattern: str):
    """The stripped values of a text column when every one of them matches ``pattern`` (None
    otherwise, or for a column of numbers); a column most do not match is told from a sample."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return None
    values = column.dropna()
    if values.empty or not all(isinstance(v, str) for v in values.iloc[:100]):
        return None
    values = values.astype(str).str.strip()
    if not values.iloc[:1000].str.fullmatch(pattern).all():
        return None  # the common case, decided on a sample
    return values if values.str.fullmatch(pattern).all() else None


def _require_column(frame, column: Any, role: str, path_name: str) -> str:
    import difflib

    if column is None:
        raise ConfigError(
            f"loading {path_name!r}: name the {role} column with {role}=...; "
            f"columns are {list(frame.columns)}."
        )
    column = str(column)
    if column not in frame.columns:
        close = difflib.get_close_matches(column, list(frame.columns), n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise DataError(
            f"loading {path_name!r}: no {role} column {column!r}{hint}. "
            f"Columns are {list(frame.columns)}."
        )
    return column


def table_task(
    path: Path,
    *,
    target: str | None = None,
    missing: str = "error",
    categorical: Sequence[str] = (),
    drop: Sequence[str] = (),
    target_kind: str = "auto",
    split_column: str | None = None,
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
    sep: str | None = None,
    columns: Sequence[str] | None = None,
    targets: Sequence[str] = (),
) -> Task:
    """A tabular task from CSV / TSV / Parquet / JSONL: one target column, the rest features
    (``targets``: further target columns of a multi-task problem, not features)."""
    frame = read_table(path, sep=sep, columns=columns)
    options = {
        "targets": list(targets),
        "target": target,
        "missing": missing,
        "categorical": list(categorical),
        "drop": list(drop),
        "target_kind": target_kind,
        "split_column": split_column,
        "val_size": val_size,
        "test_size": test_size,
        "seed": seed,
    }
    source = {"path": str(path), **options, "sep": frame.attrs["tidian"]["sep"]}
    return tabular_task(path.stem, frame, source=source, **options)


def tabular_task(
    name: str,
    frame,
    *,
    target: str | None,
    missing: str = "error",
    categorical: Sequence[str] = (),
    drop: Sequence[str] = (),
    target_kind: str = "auto",
    split_column: str | None = None,
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
    source: dict[str, Any] | None = None,
    targets: Sequence[str] = (),
) -> Task:
    """A tabular task from a DataFrame: numeric columns standardised, categorical one-hot.
    ``targets`` names further target columns (multi-task): kept out of the features, encoded
    like the main target, stored per split in ``Split.aux``.

    ``missing``: ``'error'`` (default) names the columns holding NaN/inf with their counts;
    ``'drop'`` drops those rows; ``'impute'`` fills numeric gaps with the training median and
    gives categorical gaps their own category (rows with a missing target are dropped).
    """
    import pandas as pd

    if missing not in MISSING_POLICIES:
        raise bad_value("missing", f"one of {MISSING_POLICIES}", missing)
    target = _require_column(frame, target, "target", name)
    extra = [str(t) for t in targets]
    if target in extra or len(set(extra)) != len(extra):
        raise bad_value("targets", "further target columns, each once, not the main target", extra)
    for col in [*drop, *categorical, *extra, *([split_column] if split_column else [])]:
        _require_column(frame, col, "named", name)
    features = [
        c for c in frame.columns if c not in {target, split_column, *map(str, drop), *extra}
    ]
    if not features:
        raise DataError(f"loading {name!r}: no feature columns are left besides the target.")
    named = set(map(str, categorical))  # categories as the user said, never guessed at
    cat_cols = [
        c
        for c in features
        if c in named
        or not pd.api.types.is_numeric_dtype(frame[c])
        or pd.api.types.is_bool_dtype(frame[c])
    ]
    date_cols = {c: p for c in cat_cols if c not in named and (p := _date_parts(frame[c]))}
    cat_cols = [c for c in cat_cols if c not in date_cols]
    _refuse_free_text(frame, [c for c in cat_cols if c not in named], name)
    num_cols = [c for c in features if c not in cat_cols and c not in date_cols]

    frame = frame.copy(deep=False)  # columns are replaced, never written into
    for c in num_cols:
        values = frame[c].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            frame[c] = np.where(np.isfinite(values), values, np.nan)  # inf counts as missing
    bad_target = frame[[target, *extra]].isna().any(axis=1)
    if missing == "error":
        counts = {c: int(n) for c, n in frame[features].isna().sum().items() if n}
        if counts or bad_target.any():
            parts = [f"{c!r} ({n})" for c, n in counts.items()]
            for col in [target, *extra]:
                if frame[col].isna().any():
                    parts.append(f"target {col!r} ({int(frame[col].isna().sum())})")
            raise DataError(
                f"loading {name!r}: missing or infinite values in {', '.join(parts)}. "
                "Load with missing='drop' to drop those rows, or missing='impute' to fill them "
                "(training median / a 'missing' category)."
            )
    keep = ~bad_target
    if missing == "drop":
        keep &= ~frame[features].isna().any(axis=1)
    if not keep.all():
        frame = frame[keep.to_numpy()].reset_index(drop=True)
    if len(frame) == 0:
        raise DataError(f"loading {name!r}: no rows are left after dropping missing values.")
    copies = [c for c in features if frame[c].equals(frame[target])]
    if copies:  # the model would be given the answer (test accuracy 1.0, meaning nothing)
        raise DataError(
            f"loading {name!r}: the column(s) {copies} hold the target {target!r} itself; a "
            f"model given them learns nothing else. Leave them out with drop={copies}."
        )

    kind = _target_kind(frame[target], target_kind)
    y, class_names = _encode_target(frame[target], kind, name, target)
    aux, aux_targets = {}, {}
    for col in extra:
        aux_kind = _target_kind(frame[col], "auto")
        aux[col], names = _encode_target(frame[col], aux_kind, name, col)
        aux_targets[col] = {"kind": aux_kind, "class_names": list(names) if names else None}

    if split_column:
        parts = _given_splits(frame[split_column], name)
    else:
        parts = split_indices(
            y,
            classes=kind == "classes",
            val_size=val_size,
            test_size=test_size,
            seed=seed,
            class_names=class_names,
        )
    # Fitted on the training rows only; the same object turns raw rows into model inputs
    # at prediction time (``tidian predict``).
    pre = Preprocess.table(
        frame.iloc[parts[0]], num_cols, cat_cols, impute=missing == "impute", dates=date_cols
    )
    x = pre.apply(frame)
    names = pre.feature_names
    read = dict(frame.attrs.get("tidian") or {})
    columns_read = {
        target: f"target ({len(class_names)} classes)" if class_names else "target (values)",
        **{c: "further target" for c in extra},
        **({split_column: "split (train / val / test)"} if split_column else {}),
        **{str(c): "dropped (drop=)" for c in drop},
    }
    commas = set(read.get("decimal_comma") or ())
    for column in features:
        if column in date_cols:
            how = "date → " + ", ".join(date_cols[column])
        elif column in cat_cols:
            how = f"category ({len(pre.categories(column))} values)"
        else:
            how = "number" + (" (decimal comma)" if column in commas else "")
        columns_read[column] = how
    columns_read = {c: columns_read[c] for c in frame.columns if c in columns_read}
    return from_indices(
        name,
        x,
        y,
        parts,
        input_kind="vector",
        target_kind=kind,
        class_names=class_names,
        feature_names=tuple(names),
        source=source or {},
        preprocess=pre,
        aux=aux,
        aux_targets=aux_targets,
        columns_read=columns_read,
    )


_ISO_DATE = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
DATE_PARTS = ("year", "month", "day", "weekday")
TIME_PARTS = ("hour", "minute")


def _date_parts(column) -> tuple[str, ...]:
    """The parts a text column of ISO 8601 dates (``2020-01-31``, ``2020-01-31 12:30``) is
    read as; () for any other column."""
    import pandas as pd

    values = _text_matching(column, _ISO_DATE)
    if values is None:
        return ()
    if pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True).isna().any():
        return ()  # e.g. 2020-13-45: not a date after all
    timed = values.str.contains(r"\d[T ]\d", regex=True).any()
    return DATE_PARTS + (TIME_PARTS if timed else ())


def _refuse_free_text(frame, columns: Sequence[str], name: str) -> None:
    """Refuse text columns with so many different values that one-hot encoding them would
    make a feature of nearly every row (free text, identifiers, dates in another format)."""
    rows = len(frame)
    wide = {c: n for c in columns if (n := int(frame[c].nunique())) > max(20, rows // 2)}
    if not wide:
        return
    listed = ", ".join(f"{c!r} ({n:,} different values in {rows:,} rows)" for c, n in wide.items())
    first = next(iter(wide))
    raise DataError(
        f"loading {name!r}: the column(s) {listed} would each become about one one-hot feature "
        f"per row. Free text: load with text={first!r} (a text task on that column). An "
        f"identifier or a note: drop=[{first!r}]. Dates: write them as YYYY-MM-DD (read as "
        f"year, month, day, weekday). To one-hot encode it anyway: categorical=[{first!r}]."
    )


def _encode_target(column, kind: str, name: str, target: str):
    """(values, class names or None) of a target column of ``kind``."""
    if kind == "classes":
        return encode_labels(column.astype(str).to_numpy())
    try:
        return column.astype("float32").to_numpy(), None
    except (TypeError, ValueError):
        raise DataError(
            f"loading {name!r}: target {target!r} is not numeric; use "
            "target_kind='classes' for labels."
        ) from None


def _target_kind(column, requested: str) -> str:
    import pandas as pd

    if requested in ("classes", "values"):
        return requested
    if requested != "auto":
        raise bad_value("target_kind", "'auto', 'classes' or 'values'", requested)
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return "classes"
    values = column.to_numpy(dtype=np.float64)
    integral = np.all(np.mod(values, 1) == 0)
    # Integer targets with few distinct values are labels; anything else is a quantity.
    return "classes" if integral and len(np.unique(values)) <= 20 else "values"


def _given_splits(column, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = column.astype(str).str.strip().str.lower()
    unknown = sorted(set(labels) - set(_SPLIT_NAMES))
    if unknown:
        raise DataError(
            f"loading {name!r}: split column values must be train / val / test; "
            f"found {unknown[:5]}."
        )
    codes = labels.map(_SPLIT_NAMES).to_numpy()
    return tuple(np.flatnonzero(codes == k) for k in range(3))  # type: ignore[return-value]


# -- text ---------------------------------------------------------------------------------------


def text_task(
    path: Path,
    *,
    text: str | None = None,
    target: str | None = None,
    missing: str = "error",
    target_kind: str = "classes",
    split_column: str | None = None,
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
    max_len: int = 64,
    max_vocab: int = 20000,
    min_freq: int = 1,
    lowercase: bool = True,
    sep: str | None = None,
    columns: Sequence[str] | None = None,
    tokenizer: str | None = None,
) -> Task:
    """A text task: one text column, one label column. Tokens: words, with a vocabulary from
    the training split; or, with ``tokenizer=DIR``, the pretrained tokenizer saved in DIR (for
    pretrained backbones: ``hf_encoder``, the transfer stage)."""
    if missing not in ("error", "drop"):
        raise bad_value("missing", "'error' or 'drop' for a text task", missing)
    if not (isinstance(max_len, int) and max_len >= 1):
        raise bad_value("max_len", "a positive integer", max_len)
    frame = read_table(path, sep=sep, columns=columns)
    text = _require_column(frame, text, "text", path.name)
    target = _require_column(frame, target, "target", path.name)
    if text == target:
        raise DataError(
            f"loading {path.name!r}: the column {text!r} is both the text and the target; the "
            "model would be given the answer. Name the text column with text=... and the "
            "label column with target=..."
        )
    empty = frame[text].isna() | frame[target].isna()
    if empty.any():
        if missing == "error":
            raise DataError(
                f"loading {path.name!r}: {int(empty.sum())} rows have no text or no "
                "label. Load with missing='drop' to drop them."
            )
        frame = frame[~empty.to_numpy()].reset_index(drop=True)
    kind = _target_kind(frame[target], target_kind)
    if kind == "classes":
        y, class_names = encode_labels(frame[target].astype(str).to_numpy())
    else:
        y, class_names = frame[target].astype("float32").to_numpy(), None
    parts = (
        _given_splits(frame[split_column], path.name)
        if split_column
        else split_indices(
            y,
            classes=kind == "classes",
            val_size=val_size,
            test_size=test_size,
            seed=seed,
            class_names=class_names,
        )
    )
    if tokenizer is not None:
        vocab = tokenizer_vocab(tokenizer_at(tokenizer))
        # a packaged model's name stays portable; a directory is made absolute
        where = tokenizer if tokenizer in PACKAGED else str(resolve_pretrained(tokenizer).resolve())
        pre = Preprocess("text", {"column": text, "tokenizer": where, "max_len": max_len})
        x = pre.apply(frame[[text]])
    else:
        tokens = [textlib.tokenize(str(t), lowercase=lowercase) for t in frame[text]]
        vocab = textlib.build_vocab(
            (tokens[i] for i in parts[0]), max_vocab=max_vocab, min_freq=min_freq
        )
        pre = Preprocess(
            "text",
            {"column": text, "vocab": list(vocab), "max_len": max_len, "lowercase": lowercase},
        )
        x = textlib.encode(tokens, vocab, max_len=max_len)  # what pre.apply gives, tokens reused
    source = {
        "path": str(path),
        "text": text,
        "target": target,
        "max_len": max_len,
        "tokenizer": tokenizer,
        "max_vocab": max_vocab,
        "min_freq": min_freq,
        "val_size": val_size,
        "test_size": test_size,
        "seed": seed,
    }
    return from_indices(
        path.stem,
        x,
        y,
        parts,
        input_kind="text",
        target_kind=kind,
        class_names=class_names,
        vocab=vocab,
        source=source,
        preprocess=pre,
    )


# -- arrays -------------------------------------------------------------------------------------


def npz_task(
    path: Path,
    *,
    input_kind: str = "auto",
    target_kind: str = "auto",
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
    standardize: bool = False,
) -> Task:
    """Arrays ``x`` and ``y`` (split here), or ``x_train``/``y_train`` plus ``_val``/``_test``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:
        raise DataError(f"cannot read {str(path)!r} as NPZ: {type(err).__name__}: {err}") from None
    source = {
        "path": str(path),
        "input_kind": input_kind,
        "target_kind": target_kind,
        "val_size": val_size,
        "test_size": test_size,
        "seed": seed,
    }
    if "x_train" in arrays:
        given = []
        for part in ("train", "val", "test"):
            if f"x_{part}" in arrays:
                given.append((arrays[f"x_{part}"], _array(arrays, f"y_{part}", path)))
            else:
                given.append(None)
        if given[2] is None:
            raise DataError(
                f"{str(path)!r}: with x_train, also give x_test/y_test (and "
                "optionally x_val/y_val); or give plain x and y to split here."
            )
        shapes = {
            f"x_{part}": tuple(g[0].shape[1:])
            for part, g in zip(("train", "val", "test"), given)
            if g is not None
        }
        if len(set(shapes.values())) > 1:
            found = ", ".join(f"{k} {v}" for k, v in shapes.items())
            raise DataError(
                f"{str(path)!r}: the splits' samples differ in shape ({found}); every split "
                "must hold samples of one shape."
            )
        x = np.concatenate([g[0] for g in given if g is not None])
        y = np.concatenate([g[1] for g in given if g is not None])
        sizes = np.cumsum([0] + [len(g[1]) if g is not None else 0 for g in given])
        for g in given:
            if g is not None and len(g[0]) != len(g[1]):
                raise DataError(f"{str(path)!r}: x has {len(g[0])} rows but y has {len(g[1])}.")
        parts = tuple(np.arange(sizes[i], sizes[i + 1]) for i in range(3))
        if given[1] is None and val_size:  # carve validation out of the given training rows
            tr, va, _ = split_indices(
                y[parts[0]],
                classes=_is_classes(y, target_kind),
                val_size=val_size,
                test_size=0,
                seed=seed,
            )
            parts = (parts[0][tr], parts[0][va], parts[2])
    else:
        x, y = _array(arrays, "x", path), _array(arrays, "y", path)
        if len(x) != len(y):
            raise DataError(
                f"{str(path)!r}: x has {len(x)} rows but y has {len(y)}; "
                "they must have the same length."
            )
        parts = None
    return array_task(
        path.stem,
        x,
        y,
        parts=parts,
        input_kind=input_kind,
        target_kind=target_kind,
        val_size=val_size,
        test_size=test_size,
        seed=seed,
        standardize=standardize,
        source=source,
    )


def _array(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    if key not in arrays:
        raise DataError(
            f"{str(path)!r} has no array {key!r}; it holds {sorted(arrays)}. "
            "An NPZ task needs x and y (or x_train, y_train, x_test, y_test)."
        )
    if arrays[key].ndim == 0:
        raise DataError(
            f"{str(path)!r}: {key!r} is a single value; it must hold one row per sample."
        )
    return arrays[key]


def _is_classes(y: np.ndarray, target_kind: str) -> bool:
    import pandas as pd

    return _target_kind(pd.Series(y), target_kind) == "classes"


def array_task(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    parts=None,
    input_kind: str = "auto",
    target_kind: str = "auto",
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
    standardize: bool = False,
    class_names: Sequence[str] | None = None,
    source: dict[str, Any] | None = None,
    preprocess: Preprocess | None = None,
) -> Task:
    """A task from in-memory arrays (the path NPZ, IDX and image folders share).
    ``preprocess`` says how ``x`` was made from raw inputs (say, pixels divided by 255)."""
    if y.ndim != 1:
        raise DataError(
            f"{name!r}: y must be one-dimensional (one target per row); got shape {y.shape}."
        )
    kind = input_kind
    if kind == "auto":
        kind = {2: "vector", 3: "sequence", 4: "image"}.get(x.ndim, "")
        if not kind:
            raise DataError(
                f"{name!r}: cannot infer the input kind of x with shape {x.shape}; "
                f"pass input_kind= one of {INPUT_KINDS[:3]}."
            )
    elif kind not in INPUT_KINDS[:3]:
        raise bad_value("input_kind", f"'auto' or one of {INPUT_KINDS[:3]}", input_kind)
    if kind == "image" and x.ndim == 3:
        x = x[:, None]  # (n, H, W) grey images → one channel
    if kind == "sequence" and x.ndim == 2:
        x = x[:, :, None]
    if np.iscomplexobj(x):  # astype would drop the imaginary part without a word
        raise DataError(
            f"{name!r}: x holds complex numbers ({x.dtype}); give real features (e.g. the real "
            "and imaginary parts, or magnitude and phase, as separate columns or channels)."
        )
    try:
        x = x.astype(np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{name!r}: x must be numeric; got dtype {x.dtype}.") from None
    check_finite(x, where=name)
    if len(x) and x[0].size == 0:  # a model of no inputs would learn the class frequencies
        raise DataError(f"{name!r}: x has no features (samples of shape {x.shape[1:]}).")
    classes = _is_classes(y, target_kind)
    if classes:
        codes, names = encode_labels(y)
        if class_names is not None:  # labels are already codes into given names
            codes, names = y.astype(np.int64), tuple(class_names)
        y = codes
    else:
        y, names = y.astype(np.float32), None
    if parts is None:
        parts = split_indices(y, classes=classes, val_size=val_size, test_size=test_size, seed=seed)
    return from_indices(
        name,
        x,
        y,
        parts,
        scale=standardize and kind == "vector",
        input_kind=kind,
        target_kind="classes" if classes else "values",
        class_names=names,
        source=source or {},
        **({"preprocess": preprocess} if preprocess is not None else {}),
    )


# -- IDX (the MNIST file format) ----------------------------------------------------------------

# Written here because the format is 20 lines and no maintained package reads it without
# pulling a framework; the spec is the header "0 0 dtype ndim" then big-endian int32 dims.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _is_idx(path: Path) -> bool:
    try:
        with _open(path) as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in _IDX_DTYPES and 1 <= head[3] <= 4


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a NumPy array."""
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # a truncated or damaged gzip stream
        raise DataError(f"cannot read {str(path)!r} (truncated or damaged?): {err}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number).")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{str(path)!r} is truncated: its header is cut short.")
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    if min(dims, default=0) < 0:
        raise DataError(f"{str(path)!r} is corrupt: its header gives negative sizes {dims}.")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(body) != expected:
        raise DataError(
            f"{str(path)!r} is truncated or corrupt: the header promises "
            f"{expected} bytes of data, the file has {len(body)}."
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def idx_task(
    path: Path,
    *,
    labels: str | None = None,
    test_images: str | None = None,
    test_labels: str | None = None,
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
) -> Task:
    """Images (and labels=...) in IDX files; a given test pair is used as the test split."""
    if labels is None:
        raise ConfigError(
            f"loading {path.name!r}: an IDX image file needs its labels file: "
            "load_task(images, labels='...-labels-idx1-ubyte.gz')."
        )
    x, y = read_idx(path), read_idx(labels)
    if len(x) != len(y):
        raise DataError(
            f"{path.name!r} has {len(x)} images but {Path(labels).name!r} has "
            f"{len(y)} labels; they must have the same length."
        )
    parts = None
    if (test_images is None) != (test_labels is None):
        raise ConfigError("give both test_images= and test_labels=, or neither.")
    if test_images is not None:
        xt, yt = read_idx(test_images), read_idx(test_labels)
        if len(xt) != len(yt):
            raise DataError(f"the test IDX files hold {len(xt)} images and {len(yt)} labels.")
        tr, va, _ = split_indices(y, classes=True, val_size=val_size, test_size=0, seed=seed)
        parts = (tr, va, np.arange(len(x), len(x) + len(xt)))
        x, y = np.concatenate([x, xt]), np.concatenate([y, yt])
    pre = Preprocess("scale", {"shift": 0.0, "scale": 255.0 if x.dtype == np.uint8 else 1.0})
    x = pre.apply(x)
    source = {
        "path": str(path),
        "labels": labels,
        "test_images": test_images,
        "test_labels": test_labels,
        "val_size": val_size,
        "test_size": test_size,
        "seed": seed,
    }
    return array_task(
        path.name.split(".")[0],
        x,
        y.astype(np.int64),
        parts=parts,
        input_kind="image" if x.ndim >= 3 else "vector",
        target_kind="classes",
        val_size=val_size,
        test_size=test_size,
        seed=seed,
        source=source,
        preprocess=pre,
    )


def _mnist_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in (
        ("images", "train-images"),
        ("labels", "train-labels"),
        ("test_images", "t10k-images"),
        ("test_labels", "t10k-labels"),
    ):
        match = sorted(folder.glob(f"{stem}*idx*"))
        if not match:
            return None
        found[key] = match[0]
    return found


def idx_folder_task(path: Path, *, val_size: float = 0.1, seed: int = 0) -> Task:
    """A folder holding the four MNIST-style IDX files (train-/t10k- images and labels)."""
    files = _mnist_files(path)
    assert files is not None
    return idx_task(
        files["images"],
        labels=str(files["labels"]),
        test_images=str(files["test_images"]),
        test_labels=str(files["test_labels"]),
        val_size=val_size,
        seed=seed,
    )


# -- image folders ------------------------------------------------------------------------------


MAX_IMAGE_SIDE = 4096  # pixels per side of an image task's samples


def image_folder_task(
    path: Path,
    *,
    size: Sequence[int] | None = None,
    mode: str = "auto",
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
) -> Task:
    """One subfolder per class holding images; read with Pillow, scaled to [0, 1].

    ``size=(width, height)`` resizes every image; without it all images must share one size.
    ``mode``: ``'L'`` (grey), ``'RGB'``, or ``'auto'`` (grey when every image is grey).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in ("auto", "L", "RGB"):
        raise bad_value("mode", "'auto', 'L' or 'RGB'", mode)
    if size is not None and not (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        and all(1 <= v <= MAX_IMAGE_SIDE for v in size)
    ):
        raise bad_value("size", f"(width, height): two integers in 1..{MAX_IMAGE_SIDE}", size)
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [
        (f, label)
        for label, c in enumerate(classes)
        for f in sorted((path / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(
            f"{str(path)!r} holds no images in class subfolders; an image folder "
            f"task needs <folder>/<class>/<image> with suffixes {sorted(IMAGE_SUFFIXES)}."
        )
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read image {str(f)!r}: {err}") from None
        except Image.DecompressionBombError:  # a header claiming e.g. 40000 × 40000 pixels
            raise DataError(
                f"{str(f)!r} claims more pixels than Pillow reads safely "
                f"({Image.MAX_IMAGE_PIXELS:,}); shrink the image first."
            ) from None
    if mode == "auto":
        mode = "L" if all(im.mode in ("L", "1", "I;16") for im in images) else "RGB"
    target = tuple(size) if size is not None else images[0].size
    arrays = []
    for (f, _), im in zip(files, images):
        im = im.convert(mode)
        if im.size != target:
            if size is None:
                raise DataError(
                    f"images differ in size: {files[0][0].name!r} is "
                    f"{images[0].size}, {f.name!r} is {im.size}. "
                    "Pass size=(width, height) to resize them all."
                )
            im = im.resize(target, Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    x = np.stack(arrays)
    y = np.array([label for _, label in files], dtype=np.int64)
    source = {
        "path": str(path),
        "size": list(target),
        "mode": mode,
        "val_size": val_size,
        "test_size": test_size,
        "seed": seed,
    }
    return array_task(
        path.name,
        x,
        y,
        input_kind="image",
        target_kind="classes",
        val_size=val_size,
        test_size=test_size,
        seed=seed,
        class_names=classes,
        source=source,
        preprocess=Preprocess("scale", {"shift": 0.0, "scale": 255.0}),
    )
