import math

import numpy as np
import pytest
import torch

import tidian
from tidian import ConfigError, TrainConfig, create_model, fit
from tidian.training.optim import penalized


def _model(task, name="mlp", seed=0, **options):
    torch.manual_seed(seed)
    return create_model(name, task, **options)


def test_loss_falls_and_history_records_curves(vector_task):
    model = _model(vector_task, hidden=[16])
    history = fit(model, vector_task, {"epochs": 15, "lr": 0.01, "batch_size": 16})
    losses = history.curve("train_loss")
    assert len(losses) == 15 and losses[-1] < 0.5 * losses[0]
    assert len(history.curve("val_accuracy")) == 15 and len(history.curve("val_loss")) == 15
    assert history.best_epoch is not None and not history.stopped_early
    assert tidian.score(model, vector_task)["accuracy"] > 0.8


def test_early_stopping_restores_the_best_weights(vector_task):
    # A huge learning rate makes validation accuracy peak early and then fall apart.
    config = TrainConfig(
        epochs=40,
        lr=0.5,
        optimizer="sgd",
        momentum=0.0,
        patience=3,
        monitor="log_loss",
        batch_size=8,
    )
    model = _model(vector_task, hidden=[32])
    history = fit(model, vector_task, config)
    assert history.stopped_early
    assert len(history.epochs) == history.best_epoch + 3
    restored = tidian.score(model, vector_task, "val", ["log_loss"])["log_loss"]
    assert restored == pytest.approx(history.best_value, rel=1e-5)
    last = history.epochs[-1]["val_log_loss"]
    assert last > history.best_value


@pytest.mark.parametrize("optimizer", tidian.OPTIMIZERS.names())
def test_every_optimizer_trains(optimizer, vector_task):
    lr = {"sgd": 0.1, "nesterov": 0.1, "rmsprop": 0.003}.get(optimizer, 0.01)
    model = _model(vector_task, hidden=[16])
    history = fit(
        model,
        vector_task,
        {"optimizer": optimizer, "lr": lr, "epochs": 10, "weight_decay": 1e-4, "batch_size": 16},
    )
    assert history.curve("train_loss")[-1] < history.curve("train_loss")[0]


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle", "plateau"])
def test_every_schedule_runs_and_shapes_the_learning_rate(schedule, vector_task):
    config = TrainConfig(
        schedule=schedule,
        lr=0.01,
        epochs=8,
        step_size=2,
        gamma=0.5,
        plateau_patience=0,
        warmup_epochs=1,
        batch_size=16,
    )
    history = fit(_model(vector_task, hidden=[8]), vector_task, config)
    lrs = history.curve("lr")
    assert len(lrs) == 8 and all(lr > 0 for lr in lrs)
    if schedule == "step":
        assert lrs[-1] == pytest.approx(0.01 * 0.5**3, rel=1e-6)  # epochs 7-8: 3 halvings
    if schedule == "cosine":
        assert lrs[-1] < 0.01 * 0.1 and lrs[1] > lrs[-1]
    if schedule == "constant":
        assert lrs == [pytest.approx(0.01)] * 8


def test_warmup_ramps_linearly(vector_task):
    task = vector_task
    seen = []

    class Spy(tidian.PlainStep):
        def __call__(self, model, x, y, index):
            seen.append(self.optimizer.param_groups[0]["lr"])
            return super().__call__(model, x, y, index)

    model = _model(task, hidden=[8])
    step = Spy(torch.nn.functional.cross_entropy)
    config = TrainConfig(lr=0.1, epochs=2, warmup_epochs=1, batch_size=30)  # 90 rows: 3 steps
    original = tidian.training.loop.make_optimizer

    def capture(model, config):
        opt = original(model, config)
        step.optimizer = opt
        return opt

    tidian.training.loop.make_optimizer = capture
    try:
        fit(model, task, config, step=step)
    finally:
        tidian.training.loop.make_optimizer = original
    assert seen[:4] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1])


@pytest.mark.parametrize("loss", ["cross_entropy", "label_smoothing", "focal", "hinge"])
def test_every_classification_loss_trains(loss, vector_task):
    model = _model(vector_task, hidden=[16])
    history = fit(model, vector_task, {"loss": loss, "lr": 0.01, "epochs": 10, "batch_size": 16})
    assert history.curve("train_loss")[-1] < history.curve("train_loss")[0]
    assert tidian.score(model, vector_task)["accuracy"] > 0.6


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_every_regression_loss_trains(loss, regression_task):
    model = _model(regression_task, hidden=[16])
    before = tidian.score(model, regression_task)["rmse"]
    fit(model, regression_task, {"loss": loss, "lr": 0.01, "epochs": 30, "batch_size": 16})
    after = tidian.score(model, regression_task)
    assert after["rmse"] < 0.5 * before and after["r2"] > 0.5


