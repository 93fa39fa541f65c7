"""Attributions: Integrated Gradients' completeness, exact values on a linear model, text on
token embeddings, the agreement check, and permutation importance on a constructed task."""

import numpy as np
import pytest
import torch
from torch import nn

import tidian
from tidian import ConfigError, Split, Task
from tidian.evaluation.attribution import agreement, attribute, permutation_importance


def test_integrated_gradients_on_a_linear_model_is_exact():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    result = attribute(model, x, n_steps=8)
    target = np.asarray(result["target"])
    assert (target == model(torch.from_numpy(x)).argmax(1).numpy()).all()
    w = model.weight.detach().numpy()
    # IG of a linear map against a zero baseline is x ⊙ w_target; saliency is |w_target|
    np.testing.assert_allclose(result["integrated_gradients"], x * w[target], atol=1e-5)
    np.testing.assert_allclose(result["saliency"], np.abs(w[target]), atol=1e-6)
    assert result["delta"].max() < 1e-4


def test_completeness_on_a_nonlinear_model(tiny_tasks):
    task = tiny_tasks["sequence"]
    torch.manual_seed(1)
    model = tidian.create_model("cnn1d", task, width=8)
    x = task.test.x[:4]
    result = attribute(model, x, n_steps=128, internal_batch_size=32)
    # attributions sum to F(x) - F(0) for the target class, within the Riemann error
    with torch.no_grad():
        fx = model(torch.from_numpy(x))
        f0 = model(torch.zeros_like(torch.from_numpy(x)))
    index = np.arange(len(x))
    change = (fx - f0).numpy()[index, result["target"]]
    sums = result["integrated_gradients"].reshape(len(x), -1).sum(1)
    np.testing.assert_allclose(sums, change, atol=0.02 * np.abs(change).max() + 1e-4)
    assert (result["relative_delta"] < 0.02).all()
    assert result["integrated_gradients"].shape == x.shape


def test_text_is_attributed_per_token(tiny_tasks):
    task = tiny_tasks["text"]
    torch.manual_seed(0)
    model = tidian.create_model("embedding_bag", task)
    x = task.test.x[:3]
    result = attribute(model, x, n_steps=64)
    assert result["integrated_gradients"].shape == x.shape  # one value per token
    assert result["saliency"].shape == x.shape
    assert (result["relative_delta"] < 0.05).all()


def test_a_model_without_embedding_cannot_take_tokens():
    class Sum(nn.Module):
        def forward(self, x):
            return x.float().sum(1, keepdim=True)

    with pytest.raises(ConfigError, match="no embedding layer"):
        attribute(Sum(), np.ones((2, 4), dtype=np.int64))


def test_agreement_is_one_for_identical_maps_and_low_for_reversed():
    a = np.arange(10, dtype=float).reshape(1, 10)
    same = agreement(a, a, top=3)
    assert same["mean_spearman"] == pytest.approx(1.0)
    assert same["mean_top_overlap"] == 1.0
    rev = agreement(a, a[:, ::-1].copy(), top=3)
    assert rev["mean_spearman"] == pytest.approx(-1.0)
    assert rev["mean_top_overlap"] == 0.0


def test_permutation_importance_finds_the_one_feature_that_matters():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = (x[:, 1] > 0).astype(np.int64)
    parts = [Split(x[i : i + 100], y[i : i + 100]) for i in (0, 100, 200)]
    task = Task(
        "one-feature",
        *parts,
        "vector",
        "classes",
        ("neg", "pos"),
        "accuracy",
        feature_names=("a", "b", "c"),
    )
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 1], model.weight[0, 1] = 5.0, -5.0
    rows = permutation_importance(model, task, repeats=5, seed=0)
    assert rows[0]["feature"] == "b" and rows[0]["drop"] > 0.3
    assert {r["feature"]: r["drop"] for r in rows[1:]} == {"a": 0.0, "c": 0.0}


def test_permutation_importance_is_for_tabular_tasks(tiny_tasks):
    task = tiny_tasks["sequence"]
    with pytest.raises(ConfigError, match="tabular"):
        permutation_importance(tidian.create_model("cnn1d", task), task)
