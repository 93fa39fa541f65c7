"""Export of a run's candidate and prediction on raw inputs with the task's preprocessing."""

import io
import json

import numpy as np
import pandas as pd
import pytest

import tidian.pipeline as pipeline
from tidian import DataError, load_task
from tidian.cli import main
from tidian.export import predict_file
from tidian.store import Store
from tidian.tasks.preprocess import Preprocess

pytest.importorskip("onnxruntime")


def _table(tmp_path):
    """A raw table: numeric columns on odd scales, a categorical column, one missing value."""
    rng = np.random.default_rng(0)
    n = 240
    y = rng.integers(0, 3, n)
    frame = pd.DataFrame(
        {
            "size": 1000 + 300 * y + rng.normal(0, 80, n),
            "weight": rng.normal(5, 2, n),
            "colour": np.where(y == 2, "red", rng.choice(["blue", "green"], n)),
            "label": np.array(["ant", "bee", "cat"])[y],
            "split": np.array(["train"] * 150 + ["val"] * 40 + ["test"] * 50),
        }
    )
    frame.loc[3, "weight"] = np.nan
    path = tmp_path / "animals.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_table_preprocessing_round_trips(tmp_path):
    path, frame = _table(tmp_path)
    task = load_task(str(path), target="label", split_column="split", missing="impute")
    pre = Preprocess.from_dict(json.loads(json.dumps(task.preprocess.to_dict())))
    test_rows = frame[frame.split == "test"]
    np.testing.assert_allclose(pre.apply(test_rows), task.test.x, atol=1e-6)
    assert pre.feature_names == list(task.feature_names)
    with pytest.raises(DataError, match=r"lacks the columns \['colour'\]"):
        pre.apply(test_rows.drop(columns="colour"))


@pytest.mark.slow  # a whole pipeline run
def test_predict_on_an_export_matches_the_evaluation(tmp_path):
    path, frame = _table(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "runs")
    recipe = {
        "task": {
            "path": str(path),
            "target": "label",
            "split_column": "split",
            "missing": "impute",
        },
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"epochs": 20, "lr": 0.01},
        "evaluate": {"seeds": 2, "margin": 0.05},
        "stages": [{"quantize": {"mode": "dynamic"}}],
    }
    result = pipeline.run(recipe, store=store)
    test_rows = frame[frame.split == "test"].drop(columns=["label", "split"])
    raw = tmp_path / "new.csv"
    test_rows.to_csv(raw, index=False)
    truth = frame[frame.split == "test"].label.to_numpy()
    url = store.url
    for row in result.candidates:
        for fmt in ("onnx", "safetensors"):
            out = tmp_path / f"export-{row['id']}-{fmt}"
            with pytest.raises(SystemExit) as done:
                main(
                    [
                        "export",
                        result.run_id,
                        "--candidate",
                        str(row["id"]),
                        "--out",
                        str(out),
                        "--format",
                        fmt,
                        "--store",
                        url,
                    ]
                )
            assert done.value.code in (0, None)
            predictions = predict_file(out, raw)
            accuracy = float((predictions.prediction.to_numpy() == truth).mean())
            if fmt == "onnx" or row["stage"] == "baseline":
                # what the ledger recorded for the first seed, on the runtime it deploys on
                assert accuracy == pytest.approx(row["quality"]["per_seed"][0])
            probs = predictions[["p_ant", "p_bee", "p_cat"]].to_numpy()
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    (quant,) = [r for r in result.candidates if r["stage"] == "quantize"]
    manifest = json.loads((tmp_path / f"export-{quant['id']}-onnx" / "manifest.json").read_text())
    assert manifest["quantized"] is True and manifest["task"]["class_names"] == [
        "ant",
        "bee",
        "cat",
    ]
    stored = Store(url).get_candidate(quant["id"])["cost"]["export_check"]
    assert stored["argmax_agreement"] > 0.9 and stored["samples"] == 50


@pytest.mark.slow  # a whole pipeline run
def test_predict_on_images_and_sequences_takes_raw_arrays(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "runs")
    recipe = {
        "task": "digits",
        "model": {"name": "linear"},
        "train": {"epochs": 5, "lr": 0.01},
        # no holdout: the test rows below are the built-in task's split, rebuilt from its seed
        "evaluate": {"seeds": 2, "holdout": 0},
    }
    result = pipeline.run(recipe, store=store)
    out = tmp_path / "digits-export"
    main_args = ["export", result.run_id, "--out", str(out), "--store", store.url]
    with pytest.raises(SystemExit):
        main(main_args)
    from sklearn.datasets import load_digits

    from tidian.tasks.task import split_indices

    digits = load_digits()
    raw = tmp_path / "raw.npz"
    np.savez(raw, x=digits.data)  # raw 0..16 grey levels, flattened rows
    predictions = predict_file(out, raw)
    assert len(predictions) == len(digits.data)
    # The built-in task's test rows, through the saved scaling: the ledger's first-seed score.
    _, _, test = split_indices(digits.target, classes=True, val_size=0.2, test_size=0.2, seed=0)
    hits = predictions.prediction.to_numpy()[test].astype(int) == digits.target[test]
    assert float(hits.mean()) == pytest.approx(result.incumbent["quality"]["per_seed"][0])


