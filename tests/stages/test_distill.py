"""Knowledge distillation: the loss, hooks, projections, cached targets, the stage and the job."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import tidian
from conftest import make_task
from tidian import Split, Task
from tidian.cli import main
from tidian.exceptions import ConfigError
from tidian.metrics import predict, score
from tidian.models import count_parameters, create_model
from tidian.report.collect import collect
from tidian.stages.distill import DistillConfig, auto_student, distill_
from tidian.training.distill import (
    Capture,
    Hint,
    attention_map,
    captured,
    kd_loss,
    module_at,
    projections,
    teacher_targets,
)
from tidian.training.loop import fit
from tidian.training.steps import DistillStep

# -- the loss -----------------------------------------------------------------------------------


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 3.0
    expected = 0.0
    for si, ti in zip(s.tolist(), t.tolist()):
        pt = [math.exp(v / T) for v in ti]
        pt = [v / sum(pt) for v in pt]
        ps = [math.exp(v / T) for v in si]
        ps = [v / sum(ps) for v in ps]
        expected += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    expected = expected / 2 * T * T
    assert kd_loss(s, t, T).item() == pytest.approx(expected, rel=1e-5)
    # T = 1: the plain KL between the two softmaxes, no scaling
    plain = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean")
    assert kd_loss(s, t, 1.0).item() == pytest.approx(plain.item(), rel=1e-5)
    # log-probabilities of an averaged ensemble give the same loss as their logits
    assert kd_loss(s, t.log_softmax(-1), T).item() == pytest.approx(expected, rel=1e-5)


def test_distill_step_alpha_limits():
    model = nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    teacher = torch.randn(10, 3)
    index = torch.tensor([9, 3, 4, 0, 1, 7])
    out = model(x)
    hard = F.cross_entropy(out, y)
    soft = kd_loss(out, teacher[index], 2.0)
    for alpha, want in ((0.0, hard), (1.0, soft), (0.25, 0.25 * soft + 0.75 * hard)):
        step = DistillStep(F.cross_entropy, teacher, temperature=2.0, alpha=alpha)
        assert step(model, x, y, index).item() == pytest.approx(want.item(), rel=1e-6)


# -- hooks, projections, attention --------------------------------------------------------------


def test_feature_hooks_by_module_path_and_a_clear_error():
    task = make_task("sequence")
    model = create_model("cnn1d", task, width=8, depth=2)
    x = torch.as_tensor(task.train.x[:5])
    with torch.no_grad():
        capture = Capture(model, {"blocks.1": "feature"}, "student")
        model(x)
        capture.close()
        h = x.transpose(1, 2)  # (N, L, C) → (N, C, L), as the model does
        block = model.blocks[1](model.blocks[0](h))
    assert capture.values["blocks.1"].shape == (5, 8)  # pooled over positions
    assert torch.allclose(capture.values["blocks.1"], block.mean(dim=2), atol=1e-6)
    with pytest.raises(ConfigError, match=r"no module at 'blocks\.7'.*blocks\.1"):
        module_at(model, "blocks.7")


def test_projection_only_when_widths_differ_and_it_trains():
    task = make_task("vector", n=90)
    teacher = create_model("mlp", task, width=16, depth=2)
    student = create_model("mlp", task, width=4, depth=2)
    same = create_model("mlp", task, width=16, depth=1)
    hints = [Hint("blocks.1", "blocks.1")]
    targets = teacher_targets(teacher, task.train.x, {"blocks.1": "feature"})
    proj = projections(student, torch.as_tensor(task.train.x[:2]), hints, targets)
    assert isinstance(proj["0"], nn.Linear) and (proj["0"].in_features, proj["0"].out_features) == (
        4,
        16,
    )
    ident = projections(
        same, torch.as_tensor(task.train.x[:2]), [Hint("blocks.0", "blocks.1")], targets
    )
    assert isinstance(ident["0"], nn.Identity)
    # the projection gets gradients from the hint term
    student.add_module("_p", proj)
    with captured(student, {"blocks.1": "feature"}, "student") as capture:
        step = DistillStep(
            F.cross_entropy,
            targets.outputs,
            hints=hints,
            hint_targets=targets.hints,
            capture=capture,
            projections=proj,
        )
        index = torch.arange(8)
        loss = step(
            student, torch.as_tensor(task.train.x[:8]), torch.as_tensor(task.train.y[:8]), index
        )
        loss.backward()
    assert proj["0"].weight.grad is not None and proj["0"].weight.grad.abs().sum() > 0


def test_attention_map_equals_the_modules_own_weights():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    q = torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    _, weights = mha(q, q, q, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
    assert torch.allclose(attention_map(mha, q, pad), weights, atol=1e-5)


def test_attention_hints_on_transformer_students():
    task = make_task("text", n=90)
    teacher = create_model("transformer", task, width=16, heads=4, depth=1, dropout=0.0)
    fit(teacher, task, {"epochs": 3}, seed=0)
    config = {
        "student": {"name": "transformer", "width": 8, "heads": 2, "depth": 1, "dropout": 0.0},
        "attentions": [
            {"student": "encoder.layers.0.self_attn", "teacher": "encoder.layers.0.self_attn"}
        ],
        "features": [{"student": "norm", "teacher": "norm"}],
    }
    student, report = distill_(teacher, config, task, train={"epochs": 2}, seed=0)
    assert [h["kind"] for h in report["hints"]] == ["feature", "attention"]
    assert not hasattr(student, "_distill_projections")  # removed before saving
    assert set(student.state_dict()) == set(
        create_model(
            "transformer", task, **{k: v for k, v in config["student"].items() if k != "name"}
        ).state_dict()
    )


# -- cached targets -----------------------------------------------------------------------------


def test_cached_teacher_outputs_equal_fresh_ones_and_rows_line_up():
    task = make_task("vector", n=90)
    teacher = create_model("mlp", task, width=8)
    fit(teacher, task, {"epochs": 2}, seed=0)
    cached = teacher_targets(teacher, task.train.x, batch_size=7).outputs
    fresh = torch.from_numpy(predict(teacher, task.train.x))
    assert torch.allclose(cached, fresh, atol=1e-6)
    seen = []

    class Spy(DistillStep):
        def __call__(self, model, x, y, index):
            seen.append((x.clone(), self.teacher[index.to(self.teacher.device)].clone()))
            return super().__call__(model, x, y, index)

    student = create_model("mlp", task, width=4)
    fit(student, task, {"epochs": 1, "batch_size": 16}, seed=1, step=Spy(F.cross_entropy, cached))
    for x, target in seen:  # the cached row is the teacher's output for that very input
        assert torch.allclose(target.to(x.device), teacher(x), atol=1e-5)


# -- the job ------------------------------------------------------------------------------------


def _noisy_circles(seed: int = 0, n: int = 300, flip: float = 0.3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    clean = (np.hypot(x[:, 0], x[:, 1]) > 1.1).astype(np.int64)
    noisy = clean.copy()
    flips = rng.random(n) < flip
    noisy[flips] = 1 - noisy[flips]
    a, b = int(n * 0.5), int(n * 0.6)
    return Task(
        "circles",
        Split(x[:a], noisy[:a]),
        Split(x[a:b], clean[a:b]),
        Split(x[b:], clean[b:]),
        input_kind="vector",
        target_kind="classes",
        class_names=("in", "out"),
    )


class _Oracle(nn.Module):
    """A teacher that knows the true boundary (its logits), as a perfectly trained one would."""

    def forward(self, x):
        margin = 4.0 * (torch.hypot(x[:, 0], x[:, 1]) - 1.1)
        return torch.stack([-margin, margin], dim=1) / 2


def test_a_distilled_student_beats_the_same_student_alone():
    """Labels with 30% flips; the teacher knows the clean boundary. On the same three seeds the
    distilled student must be at least 8 points more accurate (measured: +25)."""
    task = _noisy_circles()
    train = {"epochs": 60, "lr": 1e-2, "batch_size": 32}
    student = {"name": "mlp", "width": 32, "depth": 2}
    gains = []
    for seed in range(3):
        torch.manual_seed(seed)
        alone = create_model("mlp", task, width=32, depth=2)
        fit(alone, task, train, seed=seed)
        kd, report = distill_(
            _Oracle(),
            {"student": student, "alpha": 0.9, "temperature": 2.0},
            task,
            train=train,
            seed=seed,
        )
        gains.append(score(kd, task)["accuracy"] - score(alone, task)["accuracy"])
        assert report["teacher_scores"]["test"]["accuracy"] > 0.95
    assert np.mean(gains) >= 0.08, gains


def test_augmented_transfer_set_is_labelled_by_the_teacher():
    task = make_task("sequence", n=60)
    teacher = create_model("cnn1d", task, width=8)
    _, report = distill_(
        teacher,
        {
            "student": {"name": "cnn1d", "width": 4},
            "augment": {"copies": 2, "noise": 0.1, "shift": 2},
        },
        task,
        train={"epochs": 1},
        seed=0,
    )
    assert report["transfer_rows"] == 3 * len(task.train)


def test_lightgbm_teacher_for_tabular_tasks():
    task = make_task("vector", n=150)
    student, report = distill_(
        None,
        {
            "student": {"name": "mlp", "width": 8},
            "teacher": "lightgbm",
            "lightgbm": {"n_estimators": 20},
        },
        task,
        train={"epochs": 30, "lr": 1e-2},
        seed=0,
    )
    assert report["teacher"] == "lightgbm"
    assert report["teacher_scores"]["test"]["accuracy"] > 0.8
    assert score(student, task)["accuracy"] > 0.8


def test_incompatible_teacher_and_student_outputs():
    task = make_task("vector")
    wrong = nn.Linear(5, 4)  # four outputs for a three-class task
    with pytest.raises(ConfigError, match="teacher gives 4 outputs.*student gives 3"):
        distill_(wrong, {"student": {"name": "mlp", "width": 4}}, task, train={"epochs": 1}, seed=0)


def test_config_errors():
    with pytest.raises(ConfigError, match="hints need one torch teacher"):
        DistillConfig(teacher="ensemble", features=[{"student": "a", "teacher": "b"}])
    with pytest.raises(ConfigError, match="distill.teacher"):
        DistillConfig(teacher="oracle")
    with pytest.raises(ConfigError, match="distill.student"):
        DistillConfig(student={"fraction": 1.5})
    with pytest.raises(ConfigError, match="distill.augment"):
        DistillConfig(augment={"rotate": 3})


def test_auto_student_has_about_the_requested_share_of_parameters():
    task = make_task("sequence")
    teacher = {"name": "cnn1d", "width": 64}
    student = auto_student(teacher, task, 0.1)
    big = count_parameters(create_model("cnn1d", task, width=64))
    small = count_parameters(
        create_model("cnn1d", task, **{k: v for k, v in student.items() if k != "name"})
    )
    assert student["name"] == "cnn1d" and 0.07 < small / big < 0.14


# -- in a run -----------------------------------------------------------------------------------


@pytest.mark.slow  # a whole pipeline run
def test_distill_stage_in_a_run(tmp_path, vector_task):
    recipe = {
        "task": "digits",
        "model": {"name": "mlp", "width": 64},
        "train": {"epochs": 4, "lr": 3e-3},
        "evaluate": {"seeds": 2},
        "deploy": {"runtime": "torch"},
        "stages": [
            {"architecture": {"candidates": [{"name": "mlp", "width": 48}]}},
            {
                "distill": {
                    "student": {"name": "mlp", "width": 16},
                    "teacher": "ensemble",
                    "members": 2,
                    "gate": "non_inferiority",
                }
            },
        ],
    }
    result = tidian.run(recipe, store=f"sqlite:///{tmp_path / 'l.db'}")
    rows = {c["label"]: c for c in result.candidates}
    distilled = next(c for label, c in rows.items() if "distilled from ensemble of 2" in label)
    alone = rows["mlp(width=16) alone"]
    assert distilled["status"] == alone["status"] == "done"
    assert (
        distilled["decision"] in ("accepted", "rejected")
        and distilled["gate"]["test"] == "non_inferiority"
    )
    assert len(distilled["quality"]["per_seed"]) == 2
    store = tidian.Store(result.store)
    history = store.seed_results(distilled["id"])[0]["history"]
    (step,) = history["transform"]["steps"]
    assert step["distill"]["teacher"] == "ensemble"
    assert step["distill"]["teacher_scores"]["test"]["accuracy"] > 0.8


@pytest.mark.slow  # a whole pipeline run
def test_a_teacher_that_is_still_the_baseline_does_not_teach_a_copy_of_itself(tmp_path, capsys):
    """The stage meant to give a better teacher was rejected (an architecture that barely
    trains), so the incumbent is still the baseline — the student's own model: the distill
    stage says so and trains nothing, in the ledger and in the run's log."""
    recipe = {
        "task": "iris",
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 20, "lr": 0.01},
        "evaluate": {"seeds": 2},
        "deploy": {"runtime": "torch"},
        "stages": [
            {
                "architecture": {
                    "candidates": [{"name": "mlp", "hidden": [32]}],
                    "train": {"lr": 1e-7},
                }
            },
            {"distill": {"student": {"name": "mlp", "hidden": [8]}, "teacher": "incumbent"}},
        ],
    }
    path, url = tmp_path / "r.yaml", f"sqlite:///{tmp_path / 'l.db'}"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path), "--store", url])
    said = capsys.readouterr()
    assert exit_.value.code == 0
    store = tidian.Store(url)
    (run,) = store.runs()
    rows = store.candidates(run["id"])
    assert [(c["stage"], c["decision"]) for c in rows] == [
        ("baseline", "baseline"),
        ("architecture", "rejected"),
    ]
    stages = store.stages(run["id"])
    skipped = stages[2]["report"]["skipped"]
    assert "still the run's baseline (#1), the same model as the student (mlp(hidden=[8]))" in (
        skipped
    )
    assert stages[2]["incumbent_after"] == rows[0]["id"]
    assert f"skipped: {skipped}" in " ".join((said.out + said.err).split())
    step = collect(store, run["id"], analyses=False)["waterfall"][1]
    assert step["stage"] == "distill" and step["reason"] == f"skipped: {skipped}"
    assert not step["accepted"] and step["candidate"] is None


