"""Recipe validation: broken recipes and the message fragment each must produce."""

import json

import pytest

from tidian.recipe import DEFAULT_RECIPE, RecipeError, load_recipe, recipe_schema

BASE = "task: iris\nmodel: {name: mlp}\n"

BROKEN = [
    (
        BASE + "stages:\n  - architecture: {candidates: [{name: cnn}]}",
        "stages[0].architecture.candidates[0].name: unknown model 'cnn' (did you mean",
    ),
    (
        BASE + "stages:\n  - architecture: {candidats: []}",
        "stages[0].architecture: unknown option 'candidats' (did you mean 'candidates'?)",
    ),
    (
        BASE + "stages:\n  - archtecture: {}",
        "stages[0]: unknown stage 'archtecture' (did you mean architecture?)",
    ),
    (BASE + "stages:\n  - baseline: {}", "'baseline' always runs first"),
    (BASE + "stages:\n  - {architecture: {}, train_variants: {}}", "one-key mapping"),
    (
        BASE + "stages:\n  - train_variants: {candidates: 3}",
        "stages[0].train_variants.candidates: Input should be a valid list",
    ),
    (
        BASE + "stages:\n  - train_variants: {candidates: [{optimizer: adm}]}",
        "stages[0].train_variants.candidates[0].optimizer must be one of",
    ),
    (BASE + "trian: {}", "unknown key 'trian' (did you mean 'train'?)"),
    (BASE + "train: {lr: -1}", "train.lr must be a number > 0"),
    (BASE + "train: {learning_rate: 0.1}", "unknown option 'learning_rate'"),
    (BASE + "evaluate: {confidence: 2}", "evaluate.confidence: Input should be less than 1"),
    (BASE + "evaluate: {seeds: 1}", "at least 2 seeds"),
    (BASE + "evaluate: {seeds: [1, 1]}", "distinct"),
    (
        BASE + "evaluate: {metric: rsme}",
        "evaluate.metric: unknown metric 'rsme' (did you mean rmse",
    ),
    (BASE + "evaluate: {seeds: three}", "evaluate.seeds"),
    (
        BASE + "constraints: {max_latency: 1}",
        "unknown key 'max_latency' (did you mean 'max_latency_ms'?)",
    ),
    ("task: irs\nmodel: {name: mlp}", "task: unknown task 'irs' (did you mean iris?)"),
    ("task: {target: y}\nmodel: {name: mlp}", "needs 'name' (a built-in task) or 'path'"),
    ("task: iris\nmodel: {name: mlp, widht: 3}", "'widht' (did you mean 'width'?)"),
    ("task: iris\nmodel: mlp", "model: Input should be a valid dictionary"),
    ("task: iris\nmodel: {width: 3}", "model: a model is a mapping with a 'name'"),
    ("task: iris\nmodel: [name: mlp", "malformed YAML at line 2, column"),
    ("task: iris\nmodel: !!python/object/apply:os.system [echo hi]", "malformed YAML"),
    ("- just\n- a list", "must be a mapping"),
]


@pytest.mark.parametrize(("text", "fragment"), BROKEN)
def test_broken_recipes_name_their_place(text, fragment):
    with pytest.raises(RecipeError) as err:
        load_recipe(text)
    assert fragment in str(err.value)


def test_default_recipe_and_file_round_trip(tmp_path):
    recipe = load_recipe(DEFAULT_RECIPE)
    assert [name for name, _ in recipe.stage_entries()] == ["train_variants", "architecture"]
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe.to_dict()))
    again = load_recipe(path)
    assert again.to_dict() == recipe.to_dict() and again.seed_list() == [0, 1, 2]
    with pytest.raises(RecipeError, match="no recipe file"):
        load_recipe(tmp_path / "missing.yaml")


def test_schema_lists_stages_and_models():
    schema = recipe_schema()
    json.dumps(schema)
    stage_names = [
        next(iter(v["properties"])) for v in schema["properties"]["stages"]["items"]["oneOf"]
    ]
    assert {"train_variants", "architecture"} <= set(stage_names)
    assert "cnn1d" in schema["properties"]["model"]["properties"]["name"]["enum"]


def test_every_example_recipe_is_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "recipes"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for path in files:
        assert load_recipe(path).stage_entries()
    assert load_recipe(folder / "mnist1d.yaml").to_dict() == load_recipe(DEFAULT_RECIPE).to_dict()