@pytest.mark.slow  # a whole pipeline run
def test_export_errors_are_clear(tmp_path, capsys):
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "runs")
    result = pipeline.run(
        {
            "task": "iris",
            "model": {"name": "linear"},
            "train": {"epochs": 2},
            "evaluate": {"seeds": 2},
        },
        store=store,
    )
    blocked = tmp_path / "file"
    blocked.write_text("x")
    for args, message in [
        (["export", result.run_id, "--out", str(blocked / "sub")], "cannot write to"),
        (
            ["export", result.run_id, "--out", str(tmp_path / "o"), "--format", "pkl"],
            "format must be one of",
        ),
        (["export", "nope", "--out", str(tmp_path / "o")], "nope"),
        (["predict", str(tmp_path), str(blocked)], "not a tidian export"),
    ]:
        with pytest.raises(SystemExit) as done:
            main([*args, "--store", store.url] if args[0] == "export" else args)
        assert done.value.code == 2
        assert message in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow  # a whole pipeline run
def test_predict_on_raw_text_lines(tmp_path):
    rng = np.random.default_rng(0)
    good, bad = ["great", "lovely", "fine"], ["awful", "poor", "broken"]
    rows = []
    for i in range(120):
        label = i % 2
        words = [*rng.choice(good if label else bad, 3).tolist(), "the", "item"]
        rows.append({"text": " ".join(words), "label": ["neg", "pos"][label]})
    path = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "runs")
    recipe = {
        "task": {"path": str(path), "text": "text", "target": "label"},
        "model": {"name": "mlp", "hidden": [8], "embed_dim": 8},
        "train": {"epochs": 30, "lr": 0.02},
        "evaluate": {"seeds": 2},
    }
    result = pipeline.run(recipe, store=store)
    out = tmp_path / "export"
    with pytest.raises(SystemExit):
        main(["export", result.run_id, "--out", str(out), "--store", store.url])
    lines = tmp_path / "new.txt"
    lines.write_text("Great, LOVELY item!\nbroken and awful\nan unseen word\n")
    predictions = predict_file(out, lines)
    assert predictions.prediction.tolist()[:2] == ["pos", "neg"] and len(predictions) == 3


