"""One model trained by several processes (``train.distributed``): N processes with batch B
train the same weights as one process with batch N·B, decide early stopping alike, and a
rank's own error reaches the caller as it is."""

from __future__ import annotations

import pytest
import torch

import tidian.pipeline as pipeline
from conftest import make_task
from tidian.exceptions import ConfigError
from tidian.executors import Job, LocalExecutor
from tidian.store import Store
from tidian.training.config import TrainConfig

MODEL = {"name": "mlp", "hidden": [16]}  # no dropout, no batch norm: nothing rank-dependent


def _job(task, batch: int, workers: int, **train) -> Job:
    config = TrainConfig(
        **{
            "epochs": 5,
            "batch_size": batch,
            "lr": 0.01,
            "distributed": {"workers": workers} if workers > 1 else None,
            **train,
        }
    )
    spec = {"model": MODEL, "train": config.to_dict(), "metrics": ["accuracy"], "keep_state": True}
    return Job("train", spec, task, 7, processes=config.processes)


@pytest.fixture(scope="module")
def task():
    return make_task("vector", n=200)


def test_two_processes_with_half_batches_train_the_weights_of_one(task):
    with LocalExecutor(1) as executor:
        one, two = executor.gather([_job(task, 32, 1), _job(task, 16, 2)])
    assert two.worker["world"] == 2 and one.worker.get("world") is None
    for name, tensor in one.state.items():
        torch.testing.assert_close(two.state[name], tensor, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.tensor(two.history.curve("train_loss")),
        torch.tensor(one.history.curve("train_loss")),
        atol=1e-5,
        rtol=1e-5,
    )
    assert two.scores == one.scores  # the same predictions on validation and test


def test_early_stopping_is_decided_alike_by_every_rank(task):
    with LocalExecutor(1) as executor:
        one, two = executor.gather(
            [_job(task, 32, 1, patience=1, epochs=40), _job(task, 16, 2, patience=1, epochs=40)]
        )
    assert two.history.best_epoch == one.history.best_epoch
    assert len(two.history.epochs) == len(one.history.epochs) < 40


def test_a_rank_error_is_raised_as_the_job_error(task):
    bad = _job(task, 16, 2)
    bad = Job(
        bad.handler, {**bad.config, "model": {"name": "mlp", "hidden": [0]}}, task, 7, processes=2
    )
    with LocalExecutor(1) as executor, pytest.raises(ConfigError, match="hidden"):
        executor.gather([bad])


@pytest.mark.slow  # a whole pipeline run, its seeds each trained by two processes
def test_a_recipe_trains_its_models_with_two_processes(tmp_path):
    base = {
        "task": "iris",
        "model": MODEL,
        "evaluate": {"seeds": 2},
        "deploy": {"runtime": "torch"},
    }
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    ddp = pipeline.run(
        {**base, "train": {"epochs": 4, "batch_size": 8, "distributed": {"workers": 2}}},
        store=store,
    )
    single = pipeline.run({**base, "train": {"epochs": 4, "batch_size": 16}}, store=store)
    (a,), (b,) = ddp.candidates, single.candidates
    assert a["quality"]["per_seed"] == pytest.approx(b["quality"]["per_seed"])
    for result in store.seed_results(a["id"]).values():
        assert result["history"]["worker"]["world"] == 2
