"""Shared fixtures: tiny in-memory tasks of every input kind, so tests run in seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import tidian
from tidian import ConfigError, Split, Task, load_model, save_model
from tidian.compression import prune_structured
from tidian.compression.surgery import remove_units
from tidian.compression.traced import find_groups
from tidian.export import export_onnx
from tidian.models.structure import get_module


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated data sets go to a temporary cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TIDIAN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("TIDIAN_ARTIFACT_CACHE", str(tmp_path_factory.mktemp("artifact-cache")))
    torch.set_num_threads(1)  # small models: threads only add noise and overhead
    yield
    mp.undo()


def iris_recipe(path, seeds: int = 2, **more) -> str:
    """Write a one-epoch linear-model recipe on iris (plus `more` keys) to `path`."""
    recipe = {
        "task": "iris",
        "model": {"name": "linear"},
        "train": {"epochs": 1},
        "evaluate": {"seeds": seeds},
        **more,
    }
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``tidian ARGV`` in this process: (exit status, stdout, stderr)."""
    from tidian.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (gone and zombies waiting to be reaped do not; /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _splits(x: np.ndarray, y: np.ndarray) -> tuple[Split, Split, Split]:
    n = len(y)
    a, b = int(n * 0.6), int(n * 0.8)
    return Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:])


def make_task(kind: str, n: int = 60, classes: int = 3, seed: int = 0) -> Task:
    """A learnable toy task: the class is encoded in the mean of the input's first feature."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    vocab = None
    if kind == "vector":
        x = rng.normal(size=(n, 5)).astype(np.float32)
        x[:, 0] += 3.0 * y
    elif kind == "sequence":
        x = rng.normal(size=(n, 12, 2)).astype(np.float32)
        x[:, :, 0] += 2.0 * y[:, None]
    elif kind == "image":
        x = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
        x[:, 0, :3] += 2.0 * y[:, None, None]
    elif kind == "text":
        vocab = ("<pad>", "<unk>", *(f"w{i}" for i in range(20)))
        x = rng.integers(2, len(vocab), size=(n, 10)).astype(np.int64)
        x[:, 0] = 2 + y  # the first token names the class
        x[::4, 7:] = 0  # some padding
    else:
        raise ValueError(kind)
    return Task(
        f"tiny-{kind}",
        *_splits(x, y.astype(np.int64)),
        input_kind=kind,
        target_kind="classes",
        class_names=tuple(f"c{i}" for i in range(classes)),
        vocab=vocab,
    )


def make_regression(n: int = 80, seed: int = 0) -> Task:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (100 + 30 * x[:, 0] - 10 * x[:, 1] + rng.normal(scale=1.0, size=n)).astype(np.float32)
    return Task("tiny-regression", *_splits(x, y), input_kind="vector", target_kind="values")


def table_case(case: str) -> Task:
    """A small table for a library-fitted family (svm, glm): ``values`` (regression, 120
    rows), ``binary`` (2 classes) or any other case (4 classes), 150 rows."""
    if case == "values":
        return make_regression(n=120)
    return make_task("vector", n=150, classes=2 if case == "binary" else 4, seed=3)


KINDS = ("vector", "sequence", "image", "text")


def _silence(model: nn.Module, group, units: torch.Tensor) -> None:
    """Zero what *reads* these units: they then contribute nothing, so removing them must
    leave the outputs exactly as they were."""
    with torch.no_grad():
        for member in group.members:
            if member.role == "in":
                tensor = getattr(get_module(model, member.module), member.tensor)
                tensor.index_fill_(member.axis, group.indices(member, units), 0.0)


def prune_silent_half(model: nn.Module, task, tmp_path) -> None:
    """Silence half of every unit group, remove those units: the outputs must not move, the
    model must shrink, and the smaller model must reload and export with the same outputs."""
    example = torch.as_tensor(task.train.x[:4])
    groups = find_groups(model, example)
    if not groups:  # no hidden units (a linear model): pruning says there is nothing to prune
        with pytest.raises(ConfigError, match="found no layer to prune"):
            prune_structured(model, 0.5)
        return
    for g in groups:
        _silence(model, g, torch.arange(0, g.size // 2))
    x = torch.as_tensor(task.test.x)
    with torch.no_grad():
        before = model(x)
    params = tidian.count_parameters(model)
    for g in find_groups(model, example):
        remove_units(model, g, torch.arange(g.size // 2, g.size))
    with torch.no_grad():
        after = model(x)
        assert tidian.count_parameters(model) < params
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
        # Saved and loaded: the smaller architecture comes back from the weights' shapes.
        loaded = load_model(save_model(model, tmp_path / "pruned"))
        torch.testing.assert_close(loaded(x), after, atol=1e-6, rtol=1e-6)
    check = export_onnx(model, task, tmp_path / "pruned.onnx")
    assert check.passed and check.max_abs_diff < 1e-4


# Options a zoo model needs to be built at all (the conformance suite passes them): the
# pretrained encoder needs a directory — a tiny random BERT over the tiny text vocabulary.
REQUIRED_OPTIONS: dict[str, dict] = {
    "ensemble": {"members": [{"name": "mlp", "hidden": [8]}, {"name": "linear"}]},
    "multitask": {
        "base": {"name": "mlp", "hidden": [8]},
        "aux": [{"name": "b", "kind": "values", "n_outputs": 1}],
    },
}


@pytest.fixture(autouse=True, scope="session")
def _tiny_pretrained(tmp_path_factory):
    from transformers import BertConfig, BertModel
    from transformers.utils import logging

    logging.disable_progress_bar()

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = make_task("text").vocab
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    REQUIRED_OPTIONS["hf_encoder"] = {"path": str(folder)}
    yield folder


@pytest.fixture(scope="session")
def tiny_tasks() -> dict[str, Task]:
    return {kind: make_task(kind) for kind in KINDS}


@pytest.fixture(scope="session")
def vector_task() -> Task:
    return make_task("vector", n=150)


@pytest.fixture(scope="session")
def regression_task() -> Task:
    return make_regression()


REPORT_RECIPE = {
    "task": {"name": "iris"},
    "model": {"name": "linear"},
    "train": {"epochs": 3, "lr": 0.01},
    "evaluate": {"seeds": 3},
    "stages": [
        {"train_variants": {"candidates": [{"epochs": 40}, {"lr": 0.0001}]}},
        {
            "architecture": {
                "candidates": [{"name": "mlp", "hidden": [16]}],
                "train": {"epochs": 40},
            }
        },
        {"tune": {"trials": 5, "space": {"lr": {"float": [0.001, 0.1], "log": True}}}},
        {"learning_curve": {"fractions": [0.25, 1.0], "seeds": 2}},
    ],
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished run with a tuning stage (for the report, serve and browser tests):
    ``(store, run_id)``."""
    import tidian.pipeline as pipeline
    from tidian.store import Store

    folder = tmp_path_factory.mktemp("tiny-run")
    store = Store(f"sqlite:///{folder / 'ledger.db'}")
    result = pipeline.run(REPORT_RECIPE, store=store)
    assert result.status == "finished"
    return store, result.run_id