def test_with_augment_the_alone_candidate_sees_the_same_augmented_set():
    from tidian.stages.base import Context, Proposal
    from tidian.stages.distill import Distill

    task = make_task("vector")
    stage = Distill(DistillConfig(student={"name": "mlp", "width": 4}, augment={"copies": 2}))
    incumbent = Proposal("baseline", {"name": "mlp", "width": 16}, {"epochs": 2})
    distilled, alone = stage.run(incumbent, Context(task, "accuracy", (0, 1)))
    (step,) = alone.transform
    assert step["distill"]["alpha"] == 0.0 and step["distill"]["augment"] == {"copies": 2}
    assert distilled.transform[0]["distill"]["alpha"] == 0.7
    assert "alone, augment" in alone.label


def test_regression_students_follow_the_teachers_values(regression_task):
    torch.manual_seed(0)
    teacher = create_model("mlp", regression_task, width=16)
    fit(teacher, regression_task, {"epochs": 40, "lr": 1e-2}, seed=0)
    student, report = distill_(
        teacher,
        {"student": {"name": "mlp", "width": 8}, "alpha": 1.0},
        regression_task,
        train={"epochs": 60, "lr": 1e-2},
        seed=0,
    )
    assert report["teacher_scores"]["test"]["rmse"] < 0.3 * regression_task.test.y.std()
    gap = predict(student, regression_task.test.x) - predict(teacher, regression_task.test.x)
    # alpha 1: the labels are never seen, yet the student lands near the teacher (targets
    # are spread by about 32)
    assert float(np.sqrt((gap**2).mean())) < 0.3 * regression_task.test.y.std()
    _, info = distill_(
        None,
        {
            "student": {"name": "mlp", "width": 8},
            "teacher": "lightgbm",
            "lightgbm": {"n_estimators": 30},
        },
        regression_task,
        train={"epochs": 5},
        seed=0,
    )
    assert info["teacher_scores"]["test"]["rmse"] < 30  # targets have std ~32


