"""Augmentation: every operation keeps shapes and label semantics, is reproducible by seed,
is checked against the input kind, and runs per batch inside training."""

import numpy as np
import pytest
import torch

import tidian
from tidian import ConfigError
from tidian.stages.augment import Augment, AugmentConfig
from tidian.training.augment import OPERATIONS, Augmenter, check_policy

POLICIES = {
    "vector": {"noise": 0.1, "mixup": 0.4, "smote": 1.0},
    "sequence": {"shift": 3, "scale": 0.1, "noise": 0.05, "time_mask": 4, "mixup": 0.2},
    "image": {
        "flip": 0.5,
        "shift": 1,
        "rotate": 10,
        "crop": 0.8,
        "cutout": 2,
        "noise": 0.05,
        "cutmix": 1.0,
    },
    "text": {"token_dropout": 0.2, "span_mask": 3},
}


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_each_policy_keeps_shapes_and_is_reproducible(tiny_tasks, kind):
    task = tiny_tasks[kind]
    x, y = torch.as_tensor(task.train.x[:16]), torch.as_tensor(task.train.y[:16])
    a = Augmenter(POLICIES[kind], task, seed=3)(x, y)
    b = Augmenter(POLICIES[kind], task, seed=3)(x, y)
    c = Augmenter(POLICIES[kind], task, seed=4)(x, y)
    assert a[0].shape == x.shape and a[0].dtype == x.dtype
    assert torch.equal(a[0], b[0])  # same seed, same batch
    assert not torch.equal(a[0], c[0])  # another seed, another batch
    assert torch.equal(a[1], y)  # the batch's own labels are kept, in order
    if a[2] is not None:  # mixed: the partner labels are a permutation, weight in (0, 1]
        assert sorted(a[2].tolist()) == sorted(y.tolist()) and 0 < a[3] <= 1


def test_shift_rolls_each_sequence_and_keeps_its_values(tiny_tasks):
    task = tiny_tasks["sequence"]
    x = torch.as_tensor(task.train.x[:8])
    out, *_ = Augmenter({"shift": 2}, task, seed=0)(x, torch.as_tensor(task.train.y[:8]))
    for row, moved in zip(x, out):
        assert any(torch.equal(torch.roll(row, k, dims=0), moved) for k in range(-2, 3))


def test_text_operations_only_blank_tokens(tiny_tasks):
    task = tiny_tasks["text"]
    x = torch.as_tensor(task.train.x[:16])
    out, *_ = Augmenter({"token_dropout": 0.5, "span_mask": 3}, task, seed=0)(
        x, torch.as_tensor(task.train.y[:16])
    )
    changed = out != x
    assert changed.any() and (out[changed] == 0).all()


def test_smote_moves_only_minority_rows_between_rows_of_their_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = np.array([0] * 30 + [1] * 10)
    parts = [tidian.Split(x, y)] * 3
    task = tidian.Task("imbalanced", *parts, "vector", "classes", ("a", "b"), "accuracy")
    out, *_ = Augmenter({"smote": 1.0}, task, seed=0)(torch.from_numpy(x), torch.from_numpy(y))
    out = out.numpy()
    assert np.array_equal(out[:30], x[:30])  # the majority class is untouched
    assert not np.array_equal(out[30:], x[30:])
    lo, hi = x[30:].min(0), x[30:].max(0)  # inside the minority class's bounding box
    assert (out[30:] >= lo - 1e-6).all() and (out[30:] <= hi + 1e-6).all()


def test_cutmix_weight_is_the_kept_area(tiny_tasks):
    task = tiny_tasks["image"]
    x, y = torch.as_tensor(task.train.x[:8]), torch.as_tensor(task.train.y[:8])
    out, _, _, lam = Augmenter({"cutmix": 1.0}, task, seed=1)(x, y)
    changed = (out != x).any(1).float().mean().item()  # share of pixels replaced (≤ box)
    assert 0 <= changed <= 1 - lam + 1e-6


def test_policies_are_checked_against_the_input_kind():
    with pytest.raises(ConfigError, match="flip: not for text inputs"):
        check_policy({"flip": 0.5}, "text", "classes")
    with pytest.raises(ConfigError, match="mixup: mixes labels"):
        check_policy({"mixup": 0.2}, "vector", "values")
    with pytest.raises(ConfigError, match="unknown"):
        check_policy({"blur": 1}, "image", "classes")
    with pytest.raises(ConfigError, match="probability"):
        check_policy({"flip": 2}, "image", "classes")
    for kind, ops in OPERATIONS.items():  # the tests above exercise every operation
        tested = set(POLICIES[kind]) | ({"mixup"} if kind in ("image", "vector") else set())
        assert tested == set(ops)


def test_training_applies_the_policy_per_batch(vector_task, monkeypatch):
    calls = []
    real = Augmenter.__call__

    def spy(self, x, y):
        calls.append(len(x))
        return real(self, x, y)

    monkeypatch.setattr(Augmenter, "__call__", spy)
    config = {"epochs": 2, "batch_size": 32, "augment": {"noise": 0.1}}
    torch.manual_seed(0)
    model = tidian.create_model("mlp", vector_task)
    tidian.fit(model, vector_task, config, seed=0)
    batches = -(-len(vector_task.train) // 32)
    assert len(calls) == 2 * batches and max(calls) <= 32
    a = tidian.evaluate("mlp", vector_task, config, seeds=[0]).scores()
    b = tidian.evaluate("mlp", vector_task, config, seeds=[0]).scores()
    assert a == b  # reproducible by seed


def test_augment_stage_proposes_the_incumbent_with_the_policy(vector_task):
    from tidian.stages import Context, Proposal

    stage = Augment(AugmentConfig(policy=[{"noise": 0.1}, {"mixup": 0.2}]))
    inc = Proposal("baseline", {"name": "mlp"}, {"epochs": 3})
    out = stage.run(inc, Context(vector_task, "accuracy", (0, 1)))
    assert [p.train["augment"] for p in out] == [{"noise": 0.1}, {"mixup": 0.2}]
    assert all(p.model == {"name": "mlp"} and p.train["epochs"] == 3 for p in out)
    with pytest.raises(ConfigError, match="policy\\[0\\].shift"):
        Augment(AugmentConfig(policy=[{"shift": 2}])).check(vector_task)


def test_mixup_with_distillation_is_refused(vector_task):
    from tidian.training.augment import AugmentStep

    step = AugmentStep(lambda model, x, y, index: None, Augmenter({"mixup": 0.4}, vector_task, 0))
    model = tidian.create_model("linear", vector_task)
    with pytest.raises(ConfigError, match="does not support"):
        step(
            model,
            torch.as_tensor(vector_task.train.x[:8]),
            torch.as_tensor(vector_task.train.y[:8]),
            None,
        )
