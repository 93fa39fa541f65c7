"""A recipe you do not have to write: `tidian recipe suggest TASK` and `tidian run --task`."""

import numpy as np
import pytest
import yaml

from conftest import run_cli
from tidian.cli import main
from tidian.recipe import RecipeError, load_recipe
from tidian.store import Store
from tidian.suggest import suggest_recipe


def _stages(recipe):
    return [next(iter(s)) for s in recipe["stages"]]


TABLE = ["architecture", "tune", "ensemble", "refit", "quantize"]
CV = {"seeds": 2, "folds": 5, "repeated": True}


@pytest.mark.parametrize(
    ("task", "baseline", "stages", "evaluate"),
    [
        # a small table: cross-validation, every row outside the holdout a test row once
        ("breast_cancer", "glm", TABLE, CV),
        # 2,000 training rows or more: one split
        ({"name": "synthetic", "n_samples": 4000}, "glm", TABLE, {"seeds": 3}),
        ("mnist1d", "mlp", ["architecture", "quantize"], {"seeds": 3}),
        ("digits", "mlp", ["architecture", "quantize"], {"seeds": 5}),  # images: not a table
    ],
)
def test_the_suggestion_follows_the_task_s_kind_and_size(task, baseline, stages, evaluate):
    recipe, notes = suggest_recipe(task)
    assert recipe["task"] == task and recipe["model"]["name"] == baseline
    assert _stages(recipe) == stages and recipe["evaluate"] == evaluate
    assert notes == []  # every optional feature is installed here
    parsed = load_recipe(recipe)  # a recipe like any other
    assert len(parsed.units()) == (10 if "folds" in evaluate else evaluate["seeds"])


def test_a_missing_feature_leaves_its_stage_out_and_says_so(monkeypatch):
    import tidian.suggest as suggest

    monkeypatch.setattr(suggest, "_installed", lambda module: module != "lightgbm")
    recipe, notes = suggest_recipe("breast_cancer")
    (architecture,) = [s["architecture"] for s in recipe["stages"] if "architecture" in s]
    names = [c["name"] for c in architecture["candidates"]]
    # quickest first, so that a time limit cuts the slow families (suggest.ORDER)
    assert names == ["svm", "mlp", "extra_trees", "random_forest", "xgboost", "catboost"]
    (tune,) = [s["tune"] for s in recipe["stages"] if "tune" in s]
    assert [b["name"] for b in tune["space"]["model"]["choice"]] == ["catboost"]
    assert notes == ["no lightgbm candidates: not installed (pip install 'tidian[boost]')"]
    monkeypatch.setattr(suggest, "_installed", lambda module: module in ("sklearn", "optuna"))
    recipe, notes = suggest_recipe("breast_cancer")
    assert _stages(recipe) == ["architecture", "ensemble", "refit"]
    assert notes == [
        "no lightgbm, xgboost, catboost candidates: not installed (pip install 'tidian[boost]')",
        "no tune stage: it searches LightGBM and CatBoost, and neither is installed "
        "(pip install 'tidian[boost]')",
        "no quantisation: ONNX Runtime is not installed (pip install 'tidian[onnx]')",
    ]


def test_a_table_above_the_svm_s_row_limit_gets_no_svm_and_is_told(monkeypatch):
    import tidian.suggest as suggest

    recipe, _ = suggest_recipe("breast_cancer")
    assert {"name": "svm"} in recipe["stages"][0]["architecture"]["candidates"]
    monkeypatch.setattr(suggest, "MAX_ROWS", 100)
    recipe, notes = suggest_recipe("breast_cancer")
    names = [c["name"] for c in recipe["stages"][0]["architecture"]["candidates"]]
    assert "svm" not in names and len(names) == 6
    assert notes == [
        "no svm candidate: 341 training rows, above its max_rows (100; its training time "
        "grows with the square of the rows)"
    ]


def _table(path, rows=150):
    """A small CSV: four numbers, a category, a binary label that depends on two of them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4))
    color = rng.choice(["red", "green", "blue"], rows)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=rows) > 0).astype(int)
    lines = ["a,b,c,d,color,label"] + [
        f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{r[3]:.4f},{c},{'yes' if t else 'no'}"
        for r, c, t in zip(x, color, y)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_recipe_suggest_prints_a_recipe_to_keep(tmp_path, capsys):
    data = _table(tmp_path / "data.csv")
    code, out, _ = run_cli(capsys, "recipe", "suggest", str(data), "--target", "label")
    assert code == 0
    assert out.startswith(f"# A recipe suggested for {data} (tidian recipe suggest)")
    kept = tmp_path / "recipe.yaml"
    kept.write_text(out)
    recipe = load_recipe(kept)
    assert recipe.task == {"path": str(data), "target": "label"}
    assert [name for name, _ in recipe.stage_entries()] == [
        "architecture",
        "tune",
        "ensemble",
        "refit",
        "quantize",
    ]
    # a column that is not there is said before anything trains
    with pytest.raises(SystemExit):
        main(["recipe", "suggest", str(data), "--target", "nope"])
    assert "nope" in capsys.readouterr().err


def test_run_task_refuses_a_recipe_beside_it_and_a_target_without_it(tmp_path, capsys):
    data = _table(tmp_path / "data.csv")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: iris\nmodel: {name: linear}\n")
    code, _, err = run_cli(capsys, "run", str(recipe), "--task", str(data), "--store", url)
    assert code == 2 and "without a RECIPE" in err
    code, _, err = run_cli(capsys, "run", "--target", "label", "--store", url)
    assert code == 2 and "give --task too" in err
    assert Store(url).runs() == []
    with pytest.raises(RecipeError):
        load_recipe({"task": "iris", "model": {"name": "linear"}, "budget": {"time": "x"}})


@pytest.mark.slow  # a whole pipeline run of the suggested recipe (about a minute)
def test_run_task_runs_the_suggested_recipe_on_a_csv(tmp_path, capsys):
    data = _table(tmp_path / "data.csv")
    url = f"sqlite:///{tmp_path / 'csv.db'}"
    code, out, _ = run_cli(capsys, "run", "--task", str(data), "--target", "label", "--store", url)
    assert code == 0
    assert f"the recipe suggested for {data}" in out
    store = Store(url)
    (run,) = store.runs()
    assert run["status"] == "finished"
    recipe = yaml.safe_load(yaml.safe_dump(run["recipe"]))
    assert recipe["task"] == {"path": str(data), "target": "label"}
    stages = [s["name"] for s in store.stages(run["id"])]
    assert stages == ["baseline", "architecture", "tune", "ensemble", "refit", "quantize"]
    # every stage ran and decided (or said why not)
    for st in store.stages(run["id"])[1:]:
        rows = [c for c in store.candidates(run["id"]) if c["stage_position"] == st["position"]]
        assert rows or (st["report"] or {}).get("skipped")
        assert all(c["decision"] in ("accepted", "rejected") for c in rows)