def test_loss_must_fit_the_target_kind(vector_task, regression_task):
    with pytest.raises(ConfigError, match="loss 'mse' is for values.*cross_entropy"):
        fit(_model(vector_task), vector_task, {"loss": "mse"})
    with pytest.raises(ConfigError, match="loss 'focal' is for classes"):
        fit(_model(regression_task), regression_task, {"loss": "focal"})


def test_l1_penalty_shrinks_weights(vector_task):
    def weight_norm(l1):
        model = _model(vector_task, hidden=[32])
        fit(model, vector_task, {"epochs": 15, "lr": 0.01, "l1": l1, "batch_size": 16})
        return sum(float(p.detach().abs().sum()) for p in penalized(model))

    assert weight_norm(0.01) < 0.6 * weight_norm(0.0)


def test_weight_decay_spares_biases(vector_task):
    model = _model(vector_task, hidden=[8])
    names = {id(p) for p in penalized(model)}
    for name, p in model.named_parameters():
        assert (id(p) in names) == name.endswith("weight")


def test_gradient_clipping_bounds_the_update(vector_task):
    def first_update(clip):
        model = _model(vector_task, hidden=[8])
        before = [p.detach().clone() for p in model.parameters()]
        fit(
            model,
            vector_task,
            {
                "epochs": 1,
                "lr": 1.0,
                "optimizer": "sgd",
                "momentum": 0.0,
                "batch_size": 1000,
                "clip_grad_norm": clip,
                "device": "cpu",  # compared with the CPU copies taken before
            },
        )
        return math.sqrt(
            sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.parameters(), before))
        )

    assert first_update(0.01) == pytest.approx(0.01, rel=1e-3)  # lr 1 × clipped norm 0.01
    assert first_update(None) > 0.05


@pytest.mark.parametrize("init", ["xavier", "kaiming", "orthogonal"])
def test_initialisations_change_weights(init, vector_task):
    model = _model(vector_task, hidden=[8])
    default = [p.detach().clone() for p in model.parameters()]
    fit(model, vector_task, {"epochs": 1, "init": init, "lr": 1e-9, "device": "cpu"})
    weights = [p for p in model.parameters() if p.ndim == 2]
    assert not torch.allclose(weights[0], default[0])
    if init == "orthogonal":
        w = weights[0].detach()  # (8, 5): rows orthonormal up to the tiny update
        torch.testing.assert_close(w.T @ w, torch.eye(5), atol=1e-4, rtol=0)


def test_config_validation_messages():
    with pytest.raises(
        ConfigError, match=r"train.optimizer must be one of .*adam.*got 'adm'.*adam"
    ):
        TrainConfig(optimizer="adm")
    with pytest.raises(ConfigError, match="train.lr must be a number > 0"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="train.epochs must be an integer >= 1"):
        TrainConfig(epochs=2.5)
    with pytest.raises(ConfigError, match=r"unknown option 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="linear")
    assert TrainConfig.from_dict(TrainConfig(lr=0.3).to_dict()) == TrainConfig(lr=0.3)


def test_patience_without_validation_split_is_an_error(vector_task):
    empty = vector_task.replace(val=tidian.Split(vector_task.val.x[:0], vector_task.val.y[:0]))
    with pytest.raises(ConfigError, match="validation split"):
        fit(_model(empty), empty, {"patience": 2})
    history = fit(_model(empty), empty, {"epochs": 2})  # without patience it trains fine
    assert history.monitor is None and "val_loss" not in history.epochs[0]


def test_divergence_is_reported(regression_task):
    with pytest.raises(ConfigError, match="diverged"):
        fit(
            _model(regression_task),
            regression_task,
            {"optimizer": "sgd", "lr": 1e4, "epochs": 5, "batch_size": 8},
        )


def test_cuda_request_without_cuda_is_clear(vector_task):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        fit(_model(vector_task), vector_task, {"device": "cuda"})


def test_fit_is_deterministic_for_a_seed(vector_task):
    def run(seed):
        model = _model(vector_task, hidden=[8], dropout=0.2)
        fit(model, vector_task, {"epochs": 3, "batch_size": 8, "device": "cpu"}, seed=seed)
        return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


def test_a_seed_stream_redraws_a_seed_s_randomness_and_nothing_else():
    from tidian.tasks import load_task
    from tidian.training.build import SEED_STREAM_STEP, train_new

    task = load_task("iris")

    def weights(config, seed=0):
        model, _ = train_new({"name": "linear"}, task, {"epochs": 1, **config}, seed)
        return [p.detach() for p in model.parameters()]

    same, stream, moved = weights({}), weights({"seed_stream": 1}), weights({}, SEED_STREAM_STEP)
    assert not all(torch.equal(a, b) for a, b in zip(same, stream))  # another draw...
    assert all(torch.equal(a, b) for a, b in zip(stream, moved))  # ...from seed + k × step
    assert all(torch.equal(a, b) for a, b in zip(same, weights({"seed_stream": 0})))
    with pytest.raises(ConfigError, match="train.seed_stream"):
        TrainConfig.from_dict({"seed_stream": -1})