# -- unlabeled transfer sets --------------------------------------------------------------------


def test_unlabeled_rows_train_on_the_soft_targets_only():
    torch.manual_seed(0)
    out = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3)
    index = torch.arange(4)
    y = torch.tensor([1, 2, 1, 0])
    labelled = torch.tensor([False, True, False, True])
    hard_only = DistillStep(F.cross_entropy, teacher, alpha=0.0, labelled=labelled)
    model = nn.Identity()  # the "model" returns its input: ``out`` is the logits
    expected = F.cross_entropy(out[[1, 3]], y[[1, 3]]) * 0.5  # labelled share of the batch
    torch.testing.assert_close(hard_only(model, out, y, index), expected)
    none = hard_only(model, out[[0, 2]], y[[0, 2]], torch.tensor([0, 2]))
    assert float(none) == 0.0
    none.backward()
    assert float(out.grad.abs().sum()) == 0.0  # no label, no alpha: nothing to learn
    soft_only = DistillStep(F.cross_entropy, teacher, alpha=1.0, labelled=labelled)
    torch.testing.assert_close(
        soft_only(model, out, y, index), soft_only(model, out, (y + 1) % 3, index)
    )


def test_an_unlabeled_transfer_set_carries_the_teachers_knowledge(tmp_path):
    """Few noisy labels (40 rows, 30% flipped) and 800 unlabeled inputs: the teacher's soft
    targets on the unlabeled rows must lift the student well above the same distillation
    without them, on the same seeds (measured: +11 points; the test asks for 4)."""
    task = _noisy_circles(n=80)
    rng = np.random.default_rng(9)
    np.savez(tmp_path / "pool.npz", x=rng.normal(size=(800, 2)).astype(np.float32))
    train = {"epochs": 60, "lr": 1e-2, "batch_size": 32}
    config = {"student": {"name": "mlp", "width": 32, "depth": 2}, "alpha": 0.5}
    gains = []
    for seed in range(3):
        plain, _ = distill_(_Oracle(), config, task, train=train, seed=seed)
        more, report = distill_(
            _Oracle(),
            {**config, "unlabeled": str(tmp_path / "pool.npz")},
            task,
            train=train,
            seed=seed,
        )
        assert report["transfer_rows"] == len(task.train) + 800
        gains.append(score(more, task)["accuracy"] - score(plain, task)["accuracy"])
    assert np.mean(gains) >= 0.04, gains


