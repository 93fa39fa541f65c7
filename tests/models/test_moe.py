"""Mixture of experts: the balancing loss, top-k routing, the zoo options, training records
routing shares, export and the pruning refusal."""

import pytest
import torch

import tidian
from tidian import ConfigError
from tidian.models.moe import MoE, aux_loss, balance_loss, routing_stats


def test_balance_loss_is_zero_for_uniform_routing_and_grows_when_skewed():
    uniform = torch.full((4,), 0.25)
    assert balance_loss(uniform, uniform).item() == pytest.approx(0.0, abs=1e-7)
    skewed = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert balance_loss(skewed, torch.tensor([0.7, 0.1, 0.1, 0.1])).item() > 1.0


def test_top_k_routing_mixes_only_the_chosen_experts():
    torch.manual_seed(0)
    moe = MoE(3, 2, experts=4, top_k=1).eval()
    x = torch.randn(5, 3)
    choice = moe.gate(x).argmax(-1)
    expected = torch.stack([moe.experts[int(c)](x[i]) for i, c in enumerate(choice)])
    torch.testing.assert_close(moe(x), expected)


def test_training_adds_the_balancing_loss_and_records_usage(vector_task):
    torch.manual_seed(0)
    model = tidian.create_model("mlp", vector_task, hidden=[16], moe_experts=4, moe_top_k=2)
    model.train()
    model(torch.as_tensor(vector_task.train.x[:32]))
    assert isinstance(aux_loss(model), torch.Tensor)
    assert aux_loss(model) == 0.0  # consumed once
    history = tidian.fit(model, vector_task, {"epochs": 2}, seed=0)
    usage = history.epochs[-1]["moe_usage"]
    assert len(usage) == 1 and len(usage[0]) == 4 and sum(usage[0]) == pytest.approx(1.0)
    assert routing_stats(model) == [[0.0] * 4]  # read and reset by the loop


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_moe_models_train_save_and_export(tiny_tasks, tmp_path, name):
    task = tiny_tasks["sequence"]
    torch.manual_seed(0)
    model = tidian.create_model(name, task, moe_experts=3, moe_top_k=1)
    assert any(isinstance(m, MoE) for m in model.modules())
    tidian.fit(model, task, {"epochs": 1}, seed=0)
    x = torch.as_tensor(task.test.x)
    restored = tidian.load_model(tidian.save_model(model.eval(), tmp_path / name))
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    check = tidian.export_onnx(model, task, tmp_path / f"{name}.onnx")
    assert check.passed


def test_bad_moe_options_and_pruning_are_refused(vector_task):
    with pytest.raises(ConfigError, match="moe_top_k"):
        tidian.create_model("mlp", vector_task, moe_experts=2, moe_top_k=3)
    with pytest.raises(ConfigError, match="moe_experts"):
        tidian.create_model("mlp", vector_task, moe_experts=1)
    from tidian.compression.surgery import unit_groups

    model = tidian.create_model("mlp", vector_task, moe_experts=2)
    with pytest.raises(ConfigError, match="mixture-of-experts"):
        unit_groups(model)