def test_an_export_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import os
    import shutil

    import tidian.runs as runs
    from tidian.runs import export_candidate

    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "runs")
    recipe = {
        "task": "iris",
        "model": {"name": "linear"},
        "train": {"epochs": 2},
        "evaluate": {"seeds": 2},
        "stages": [{"architecture": {"candidates": [{"name": "mlp", "hidden": [8]}]}}],
    }
    result = pipeline.run(recipe, store=store)
    first, second = (c["id"] for c in result.candidates)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=load_task("iris").test.x[:5] * 0 + 5.0)
    out, other = tmp_path / "deploy", tmp_path / "other"
    before = os.umask(0o022)
    try:
        export_candidate(store, result.run_id, first, out)
        export_candidate(store, result.run_id, second, other)
    finally:
        os.umask(before)
    assert (out / "model.onnx").stat().st_mode & 0o777 == 0o644  # the umask's mode, not 0600
    saved = {name: (out / name).read_bytes() for name in os.listdir(out)}
    predicted = predict_file(out, inputs)

    # Stopped half-way over the old export: the old one is still there, whole; nothing left.
    def stopped(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "file_digest", stopped)
    with pytest.raises(KeyboardInterrupt):
        export_candidate(store, result.run_id, second, out)
    monkeypatch.undo()
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == saved
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".deploy")) == []
    pd.testing.assert_frame_equal(predict_file(out, inputs), predicted)

    # A model beside another export's manifest is refused, as is a truncated manifest.
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    shutil.copyfile(other / "model.onnx", mixed / "model.onnx")
    with pytest.raises(DataError, match="mixes two exports"):
        predict_file(mixed, inputs)
    (mixed / "manifest.json").write_text((out / "manifest.json").read_text()[:40])
    with pytest.raises(DataError, match="cannot be read"):
        predict_file(mixed, inputs)

    # Replaced whole: the new candidate's files and manifest, nothing of the old.
    manifest = export_candidate(store, result.run_id, second, out, fmt="safetensors")
    assert manifest["candidate"] == second and "model.onnx" not in os.listdir(out)
    assert predict_file(out, inputs).shape[0] == 5
    # A folder with files of its own is not an export to replace.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a tidian export"):
        export_candidate(store, result.run_id, second, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow  # a whole pipeline run
def test_predict_leaves_out_rows_it_cannot_take_and_names_their_lines(tmp_path, capsys):
    path, frame = _table(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "runs")
    recipe = {
        "task": {"path": str(path), "target": "label", "split_column": "split", "missing": "drop"},
        "model": {"name": "linear"},
        "train": {"epochs": 3},
        "evaluate": {"seeds": 2},
    }
    result = pipeline.run(recipe, store=store)
    out = tmp_path / "export"
    with pytest.raises(SystemExit):
        main(["export", result.run_id, "--out", str(out), "--store", store.url])
    rows = frame[frame.split == "test"].drop(columns=["label", "split"]).reset_index(drop=True)
    whole = predict_file(out, _csv(tmp_path / "whole.csv", rows))
    holes = rows.copy()
    holes.loc[1, "size"] = np.nan
    holes.loc[4, "weight"] = np.inf
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["predict", str(out), str(_csv(tmp_path / "holes.csv", holes))])
    assert done.value.code in (0, None)
    printed = capsys.readouterr()
    got = pd.read_csv(io.StringIO(printed.out))
    assert len(got) == len(rows)  # one output row per input row
    bad = got.prediction.isna()
    assert list(np.flatnonzero(bad)) == [1, 4]
    pd.testing.assert_frame_equal(
        got[~bad].reset_index(drop=True), whole[~bad].reset_index(drop=True), check_dtype=False
    )
    err = " ".join(printed.err.split())
    assert "2 of 50 rows not predicted" in err
    assert "line 3: missing or infinite size" in err and "line 6: missing or infinite weight" in err
    assert "missing='impute'" in err
    with pytest.raises(DataError, match="no row of .* can be predicted"):
        predict_file(out, _csv(tmp_path / "all.csv", holes.assign(size=np.nan)))


def _csv(path, frame):
    frame.to_csv(path, index=False)
    return path


def _saved(tmp_path):
    import tidian

    task = tidian.load_task("iris")
    folder = tmp_path / "model"
    tidian.save_model(tidian.create_model("linear", task), folder)
    return folder


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:40], "is not a readable safetensors file"),  # truncated
        (lambda b: (10**12).to_bytes(8, "little") + b[8:], "is not a readable safetensors"),
        (lambda b: b[:8] + b"{not json" + b[17:], "is not a readable safetensors file"),
    ],
)
def test_a_damaged_weights_file_is_a_clear_error(tmp_path, damage, message):
    from tidian import load_model

    folder = _saved(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(DataError, match=message):
        load_model(folder)


def test_a_model_description_with_an_unknown_key_is_a_clear_error(tmp_path):
    from tidian import load_model

    folder = _saved(tmp_path)
    doc = json.loads((folder / "tidian.json").read_text())
    doc["model"]["colour"] = "red"
    (folder / "tidian.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="the model entry is malformed"):
        load_model(folder)


def test_a_damaged_manifest_or_an_object_array_is_a_clear_error(tmp_path):
    from tidian.export import read_inputs

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "tidian-export/1", "file": "m"}))
    with pytest.raises(DataError, match=r"lacks \['task'\]; it is damaged"):
        predict_file(folder, tmp_path / "x.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="cannot be read as an NPZ of numeric arrays"):
        read_inputs(tmp_path / "objects.npz", {"task": {"input_kind": "vector"}})
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    with pytest.raises(DataError, match="name the input array 'x'"):
        read_inputs(tmp_path / "two.npz", {"task": {"input_kind": "vector"}})


@pytest.mark.parametrize(
    "manifest",
    [
        {"task": 5, "file": "model.onnx"},
        {"task": {"input_kind": "vector"}, "file": "model.onnx"},
        {"task": {"input_kind": "vector", "target_kind": "classes", "preprocess": 3}, "file": "m"},
        {
            "task": {"input_kind": "vector", "target_kind": "classes", "preprocess": {}},
            "file": "../../etc/passwd",  # never a file outside the export folder
        },
    ],
)
def test_a_manifest_not_as_export_writes_it_is_refused(tmp_path, manifest):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "tidian-export/1", **manifest}))
    with pytest.raises(DataError, match="it is damaged|is damaged"):
        predict_file(folder, tmp_path / "x.npz")
