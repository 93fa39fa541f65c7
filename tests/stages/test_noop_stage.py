"""The one-file stage (``noop_stage.py``) works everywhere a built-in stage does: recipe
validation and schema, the pipeline, the ledger and the report — without a line elsewhere."""

from __future__ import annotations

import noop_stage  # noqa: F401  (registers the stage)
import pytest

import tidian.pipeline as pipeline
from tidian.recipe import RecipeError, recipe_schema, validate_recipe
from tidian.report import collect
from tidian.store import Store

RECIPE = {
    "task": "iris",
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"epochs": 3, "batch_size": 16},
    "evaluate": {"seeds": 3},
    "stages": [{"noop": {"label": "same again"}}],
}


@pytest.mark.slow  # a whole pipeline run
def test_a_one_file_stage_is_validated_run_gated_and_reported(tmp_path):
    assert "noop" in str(recipe_schema())
    try:
        validate_recipe({**RECIPE, "stages": [{"noop": {"lable": "x"}}]})
    except RecipeError as err:
        assert "stages[0].noop: unknown option 'lable' (did you mean 'label'?)" in str(err)
    else:
        raise AssertionError("a misspelt option must be refused")
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    result = pipeline.run(RECIPE, store=store)
    assert result.status == "finished"
    base, again = result.candidates
    assert again["label"] == "same again" and again["parent_id"] == base["id"]
    # the same model and training on the same seeds: identical scores, so no gain to accept
    assert again["quality"]["per_seed"] == base["quality"]["per_seed"]
    assert again["decision"] == "rejected" and result.incumbent["id"] == base["id"]
    data = collect(store, result.run_id, analyses=False)
    stage = data["stages"][-1]
    assert stage["name"] == "noop" and [c["id"] for c in stage["candidates"]] == [again["id"]]
    assert data["waterfall"][-1]["stage"] == "noop"
