"""`tidian recipe of RUN_ID`: a run's final model written out as a recipe of `apply` stages,
which rebuilds the same model per seed without the search."""

from pathlib import Path

import pytest
import yaml

import tidian.pipeline as pipeline
from tidian.cli import main
from tidian.exceptions import ConfigError
from tidian.store import Store

RECIPE = {
    "task": "digits",
    "model": {"name": "mlp", "hidden": [32]},
    "train": {"epochs": 1, "lr": 0.003},
    "evaluate": {"seeds": 4, "margin": 0.03},
    "confirm": {"seeds": 0},
    "deploy": {"runtime": "onnxruntime"},
    "stages": [
        # a candidate trained anew, then a transform of its trained weights; the stage between
        # (turned down) is not on the final's path
        {"train_variants": {"candidates": [{"epochs": 15}]}},
        {"train_variants": {"candidates": [{"lr": 1e-7}]}},
        {"quantize": {"mode": "dynamic"}},
    ],
}


def _files(store: Store, row: dict, seed: int) -> dict[str, bytes]:
    folder = Path(row["artifact"]).parent / f"seed-{seed}"
    return {
        name: (folder / name).read_bytes()
        for name in ("model.safetensors", "model.onnx")
        if (folder / name).exists()
    }


@pytest.mark.slow  # two whole pipeline runs
def test_the_written_out_path_rebuilds_the_same_model_per_seed(tmp_path, capsys):
    first = Store(f"sqlite:///{tmp_path / 'a.db'}", artifacts=tmp_path / "a")
    searched = pipeline.run(RECIPE, store=first, threads=1, time_limit="1h")
    rows = {c["stage_position"]: c for c in searched.candidates}
    assert rows[1]["decision"] == rows[3]["decision"] == "accepted"
    assert rows[2]["decision"] == "rejected" and searched.incumbent["id"] == rows[3]["id"]

    with pytest.raises(SystemExit) as done:
        main(["recipe", "of", searched.run_id, "--store", first.url])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert out.startswith(f"# The final model (#{rows[3]['id']}) of run {searched.run_id}")
    written = yaml.safe_load(out)
    assert [next(iter(s)) for s in written["stages"]] == ["apply", "apply"]
    trained, quantized = (s["apply"] for s in written["stages"])
    assert trained["model"] == rows[1]["model"] and trained["train"] == rows[1]["train"]
    assert "transform" not in trained and trained["gate"] == "superiority"
    assert quantized["transform"] == [{"quantize": rows[3]["transform"][0]["quantize"]}]
    assert quantized["gate"] == "non_inferiority"
    assert "budget" not in written  # a time limit could cut a step of the rebuild
    assert {k: written[k] for k in ("task", "model", "train")} == {
        k: RECIPE[k] for k in ("task", "model", "train")
    }

    second = Store(f"sqlite:///{tmp_path / 'b.db'}", artifacts=tmp_path / "b")
    rebuilt = pipeline.run(written, store=second, threads=1)
    again = {c["stage_position"]: c for c in rebuilt.candidates}
    assert [again[p]["label"] for p in (1, 2)] == [rows[1]["label"], rows[3]["label"]]
    assert rebuilt.incumbent["id"] == again[2]["id"]
    for before, after in ((rows[0], again[0]), (rows[1], again[1]), (rows[3], again[2])):
        assert after["quality"]["per_seed"] == before["quality"]["per_seed"]
        for seed in range(4):  # bit-identical weights (and int8 ONNX file) per seed
            files = _files(first, before, seed)
            assert files and files == _files(second, after, seed)
    assert [again[p]["decision"] for p in (1, 2)] == ["accepted", "accepted"]


def test_only_a_finished_run_with_a_readable_path_is_written_out(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'a.db'}", artifacts=tmp_path / "a")
    recipe = pipeline.load_recipe(RECIPE).to_dict()
    started = store.create_run(recipe, {})
    with pytest.raises(ConfigError, match=f"run {started} is running; only a finished run"):
        pipeline.path_recipe(store, started)
    old = {**recipe, "evaluate": {k: v for k, v in recipe["evaluate"].items() if k != "select"}}
    earlier = store.create_run(old, {})
    store.update_run(earlier, status="finished")
    with pytest.raises(ConfigError, match="recorded before candidates kept their transforms"):
        pipeline.path_recipe(store, earlier)