def test_unlabeled_files_are_checked_before_the_run(tmp_path):
    from tidian.stages.base import Context, Proposal
    from tidian.stages.distill import Distill

    task = make_task("vector")
    np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(
        ConfigError, match=r"distill.unlabeled .*wrong.npz.*samples of shape \(5,\)"
    ):
        Distill(DistillConfig(unlabeled=str(tmp_path / "wrong.npz"))).check(task)
    with pytest.raises(ConfigError, match="is not a file"):
        Distill(DistillConfig(unlabeled=str(tmp_path / "missing.npz"))).check(task)
    with pytest.raises(ConfigError, match="distill.unlabeled must be a path"):
        DistillConfig(unlabeled=3)
    np.savez(tmp_path / "ok.npz", x=np.zeros((5, 5), dtype=np.float32))
    stage = Distill(
        DistillConfig(student={"name": "mlp", "width": 4}, unlabeled=str(tmp_path / "ok.npz"))
    )
    stage.check(task)
    incumbent = Proposal("baseline", {"name": "mlp", "width": 16}, {"epochs": 2})
    distilled, alone = stage.run(incumbent, Context(task, "accuracy", (0,)))
    assert distilled.transform[0]["distill"]["unlabeled"] == str((tmp_path / "ok.npz").resolve())
    assert "unlabeled ok.npz" in distilled.label
    assert not alone.transform  # the student alone trains on the labels it has
