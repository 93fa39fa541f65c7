"""The glm family (models/mlp.py): a linear network whose weights scikit-learn solves —
logistic regression for classes, ridge regression for values — giving scikit-learn's own
decisions, trained by no loop, and afterwards a plain ``linear`` network every stage can take."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

import tidian
from conftest import table_case
from tidian import ConfigError, load_model, save_model
from tidian.export import export_onnx
from tidian.tasks import Split
from tidian.training.build import train_new


def _library(task, case, C=1.0):
    """scikit-learn's outputs for the same rows, in tidian's output layout."""
    x, test = task.train.x.astype(np.float64), task.test.x.astype(np.float64)
    if case == "values":
        fitted = Ridge(alpha=1.0 / C).fit(x, task.train.y.astype(np.float64))
        return fitted.predict(test)[:, None]
    fitted = LogisticRegression(C=C, max_iter=1000).fit(x, task.train.y)
    out = fitted.decision_function(test)
    return np.stack([np.zeros_like(out), out], 1) if case == "binary" else out


@pytest.mark.parametrize("case", ["classes", "binary", "values"])
def test_glm_gives_scikit_learn_s_solution_as_a_linear_network(case, tmp_path):
    task = table_case(case)
    model, history = train_new({"name": "glm"}, task, {}, 0)
    spec = tidian.model_spec(model)
    assert spec.name == "linear" and not hasattr(model, "fit_with")
    assert all(p.requires_grad for p in model.parameters())  # a network stages can fine-tune
    assert history.library["converged"] is True and history.monitor is None
    out = tidian.predict(model, task.test.x)
    np.testing.assert_allclose(out, _library(task, case), rtol=1e-4, atol=1e-4)
    # deterministic: another seed, the same solution
    again = train_new({"name": "glm"}, task, {}, 7)[0]
    np.testing.assert_array_equal(tidian.predict(again, task.test.x), out)
    check = export_onnx(model, task, tmp_path / "m.onnx")
    assert check.passed and check.max_abs_diff < 1e-5
    folder = save_model(model, tmp_path / "saved")
    np.testing.assert_array_equal(tidian.predict(load_model(folder), task.test.x), out)


def test_glm_solves_further_than_the_loop_s_linear_model():
    """The same model class: scikit-learn's optimum has a lower penalised training loss than
    a short Adam run of the loop's linear model (what the suggested recipe used to train)."""
    task = table_case("classes")
    solved = train_new({"name": "glm", "C": 1.0}, task, {}, 0)[0]
    looped = train_new({"name": "linear"}, task, {"epochs": 5, "lr": 0.01}, 0)[0]

    def objective(model):  # LogisticRegression's: C × summed log-loss + ½‖w‖²
        logits = tidian.predict(model, task.train.x).astype(np.float64)
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        w = model.head.linear.weight.detach().double().numpy()
        w = w - w.mean(0)  # softmax is unchanged by a shift shared by the classes
        return -logp[np.arange(len(logp)), task.train.y].sum() + 0.5 * (w**2).sum()

    assert objective(solved) < objective(looped)


def test_the_options_reach_scikit_learn():
    task = table_case("classes")
    strong = train_new({"name": "glm", "C": 0.01}, task, {}, 0)[0]
    weak = train_new({"name": "glm", "C": 100.0}, task, {}, 0)[0]
    norm = lambda m: float(m.head.linear.weight.detach().abs().sum())  # noqa: E731
    assert norm(strong) < 0.2 * norm(weak)  # a stronger penalty: smaller weights
    np.testing.assert_allclose(
        tidian.predict(strong, task.test.x), _library(task, "classes", C=0.01), atol=1e-4
    )
    balanced = train_new({"name": "glm", "class_weight": "balanced"}, task, {}, 0)[0]
    assert not np.allclose(tidian.predict(balanced, task.test.x), _library(task, "classes"))
    values = table_case("values")
    ridge = train_new({"name": "glm", "C": 0.05}, values, {}, 0)[0]
    np.testing.assert_allclose(
        tidian.predict(ridge, values.test.x), _library(values, "values", C=0.05), rtol=1e-4
    )
    # a solver stopped early is recorded as such, and still used
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the library's convergence warning does not escape
        _, history = train_new({"name": "glm", "max_iter": 1}, task, {}, 0)
    assert history.library["converged"] is False and history.library["iterations"] == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"C": 0}, "glm C"),
        ({"C": "big"}, "option 'C' is a finite number"),
        ({"max_iter": 0}, "glm max_iter"),
        ({"class_weight": "heavy"}, "glm class_weight must be 'balanced' or null"),
        ({"params": {"alpha": 2.0}}, "other than the named options"),
    ],
)
def test_bad_options_are_refused_before_anything_trains(options, message):
    with pytest.raises(ConfigError, match=message):
        tidian.create_model("glm", table_case("classes"), **options)


def test_rows_it_cannot_take_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="this task predicts values"):
        tidian.create_model("glm", table_case("values"), class_weight="balanced")
    task = table_case("classes")
    keep = task.train.y != 3  # a class the training rows never show
    partial = task.replace(train=Split(task.train.x[keep], task.train.y[keep]))
    with pytest.raises(ConfigError, match="every class must occur in the training split"):
        train_new({"name": "glm"}, partial, {}, 0)


def test_refit_and_seed_ensembles_solve_a_glm_again_rather_than_train_its_network():
    """A glm incumbent's saved model is a trainable linear network; stages that train it anew
    must solve it with scikit-learn again (the family), not run the loop on that network."""
    from tidian.stages.ensemble import _trained_members
    from tidian.stages.refit import refit_step

    task = table_case("classes")
    every = task.replace(
        train=Split(
            np.concatenate([task.train.x, task.val.x]), np.concatenate([task.train.y, task.val.y])
        )
    )
    ctx = type("Ctx", (), {"task": task, "seed": 0, "train": None, "held_out": {}})()
    step = {"model": {"name": "glm"}, "train": {"epochs": 1}, "lengths": {}}
    refitted, info = refit_step(None, step, ctx)
    assert info["rows"] == len(every.train)
    np.testing.assert_allclose(
        tidian.predict(refitted, task.test.x), _library(every, "classes"), rtol=1e-4, atol=1e-4
    )
    parent = train_new({"name": "glm"}, task, {}, 0)[0]
    config = {"model": {"name": "glm"}, "train": {"epochs": 1, "lr": 0.5}, "members": "seeds"}
    _, members = _trained_members(parent, {**config, "k": 3}, task, 0)
    expected = tidian.predict(parent, task.test.x)
    for member in members:
        np.testing.assert_allclose(tidian.predict(member, task.test.x), expected, atol=1e-6)
