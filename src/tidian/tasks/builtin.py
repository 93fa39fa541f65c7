"""Built-in tasks: generated or shipped inside installed packages, so they work offline.

Each is registered by name in ``TASKS``; ``tidian tasks`` lists them. Options are keyword-only
and validated: an unknown option is an error naming the accepted ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from tidian.exceptions import ConfigError, bad_value
from tidian.registry import Registry
from tidian.tasks.loaders import tabular_task
from tidian.tasks.preprocess import Preprocess
from tidian.tasks.task import Split, Task, encode_labels, from_indices, split_indices

TASKS: Registry[Any] = Registry("task", listing="tidian tasks")

_MNIST1D_SOURCE = "mnist1d"


def cache_dir() -> Path:
    """Where generated data sets are cached: $TIDIAN_CACHE_DIR, else the user cache directory."""
    env = os.environ.get("TIDIAN_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("tidian"))


@TASKS.register("mnist1d", input_kind="sequence", target_kind="classes")
def mnist1d(*, val_size: float = 0.1, seed: int = 0, **generation: Any) -> Task:
    """MNIST-1D: 10 classes of 1-D signals of length 40, 4000 train / 1000 test (generated).

    ``generation`` overrides the arguments of ``mnist1d.data.get_dataset_args()`` (for example
    ``num_samples`` or ``shuffle_seq``); the arrays are cached per set of arguments. The
    validation split is ``val_size`` of the training rows, stratified, chosen by ``seed``.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # the generator never downloads; the key is not a generation argument
    unknown = sorted(set(generation) - set(args))
    if unknown:
        raise ConfigError(
            f"task 'mnist1d' does not take the option(s) {unknown}. It takes val_size, seed and "
            f"the generation arguments {sorted(args)}."
        )
    args.update(generation)
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    else:
        # make_dataset seeds Python's and NumPy's global generators; keep the caller's state.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            from mnist1d.utils import ObjectView

            data = make_dataset(ObjectView(dict(args)))
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        arrays = {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
    x = arrays["x"].astype(np.float32)[:, :, None]
    x_test = arrays["x_test"].astype(np.float32)[:, :, None]
    y, y_test = arrays["y"].astype(np.int64), arrays["y_test"].astype(np.int64)
    train, val, _ = split_indices(y, classes=True, val_size=val_size, test_size=0, seed=seed)
    return Task(
        "mnist1d",
        Split(x[train], y[train]),
        Split(x[val], y[val]),
        Split(x_test, y_test),
        input_kind="sequence",
        target_kind="classes",
        class_names=tuple(str(i) for i in range(10)),
        source={"task": "mnist1d", "val_size": val_size, "seed": seed, **generation},
    )


def _register_sklearn(name: str, loader: str, kind: str, description: str) -> None:
    """Register one of scikit-learn's bundled data sets as a task with seeded splits."""

    def build(*, val_size: float = 0.2, test_size: float = 0.2, seed: int = 0) -> Task:
        from sklearn import datasets

        bunch = getattr(datasets, loader)()
        x = np.asarray(bunch.data, dtype=np.float32)
        pre = None
        if kind == "image":  # digits: 8x8 grey levels 0..16
            pre = Preprocess("scale", {"shift": 0.0, "scale": 16.0})
            x = pre.apply(x.reshape(len(x), 1, 8, 8))
        y, _ = encode_labels(bunch.target)
        parts = split_indices(y, classes=True, val_size=val_size, test_size=test_size, seed=seed)
        return from_indices(
            name,
            x,
            y,
            parts,
            scale=kind == "vector",
            **({"preprocess": pre} if pre else {}),
            input_kind=kind,
            target_kind="classes",
            class_names=tuple(str(c) for c in bunch.target_names),
            feature_names=tuple(bunch.feature_names) if kind == "vector" else None,
            source={"task": name, "val_size": val_size, "test_size": test_size, "seed": seed},
        )

    build.__name__ = name
    TASKS.add(name, build, description=description, input_kind=kind, target_kind="classes")


_register_sklearn(
    "digits",
    "load_digits",
    "image",
    "scikit-learn's handwritten digits: 1797 images of 8x8 pixels, 10 classes.",
)
_register_sklearn(
    "breast_cancer",
    "load_breast_cancer",
    "vector",
    "Wisconsin breast cancer: 569 samples, 30 features, 2 classes (standardised).",
)
_register_sklearn(
    "wine",
    "load_wine",
    "vector",
    "Wine recognition: 178 samples, 13 features, 3 classes (standardised).",
)
_register_sklearn(
    "iris", "load_iris", "vector", "Iris: 150 samples, 4 features, 3 classes (standardised)."
)


@TASKS.register("penguins", input_kind="vector", target_kind="classes")
def penguins(
    *,
    target: str = "species",
    missing: str = "drop",
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
) -> Task:
    """Palmer penguins: 344 penguins, species from measurements, island and sex (one-hot)."""
    import palmerpenguins

    frame = palmerpenguins.load_penguins()
    return tabular_task(
        "penguins",
        frame,
        target=target,
        missing=missing,
        val_size=val_size,
        test_size=test_size,
        seed=seed,
        source={
            "task": "penguins",
            "target": target,
            "missing": missing,
            "val_size": val_size,
            "test_size": test_size,
            "seed": seed,
        },
    )


@TASKS.register("synthetic", input_kind="vector", target_kind="classes or values")
def synthetic(
    *,
    kind: str = "classification",
    n_samples: int = 1000,
    n_features: int = 20,
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
    **generator: Any,
) -> Task:
    """Generated tabular data (scikit-learn make_classification / make_regression).

    Extra options go to the generator (``n_informative``, ``n_classes``, ``noise``…).
    Regression targets are scaled to unit variance so losses are comparable across settings.
    """
    from sklearn import datasets

    makers = {
        "classification": datasets.make_classification,
        "regression": datasets.make_regression,
    }
    if kind not in makers:
        raise bad_value("synthetic: kind", "'classification' or 'regression'", kind)
    try:
        x, y = makers[kind](
            n_samples=n_samples, n_features=n_features, random_state=seed, **generator
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"synthetic {kind} task: {err}") from None
    classes = kind == "classification"
    opts = {
        "kind": kind,
        "n_samples": n_samples,
        "n_features": n_features,
        "val_size": val_size,
        "test_size": test_size,
        "seed": seed,
        **generator,
    }
    if classes:
        y, class_names = encode_labels(y)
    else:
        y, class_names = (y / (y.std() or 1.0)).astype(np.float32), None
    parts = split_indices(y, classes=classes, val_size=val_size, test_size=test_size, seed=seed)
    return from_indices(
        "synthetic",
        x.astype(np.float32),
        y,
        parts,
        scale=True,
        input_kind="vector",
        target_kind="classes" if classes else "values",
        class_names=class_names,
        feature_names=tuple(f"x{i}" for i in range(n_features)),
        source={"task": "synthetic", **opts},
    )
