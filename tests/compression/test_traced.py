"""Structured pruning of models tidian has no finder for: units found by tracing."""

import pytest
import torch

import tidian
from conftest import prune_silent_half
from tidian import ConfigError
from tidian.compression import PruneConfig, prune_
from tidian.compression.traced import find_groups

pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module", autouse=True)
def _user_models():
    # imported when these tests run, not when they are collected: a module registering models
    # is imported by every worker after that (also a Ray cluster's, which cannot import it)
    import user_models  # noqa: F401  (registers test_secnn and test_resmlp)


def _groups(model, task):
    return {g.name: g for g in find_groups(model, torch.as_tensor(task.train.x[:4]))}


def test_an_se_cnn_is_traced_into_its_coupled_channel_groups(tiny_tasks):
    task = tiny_tasks["image"]
    model = tidian.create_model("test_secnn", task, width=8)
    groups = _groups(model, task)
    # one stream: stem, its norm, the SE gate's output and the residual body add to it
    (stream,) = [g for g in groups.values() if any(m.module == "stem" for m in g.members)]
    places = {(m.module, m.role) for m in stream.members}
    assert {
        ("stem", "out"),
        ("norm", "norm"),
        ("se.excite", "out"),
        ("body", "out"),
        ("body_norm", "norm"),
        ("se.squeeze", "in"),
        ("body", "in"),
        ("mix", "in"),
    } <= places
    assert groups["se.squeeze"].size == 2  # the SE bottleneck
    # the 1x1 conv feeds a depthwise conv: its channels are left alone, not cut wrongly
    assert not any(m.module == "depthwise" for g in groups.values() for m in g.members)
    assert "head" not in groups  # the output layer keeps the task's width


@pytest.mark.parametrize(("name", "kind"), [("test_secnn", "image"), ("test_resmlp", "vector")])
def test_removing_silenced_traced_units_leaves_the_outputs_and_reloads(
    name, kind, tiny_tasks, tmp_path
):
    torch.manual_seed(0)
    model = tidian.create_model(name, tiny_tasks[kind]).eval()
    prune_silent_half(model, tiny_tasks[kind], tmp_path)


def test_prune_with_finetuning_on_a_traced_model(tiny_tasks):
    task = tiny_tasks["vector"]
    torch.manual_seed(0)
    model = tidian.create_model("test_resmlp", task, width=16)
    before = tidian.count_parameters(model)
    model, report = prune_(model, PruneConfig(amount=0.5, finetune_epochs=1), task)
    assert report["params_after"] < 0.75 * before
    layers = report["steps"][0]["layers"]
    # the hidden layers shrink; the residual stream, layer-normalised, is kept whole
    assert set(layers) == {"blocks.0.1", "blocks.1.1", "hidden"}
    assert layers["hidden"] == [16, 8] and all(b > a for a, b in [v[::-1] for v in layers.values()])
    assert model(torch.as_tensor(task.test.x)).shape == (len(task.test.x), task.n_outputs)


def test_a_model_is_traced_only_with_example_inputs(tiny_tasks):
    model = tidian.create_model("test_resmlp", tiny_tasks["vector"])
    with pytest.raises(ConfigError, match="without tracing it on example inputs"):
        prune_(model, PruneConfig(amount=0.5, finetune_epochs=0))


@pytest.mark.slow  # a whole pipeline run
def test_a_recipe_prunes_a_users_se_cnn_and_the_gate_judges_it(tmp_path):
    from tidian.store import Store

    recipe = {
        "task": "digits",
        "model": {"name": "test_secnn", "width": 8},
        "train": {"epochs": 3, "lr": 0.01},
        "evaluate": {"seeds": 2},
        "stages": [{"prune": {"amount": 0.5, "finetune_epochs": 2}}],
    }
    result = tidian.run(recipe, store=Store(f"sqlite:///{tmp_path / 'l.db'}"))
    assert result.status == "finished"
    pruned = next(c for c in result.candidates if c["stage"] == "prune")
    assert pruned["status"] == "done" and pruned["decision"] in ("accepted", "rejected")
    # the stem stream and the SE bottleneck halve; the depthwise path and the head stay whole
    assert pruned["cost"]["params"] < 0.9 * result.baseline["cost"]["params"]
