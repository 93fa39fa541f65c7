import numpy as np
import pytest

import tidian
from tidian import ConfigError, DataError, Split, Task, UnknownNameError, load_task
from tidian.tasks.task import split_indices


@pytest.mark.parametrize(
    ("name", "kind", "shape", "classes"),
    [
        ("digits", "image", (1, 8, 8), 10),
        ("breast_cancer", "vector", (30,), 2),
        ("wine", "vector", (13,), 3),
        ("iris", "vector", (4,), 3),
        ("penguins", "vector", (10,), 3),
    ],
)
def test_builtin_tasks(name, kind, shape, classes):
    task = load_task(name)
    assert task.input_kind == kind and task.input_shape == shape
    assert task.n_classes == classes and task.metric == "accuracy"
    total = len(task.train) + len(task.val) + len(task.test)
    assert abs(len(task.test) / total - 0.2) < 0.02
    # stratified: every class is present in every split
    for split in (task.train, task.val, task.test):
        assert len(np.unique(split.y)) == classes
    if kind == "vector":  # numeric columns standardised with training statistics only
        numeric = [i for i, f in enumerate(task.feature_names) if "=" not in f]
        np.testing.assert_allclose(task.train.x[:, numeric].mean(0), 0, atol=1e-5)
        assert not np.allclose(task.test.x[:, numeric].mean(0), 0, atol=1e-5)


def test_mnist1d_is_generated_offline_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDIAN_CACHE_DIR", str(tmp_path))
    task = load_task("mnist1d")
    assert (len(task.train), len(task.val), len(task.test)) == (3600, 400, 1000)
    assert task.input_kind == "sequence" and task.input_shape == (40, 1)
    cached = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(cached) == 1
    again = load_task("mnist1d")
    np.testing.assert_array_equal(again.test.x, task.test.x)
    # different generation arguments → a different cache entry and different data
    small = load_task("mnist1d", num_samples=500, val_size=0.2)
    assert len(small.test) == 100 and len(list(tmp_path.glob("mnist1d-*.npz"))) == 2


def test_mnist1d_generation_keeps_global_random_state():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load_task("mnist1d", num_samples=200, val_size=0.2)
    assert np.random.rand() == expected


def test_mnist1d_rejects_unknown_generation_argument():
    with pytest.raises(ConfigError, match="num_samples"):
        load_task("mnist1d", num_sample=10)


def test_synthetic_classification_and_regression():
    cls = load_task("synthetic", n_samples=200, n_features=6, n_classes=3, n_informative=4)
    assert cls.n_classes == 3 and cls.input_shape == (6,)
    reg = load_task("synthetic", kind="regression", n_samples=150, noise=2.0)
    assert reg.target_kind == "values" and reg.metric == "rmse" and reg.n_outputs == 1
    assert reg.train.y.dtype == np.float32
    with pytest.raises(ConfigError, match="synthetic"):
        load_task("synthetic", bogus=1)


def test_unknown_task_name_and_bad_option():
    with pytest.raises(UnknownNameError, match=r"did you mean iris\?.*tidian tasks"):
        load_task("irs")
    with pytest.raises(ConfigError, match="'seed'"):
        load_task("iris", sed=1)


def test_a_task_written_as_a_recipe_writes_it():
    spec = {"name": "synthetic", "n_samples": 200, "n_features": 6}
    task = load_task(spec)
    assert task.input_shape == (6,) and len(task.train) + len(task.val) + len(task.test) == 200
    assert spec == {"name": "synthetic", "n_samples": 200, "n_features": 6}  # not consumed
    with pytest.raises(ConfigError, match="a mapping with a 'name' or 'path'"):
        load_task({"n_samples": 200})
    with pytest.raises(ConfigError, match="'seed'"):
        load_task({"name": "iris", "sed": 1})


def test_split_indices_are_disjoint_stratified_and_seeded():
    y = np.repeat(np.arange(4), 50)
    tr, va, te = split_indices(y, classes=True, val_size=0.2, test_size=0.2, seed=3)
    assert len(set(tr) | set(va) | set(te)) == 200
    assert len(tr) == 120 and len(va) == 40 and len(te) == 40
    assert all(np.bincount(y[te]) == 10)
    tr2, _, _ = split_indices(y, classes=True, val_size=0.2, test_size=0.2, seed=3)
    np.testing.assert_array_equal(tr, tr2)
    tr3, _, _ = split_indices(y, classes=True, val_size=0.2, test_size=0.2, seed=4)
    assert not np.array_equal(tr, tr3)
    with pytest.raises(ConfigError, match="val_size"):
        split_indices(y, classes=True, val_size=1.5)


def test_kfold_covers_train_and_val_once_and_keeps_test(vector_task):
    folds = list(vector_task.kfold(3, seed=0))
    assert len(folds) == 3
    held_out = np.concatenate([f.val.x for f in folds])
    pool = np.concatenate([vector_task.train.x, vector_task.val.x])
    assert len(held_out) == len(pool)
    assert {tuple(r) for r in held_out} == {tuple(r) for r in pool}
    for f in folds:
        assert f.test is vector_task.test
        assert len(f.train) + len(f.val) == len(pool)
    with pytest.raises(ConfigError):
        next(vector_task.kfold(1))


def _task(x, y, **kw):
    s = Split(x, y)
    return Task(
        "t", s, s, s, input_kind="vector", target_kind="classes", class_names=("a", "b"), **kw
    )


def test_task_validation_errors():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(DataError, match="single class"):
        _task(x, np.zeros(4, np.int64))
    with pytest.raises(DataError, match="same length"):
        _task(x, np.array([0, 1, 0], np.int64))
    bad = x.copy()
    bad[1, 1] = np.nan
    bad[2, 1] = np.inf
    with pytest.raises(DataError, match=r"'feature 1' \(1 NaN, 1 inf\)"):
        _task(bad, np.array([0, 1, 0, 1], np.int64))
    with pytest.raises(DataError, match="float32"):
        _task(x.astype(np.float64), np.array([0, 1, 0, 1], np.int64))


def test_task_summary_and_signature():
    task = load_task("iris")
    sig = task.signature()
    assert sig.to_dict() == {
        "input_kind": "vector",
        "input_shape": [4],
        "target_kind": "classes",
        "n_outputs": 3,
        "vocab_size": None,
    }
    # one type, read as attributes or as a mapping (a builder written either way works)
    assert sig.input_shape == sig["input_shape"] == (4,) and dict(sig)["n_outputs"] == 3
    with pytest.raises(KeyError, match="'shape': a model signature has input_kind, input_shape"):
        sig["shape"]
    assert task.summary()["train"] == len(task.train)
    assert "iris" in tidian.TASKS
