"""Conformance over every registered model: each supported input kind must forward, backward,
round-trip through save/load, be reproducible from a seed, export to ONNX with the same
outputs, and — where its family declares unit groups — prune structurally without moving the
outputs of silenced units. A new model needs no new test."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import tidian
from conftest import KINDS, REQUIRED_OPTIONS, prune_silent_half
from tidian import ConfigError, DataError, UnknownNameError, create_model, load_model, save_model
from tidian.compression.surgery import GROUP_FINDERS, unit_groups
from tidian.export import OnnxModel, export_onnx

CASES = [
    (name, kind)
    for name in tidian.MODELS.names()
    for kind in KINDS
    if kind in tidian.MODELS.entry(name).meta["inputs"]
]
REFUSED = [
    (name, kind)
    for name in tidian.MODELS.names()
    for kind in KINDS
    if kind not in tidian.MODELS.entry(name).meta["inputs"]
]


def _batch(task, n=6):
    return torch.as_tensor(task.train.x[:n])


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_forward_backward(name, kind, tiny_tasks):
    task = tiny_tasks[kind]
    torch.manual_seed(0)
    model = create_model(name, task, **REQUIRED_OPTIONS.get(name, {}))
    out = model(_batch(task))
    assert out.shape == (6, task.n_outputs)
    assert torch.isfinite(out).all()
    if not tidian.MODELS.entry(name).meta.get("trainable", True):
        assert not any(p.requires_grad for p in model.parameters())  # converted, not trained
        return
    loss = nn.functional.cross_entropy(out, torch.as_tensor(task.train.y[:6]))
    loss.backward()
    # parameters only further targets reach (multi-task heads) get no gradient from the main one
    grads = [
        p.grad for p in model.parameters() if p.requires_grad and not getattr(p, "_tidian_aux", 0)
    ]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_save_load_round_trip_gives_equal_outputs(name, kind, tiny_tasks, tmp_path):
    task = tiny_tasks[kind]
    torch.manual_seed(1)
    model = create_model(name, task, **REQUIRED_OPTIONS.get(name, {})).eval()
    folder = save_model(model, tmp_path / name)
    spec = json.loads((folder / "tidian.json").read_text())
    assert (
        spec["model"]["name"] == name and spec["model"]["signature"] == task.signature().to_dict()
    )
    restored = load_model(folder)
    x = _batch(task)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    assert tidian.model_spec(restored) == tidian.model_spec(model)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_same_seed_same_weights(name, kind, tiny_tasks):
    task = tiny_tasks[kind]
    config = {"epochs": 2, "batch_size": 16}
    if not tidian.MODELS.entry(name).meta.get("trainable", True):
        with pytest.raises(tidian.ConfigError, match="no trainable parameters"):
            tidian.fit(create_model(name, task), task, config)
        return

    def trained(seed):
        torch.manual_seed(seed)
        model = create_model(name, task, **REQUIRED_OPTIONS.get(name, {}))
        tidian.fit(model, task, config, seed=seed)
        return model.state_dict()

    a, b, c = trained(3), trained(3), trained(4)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize(("name", "kind"), REFUSED)
def test_unsupported_input_kind_is_refused_clearly(name, kind, tiny_tasks):
    with pytest.raises(ConfigError, match=f"does not take {kind} inputs.*try"):
        create_model(name, tiny_tasks[kind], **REQUIRED_OPTIONS.get(name, {}))


def test_regression_head_starts_on_the_target_scale(regression_task):
    torch.manual_seed(0)
    model = create_model("mlp", regression_task).eval()
    with torch.no_grad():
        out = model(torch.as_tensor(regression_task.test.x))
    # y has mean ~100 and std ~32: an untrained head should already be centred near it
    assert out.shape == (len(regression_task.test), 1)
    assert abs(float(out.mean()) - float(regression_task.train.y.mean())) < 40


def test_options_change_the_architecture(tiny_tasks):
    task = tiny_tasks["vector"]
    small = create_model("mlp", task, hidden=[4])
    assert tidian.count_parameters(small) == 5 * 4 + 4 + 4 * 3 + 3
    deep = create_model(
        "mlp", task, width=8, depth=3, norm="batch", dropout=0.1, residual=True, activation="gelu"
    )
    assert sum(isinstance(m, nn.BatchNorm1d) for m in deep.modules()) == 3
    assert sum(isinstance(m, nn.GELU) for m in deep.modules()) == 3
    assert deep.skips == [False, True, True]
    cnn = create_model(
        "cnn1d",
        tiny_tasks["sequence"],
        width=4,
        depth=2,
        kernel_size=[5, 3],
        stride=2,
        readout="flatten",
    )
    assert cnn(_batch(tiny_tasks["sequence"])).shape == (6, 3)
    tf = create_model(
        "transformer", tiny_tasks["text"], width=16, heads=2, pool="cls", positional="learned"
    )
    assert tf(_batch(tiny_tasks["text"])).shape == (6, 3)


def test_bad_model_names_and_options(tiny_tasks):
    task = tiny_tasks["vector"]
    with pytest.raises(UnknownNameError, match=r"did you mean .*cnn1d.*tidian models"):
        create_model("cnn", task)
    with pytest.raises(ConfigError, match=r"'widht' \(did you mean 'width'\?\)"):
        create_model("mlp", task, widht=3)
    with pytest.raises(ConfigError, match="norm must be one of"):
        create_model("mlp", task, norm="group")
    with pytest.raises(ConfigError, match="'dropout' is a probability in"):
        create_model("gru", task, dropout=1.5)
    with pytest.raises(ConfigError, match="width must be a multiple of heads"):
        create_model("transformer", task, width=10, heads=4)


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(5, 3)

    def forward(self, x):
        return self.body(x)


def test_user_module_saves_with_its_factory(tmp_path, tiny_tasks):
    model = UserNet()
    save_model(model, tmp_path / "user")
    with pytest.raises(ConfigError, match="factory"):
        load_model(tmp_path / "user")
    restored = load_model(tmp_path / "user", factory=UserNet)
    x = _batch(tiny_tasks["vector"])
    torch.testing.assert_close(restored(x), model(x))
    # and it evaluates like a zoo model (re-initialised per seed)
    result = tidian.evaluate(model, tiny_tasks["vector"], {"epochs": 3}, seeds=2)
    assert result.name == "UserNet" and len(result.scores()) == 2


def test_load_model_errors(tmp_path, tiny_tasks):
    with pytest.raises(DataError, match="not a saved tidian model"):
        load_model(tmp_path)
    folder = save_model(create_model("mlp", tiny_tasks["vector"], hidden=[4]), tmp_path / "m")
    spec = json.loads((folder / "tidian.json").read_text())
    spec["model"]["options"]["hidden"] = [5]
    (folder / "tidian.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="do not fit"):
        load_model(folder)


def test_register_model_extends_the_zoo(tiny_tasks):
    name = "test_tiny_linear"
    if name not in tidian.MODELS:

        @tidian.register_model(name, inputs=("vector",))
        def tiny(sig, *, bias: bool = True):
            """A bias-optional linear layer."""
            return nn.Linear(int(np.prod(sig.input_shape)), sig.n_outputs, bias=bias)

    model = create_model(name, tiny_tasks["vector"], bias=False)
    assert model.bias is None and tidian.model_spec(model).options == {"bias": False}


# -- every model deploys: ONNX export with the output check, and structured pruning where the
# -- model's family declares its unit groups (compression.surgery.register_groups)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_exports_to_onnx_with_the_same_outputs(name, kind, tiny_tasks, tmp_path):
    pytest.importorskip("onnxruntime")
    task = tiny_tasks[kind]
    torch.manual_seed(2)
    model = create_model(name, task, **REQUIRED_OPTIONS.get(name, {})).eval()
    check = export_onnx(model, task, tmp_path / "m.onnx")
    assert check.passed and check.samples == min(64, len(task.test))
    with torch.no_grad():
        expected = model(torch.as_tensor(task.test.x)).numpy()
    np.testing.assert_allclose(
        OnnxModel(tmp_path / "m.onnx").predict(task.test.x), expected, atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_declared_unit_groups_prune_without_moving_the_outputs(name, kind, tiny_tasks, tmp_path):
    pytest.importorskip("onnxruntime")
    task = tiny_tasks[kind]
    torch.manual_seed(3)
    model = create_model(name, task, **REQUIRED_OPTIONS.get(name, {})).eval()
    declared = any(cls in GROUP_FINDERS for cls in type(model).__mro__)
    if not declared:
        # no finder: structured pruning says so clearly, and how to describe the model
        with pytest.raises(ConfigError, match="does not know how units of .* are wired"):
            unit_groups(model)
        return
    prune_silent_half(model, task, tmp_path)
