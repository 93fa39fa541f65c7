"""The tree families (models/trees.py): trained by their own libraries, held as tensors that
reproduce the library's predictions, saved without pickle, exported to ONNX-ML's tree
operator and run natively by ONNX Runtime — alone and inside an ensemble with a network."""

import numpy as np
import onnx
import pytest
import torch

import tidian
from conftest import average_of_a_network_and, make_regression, make_task
from tidian import ConfigError, create_model, load_model, save_model
from tidian.export import OnnxModel, export_onnx
from tidian.models.trees import FAMILIES, LIBRARY_FILES, TreeEnsemble, from_forest
from tidian.tasks import Split, Task
from tidian.training.build import train_new

# small and quick: every family on a tiny task in well under a second
SMALL = {
    "lightgbm": {"n_estimators": 40, "min_child_samples": 3},
    "xgboost": {"n_estimators": 40},
    "catboost": {"iterations": 40, "depth": 4},
    "random_forest": {"n_estimators": 20},
    "extra_trees": {"n_estimators": 20},
}


def _trained(family, task, seed=0, **options):
    spec = {"name": family, **SMALL[family], **options}
    return train_new(spec, task, {}, seed)


def _onnx_ops(path):
    return {(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def binary_task():
    return make_task("vector", n=120, classes=2, seed=3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", ["classes", "binary", "values"])
def test_a_family_trains_exports_natively_and_reloads_without_its_library(
    family, case, tiny_tasks, binary_task, tmp_path
):
    task = {"classes": tiny_tasks["vector"], "binary": binary_task}.get(case) or make_regression()
    model, history = _trained(family, task)
    assert isinstance(model, TreeEnsemble) and not hasattr(model, "fit_with")
    spec = tidian.model_spec(model)
    assert spec.name == "trees" and spec.options["source"] == family
    assert history.library["seconds"] > 0 and history.epochs == []
    out = tidian.predict(model, task.test.x)
    assert out.shape == (len(task.test), task.n_outputs) and np.isfinite(out).all()
    if case != "values":  # the toy task is learnable: trees must beat chance clearly
        assert (out.argmax(1) == task.test.y).mean() > 0.7
    check = export_onnx(model, task, tmp_path / "m.onnx")
    assert check.passed and check.max_abs_diff < 1e-4
    assert ("ai.onnx.ml", "TreeEnsembleRegressor") in _onnx_ops(tmp_path / "m.onnx")
    np.testing.assert_allclose(
        OnnxModel(tmp_path / "m.onnx").predict(task.test.x), out, rtol=1e-4, atol=1e-4
    )
    restored = load_model(save_model(model, tmp_path / "saved"))
    np.testing.assert_array_equal(tidian.predict(restored, task.test.x), out)
    # safetensors + JSON (+ the library's own format): nothing a pickle loader would read
    own = [LIBRARY_FILES[family]] if family in LIBRARY_FILES else []
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == sorted(
        ["model.safetensors", "tidian.json", *own]
    )


def _library_raw(family, path, x):
    """The raw scores of a saved library file, read by the library itself."""
    if family == "lightgbm":
        import lightgbm

        return lightgbm.Booster(model_file=str(path)).predict(x, raw_score=True)
    if family == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster.predict(xgboost.DMatrix(x), output_margin=True)
    import catboost

    return catboost.CatBoost().load_model(str(path)).predict(x, prediction_type="RawFormulaVal")


@pytest.mark.parametrize("family", sorted(LIBRARY_FILES))
@pytest.mark.parametrize("case", ["classes", "binary", "values"])
def test_a_boosting_family_keeps_its_library_s_own_model_file(
    family, case, tiny_tasks, binary_task, tmp_path
):
    """The library's own format beside the arrays: the library reads it back and predicts
    what tidian's model does; a reloaded model saved again still carries it."""
    task = {"classes": tiny_tasks["vector"], "binary": binary_task}.get(case) or make_regression()
    model, _ = _trained(family, task)
    x = task.test.x.astype(np.float32)
    out = tidian.predict(model, x)
    mine = out[:, 1] if case == "binary" else (out[:, 0] if case == "values" else out)
    folder = save_model(load_model(save_model(model, tmp_path / "a")), tmp_path / "b")
    raw = np.asarray(_library_raw(family, folder / LIBRARY_FILES[family], x)).reshape(mine.shape)
    np.testing.assert_allclose(raw, mine, rtol=1e-4, atol=1e-4)


def test_a_library_file_name_must_be_a_plain_name(binary_task, tmp_path):
    import json

    model, _ = _trained("lightgbm", binary_task)
    folder = save_model(model, tmp_path / "m")
    doc = json.loads((folder / "tidian.json").read_text())
    doc["library_files"] = ["../../escape.txt"]
    (folder / "tidian.json").write_text(json.dumps(doc))
    with pytest.raises(tidian.DataError, match="plain file name"):
        load_model(folder)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_seed_is_the_library_s_seed(family, tiny_tasks):
    task = tiny_tasks["vector"]
    a, b, c = (_trained(family, task, seed)[0] for seed in (3, 3, 4))
    x = torch.as_tensor(task.test.x)
    torch.testing.assert_close(a.scores(x), b.scores(x), rtol=0, atol=0)
    state_a, state_c = a.state_dict(), c.state_dict()
    assert any(
        state_a[k].shape != state_c[k].shape or not torch.equal(state_a[k], state_c[k])
        for k in state_a
    )


def test_the_conversion_reproduces_the_library_and_refuses_a_mismatch(tiny_tasks):
    from sklearn.ensemble import RandomForestClassifier

    task = tiny_tasks["vector"]
    x = task.train.x
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, task.train.y)
    model = from_forest(forest, task, "random_forest")
    expected = np.log(np.clip(forest.predict_proba(task.test.x), 1e-7, None))
    np.testing.assert_allclose(tidian.predict(model, task.test.x), expected, atol=1e-5)
    forest.estimators_[0].tree_.value[:] = 1.0  # the library now predicts otherwise
    with pytest.raises(ConfigError, match="disagrees with random_forest's own predictions"):
        from_forest(forest, task, "random_forest")


def test_thresholds_between_float32_values_decide_as_the_library_does(tmp_path):
    # a stump splitting between two adjacent float32 values: the double threshold rounds *up*
    # to the larger one in float32, and a row holding it would flip sides in the ONNX node
    # unless the exported threshold is rounded down
    from tidian.models.trees import _build

    low = np.float32(1.0)
    high = np.nextafter(low, np.float32(2.0))
    threshold = np.float64(low) + 0.75 * (np.float64(high) - np.float64(low))
    assert np.float32(threshold) == high  # round-to-nearest goes up here
    x = np.array([[low], [high], [0.0], [3.0]], dtype=np.float32)
    task = Task(
        "stump",
        *[Split(x, np.array([0, 1, 0, 1]))] * 3,
        input_kind="vector",
        target_kind="classes",
        class_names=("a", "b"),
    )
    stump = {
        "feature": [0, 0, 0],
        "threshold": [threshold, 0.0, 0.0],
        "left": [1, 1, 2],
        "right": [2, 1, 2],
        "value": [0.0, -1.0, 1.0],
        "leaf": [False, True, True],
        "depth": 1,
    }
    model = _build([stump], task, "lightgbm")
    torch_out = tidian.predict(model, x)
    assert list(torch_out.argmax(1)) == [0, 1, 0, 1]
    check = export_onnx(model, x, tmp_path / "m.onnx")
    assert check.passed and check.argmax_agreement == 1.0


def test_a_network_and_trees_are_one_graph(binary_task, tmp_path):
    ops = average_of_a_network_and(_trained("catboost", binary_task)[0], binary_task, tmp_path)
    assert ("ai.onnx.ml", "TreeEnsembleRegressor") in ops and ("", "Gemm") in ops


def test_bad_family_options_and_tasks_are_refused_by_name(tiny_tasks):
    task = tiny_tasks["vector"]
    with pytest.raises(ConfigError, match="num_leave.*did you mean 'num_leaves'"):
        create_model("lightgbm", task, num_leave=8)
    with pytest.raises(ConfigError, match="params"):
        create_model("lightgbm", task, params={"num_leaves": 8})
    with pytest.raises(ConfigError, match="does not take text inputs"):
        create_model("catboost", tiny_tasks["text"])
    with pytest.raises(ConfigError, match="no trainable parameters"):
        tidian.fit(create_model("xgboost", task), task, {"epochs": 1})


def test_models_saved_before_leaf_widths_still_load(tiny_tasks, tmp_path):
    from safetensors.torch import save_file

    task = tiny_tasks["vector"]
    model = _trained("lightgbm", task)[0]
    folder = save_model(model, tmp_path / "new")
    # rewrite it as the older ``gbdt`` layout: one value per leaf, group (trees, outputs)
    legacy = {k: v.clone() for k, v in model.state_dict().items()}
    legacy["value"], legacy["group"] = legacy["value"][..., 0], legacy["group"][:, 0]
    save_file(legacy, str(folder / "model.safetensors"))
    doc = (folder / "tidian.json").read_text()
    options = tidian.model_spec(model).options
    old = {k: options[k] for k in ("trees", "nodes", "depth", "binary")}
    import json

    data = json.loads(doc)
    data["model"].update(name="gbdt", options=old)
    (folder / "tidian.json").write_text(json.dumps(data))
    restored = load_model(folder)
    np.testing.assert_array_equal(
        tidian.predict(restored, task.test.x), tidian.predict(model, task.test.x)
    )


def test_stages_whose_options_do_not_change_a_tree_model_say_so(tiny_tasks):
    """Training options (lr, epochs…) do not change a model its library trains: a variant or
    a search over them would train the same trees again, so the stage is skipped with why;
    other seeds do change it. A tree family is no distillation student."""
    from tidian.recipe import RecipeError, validate_recipe
    from tidian.stages import Context, Proposal
    from tidian.stages.distill import Distill, DistillConfig
    from tidian.stages.tune import Tune, TuneConfig
    from tidian.stages.variants import (
        Architecture,
        ArchitectureConfig,
        TrainVariants,
        TrainVariantsConfig,
    )

    task = tiny_tasks["vector"]
    trees = Proposal("lightgbm", {"name": "lightgbm"}, {"lr": 0.01})
    net = Proposal("mlp", {"name": "mlp"}, {"lr": 0.01})

    def run(stage, incumbent):
        ctx = Context(task, "accuracy", (0,))
        return stage.run(incumbent, ctx), ctx.notes.get("skipped", "")

    variants = TrainVariants(TrainVariantsConfig(candidates=[{"lr": 0.1}, {"epochs": 5}]))
    out, why = run(variants, trees)
    assert out == [] and "trained by its library" in why and "{name: lightgbm" in why
    assert len(run(variants, net)[0]) == 2
    reseeded = TrainVariants(TrainVariantsConfig(candidates=[{"seed_stream": 1}]))
    assert len(run(reseeded, trees)[0]) == 1
    # other models after a tree incumbent: an architecture stage proposes them as usual
    others = Architecture(ArchitectureConfig(candidates=[{"name": "mlp"}, {"name": "catboost"}]))
    assert len(run(others, trees)[0]) == 2

    tune = Tune(TuneConfig(space={"lr": {"float": [0.001, 0.1], "log": True}}, trials=2))
    out, why = run(tune, trees)
    assert out == [] and "searches only training options (lr)" in why

    scaled = Distill(DistillConfig(student={"fraction": 0.5}))
    out, why = run(scaled, trees)
    assert out == [] and "name a network student" in why
    with pytest.raises(ConfigError, match="trained by its library on labels"):
        DistillConfig(student={"name": "catboost"})
    with pytest.raises((ConfigError, RecipeError), match="trained by its library"):
        validate_recipe(
            {
                "task": "iris",
                "model": {"name": "lightgbm"},
                "stages": [{"distill": {"student": {"name": "xgboost"}}}],
            }
        )