# -- cluster tests: only inside a network namespace with loopback alone ---------------------


def private_network() -> bool:
    """Whether this process's network namespace has loopback as its only interface."""
    import socket

    return [name for _, name in socket.if_nameindex()] == ["lo"]


def pytest_collection_modifyitems(config, items):
    # Ray's servers listen on every interface: tests that start a cluster run only in a private
    # network namespace. Elsewhere they are left out here and run by
    # tests/executors/test_cluster_namespace.py, which starts such a namespace and runs them.
    inside = private_network()
    keep, left = [], []
    for item in items:
        cluster = item.get_closest_marker("cluster") is not None
        wrapper = item.get_closest_marker("cluster_wrapper") is not None
        (left if (cluster and not inside) or (wrapper and inside) else keep).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = keep


def cluster_unavailable(reason: str) -> None:
    """Skip a cluster test for ``reason``, or fail it where CI requires cluster tests."""
    import os

    if os.environ.get("TIDIAN_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"cluster tests are required here (TIDIAN_REQUIRE_CLUSTER=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster of two nodes with one CPU each (``ray.cluster_utils.Cluster``), for
    tests marked ``cluster``: ``.address``, ``.cluster``, ``.second`` (the second node)."""
    import os
    from pathlib import Path
    from types import SimpleNamespace

    if not private_network():
        cluster_unavailable("a Ray cluster is started only in a private network namespace")
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        cluster_unavailable("Ray is not installed (pip install 'tidian[ray]')")
    # workers find the tests' own job handlers and plugins as a user's would: on their path
    here = Path(__file__).parent
    paths = [str(here / "executors"), str(here / "stages"), str(here)]
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    state = SimpleNamespace(cluster=cluster, address=cluster.address, second=second)
    yield state
    import ray

    ray.shutdown()
    cluster.shutdown()


def average_of_a_network_and(trained: nn.Module, task: Task, tmp_path) -> set[tuple[str, str]]:
    """An average ensemble of a small trained MLP and ``trained`` (a model its library
    trained, kept under its own spec): it must export with the output check passed and reload
    with equal outputs. Returns the graph's (domain, operator) pairs."""
    import onnx

    from tidian.models.ensemble import ensemble_of
    from tidian.training.build import train_new

    net = train_new({"name": "mlp", "hidden": [8]}, task, {"epochs": 3}, 0)[0]
    spec = tidian.model_spec(trained)
    model = ensemble_of(
        [net, trained],
        [{"name": "mlp", "hidden": [8]}, {"name": spec.name, **spec.options}],
        "average",
        task,
    )
    assert export_onnx(model, task, tmp_path / "e.onnx").passed
    restored = load_model(save_model(model, tmp_path / "saved"))
    np.testing.assert_array_equal(
        tidian.predict(restored, task.test.x), tidian.predict(model, task.test.x)
    )
    return {(n.domain, n.op_type) for n in onnx.load(str(tmp_path / "e.onnx")).graph.node}
