"""The svm family (models/kernels.py): trained by scikit-learn, held as tensors that give
scikit-learn's own decision values, saved without pickle, exported as plain ONNX ops with the
output check — alone and inside an ensemble with a network."""

import numpy as np
import onnx
import pytest
from sklearn.svm import SVC, SVR

import tidian
from conftest import average_of_a_network_and, make_regression, table_case
from tidian import ConfigError, load_model, save_model
from tidian.export import OnnxModel, export_onnx
from tidian.models import kernels
from tidian.models.kernels import KernelMachine
from tidian.training.build import train_new


def _library(task, gamma, case):
    """scikit-learn's outputs for the same rows and kernel, in tidian's output layout."""
    x = task.train.x.astype(np.float64)
    test = task.test.x.astype(np.float64)
    if case == "values":
        y = task.train.y.astype(np.float64)
        shift, scale = y.mean(), y.std()
        fitted = SVR(gamma=gamma).fit(x, (y - shift) / scale)
        return (fitted.predict(test) * scale + shift)[:, None]
    fitted = SVC(gamma=gamma, decision_function_shape="ovr").fit(x, task.train.y)
    out = fitted.decision_function(test)
    return np.stack([np.zeros_like(out), out], 1) if case == "binary" else out


@pytest.mark.parametrize("case", ["classes", "binary", "values"])
def test_svm_trains_gives_scikit_learn_s_outputs_exports_and_reloads(case, tmp_path):
    task = table_case(case)
    model, history = train_new({"name": "svm"}, task, {}, 0)
    assert isinstance(model, KernelMachine) and not hasattr(model, "fit_with")
    spec = tidian.model_spec(model)
    assert spec.name == "kernel_machine" and spec.options["vectors"] == model.vectors.shape[0]
    assert history.library["support_vectors"] == spec.options["vectors"] > 0
    out = tidian.predict(model, task.test.x)
    assert out.shape == (len(task.test), task.n_outputs)
    # scikit-learn's decision function (one-vs-rest votes and confidences for 4 classes)
    np.testing.assert_allclose(
        out, _library(task, spec.options["gamma"], case), rtol=1e-4, atol=1e-4
    )
    if case != "values":
        assert (out.argmax(1) == task.test.y).mean() > 0.8
    else:
        assert np.sqrt(((out[:, 0] - task.test.y) ** 2).mean()) < 0.5 * task.test.y.std()
    check = export_onnx(model, task, tmp_path / "m.onnx")
    assert check.passed and check.max_abs_diff < 1e-6
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert {n.domain for n in graph.node} == {""}  # standard operators only
    # one copy of the support vectors in the graph (float64), not one per use
    stored = sum(np.prod(i.dims) for i in graph.initializer)
    assert stored < model.vectors.numel() + model.coef.numel() + 2 * model.vectors.shape[0] + 64
    np.testing.assert_allclose(OnnxModel(tmp_path / "m.onnx").predict(task.test.x), out, atol=1e-5)
    folder = save_model(model, tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "tidian.json"]
    np.testing.assert_array_equal(tidian.predict(load_model(folder), task.test.x), out)


def test_the_options_reach_scikit_learn_and_the_same_rows_give_the_same_model():
    task = table_case("classes")
    loose = train_new({"name": "svm", "C": 0.1, "gamma": 0.05}, task, {}, 0)[0]
    tight = train_new({"name": "svm", "C": 100.0, "gamma": 0.05}, task, {}, 0)[0]
    assert tidian.model_spec(loose).options["gamma"] == 0.05
    # a softer margin keeps more rows as support vectors
    assert loose.vectors.shape[0] > tight.vectors.shape[0]
    again = train_new({"name": "svm", "C": 0.1, "gamma": 0.05}, task, {}, 5)[0]
    np.testing.assert_array_equal(
        tidian.predict(again, task.test.x), tidian.predict(loose, task.test.x)
    )


def test_bad_options_and_a_table_too_large_are_refused_with_what_to_do():
    task = table_case("classes")
    for options, words in [
        ({"C": 0}, "svm C"),
        ({"gamma": -1}, "svm gamma"),
        ({"max_rows": 0}, "max_rows"),
        ({"params": {"kernel": "linear"}}, "params"),
        ({"class_weight": "heavy"}, "svm class_weight must be 'balanced' or null"),
    ]:
        with pytest.raises(ConfigError, match=words):
            tidian.create_model("svm", task, **options)
    with pytest.raises(ConfigError, match="class_weight"):
        tidian.create_model("svm", make_regression(), class_weight="balanced")
    with pytest.raises(ConfigError, match=r"above its max_rows \(50\).*tree family"):
        train_new({"name": "svm", "max_rows": 50}, task, {}, 0)


def test_a_conversion_that_differs_from_scikit_learn_is_refused(monkeypatch):
    def shuffled(estimator, classes):
        coef, intercept = layout(estimator, classes)
        return coef[::-1].copy(), intercept

    layout = kernels._layout
    monkeypatch.setattr(kernels, "_layout", shuffled)
    with pytest.raises(ConfigError, match="disagrees with scikit-learn"):
        train_new({"name": "svm"}, table_case("classes"), {}, 0)


def test_a_network_and_an_svm_are_one_graph(tmp_path):
    task = table_case("binary")
    ops = average_of_a_network_and(train_new({"name": "svm"}, task, {}, 0)[0], task, tmp_path)
    assert {("", "Gemm"), ("", "Exp")} <= ops and {d for d, _ in ops} == {""}
