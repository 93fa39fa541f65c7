"""The pipeline end to end on tiny recipes: decisions, ledger, resume after SIGKILL, CLI."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
import yaml

import tidian.pipeline as pipeline
from conftest import iris_recipe, run_cli, running
from tidian import ConfigError, DataError, paired_compare
from tidian.cli import _verdict
from tidian.store import Store, stale

TINY = {
    "task": {"name": "iris"},
    "model": {"name": "linear"},
    "train": {"epochs": 3, "lr": 0.01},
    "evaluate": {"seeds": 3},
    "stages": [
        {"train_variants": {"candidates": [{"epochs": 60}, {"lr": 0.0001}]}},
        {
            "architecture": {
                "candidates": [{"name": "mlp", "hidden": [16]}],
                "train": {"epochs": 60},
            }
        },
    ],
}


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'ledger.db'}")


@pytest.mark.slow  # a whole pipeline run
def test_tiny_run_gates_records_and_saves(store):
    result = pipeline.run(TINY, store=store)
    assert result.status == "finished"
    rows = {c["label"]: c for c in result.candidates}
    assert list(rows) == ["baseline", "epochs=60", "lr=0.0001", "name=mlp, hidden=[16]"]
    assert rows["baseline"]["decision"] == "baseline"
    assert rows["lr=0.0001"]["decision"] == "rejected"
    for row in result.candidates:
        assert row["status"] == "done" and len(row["quality"]["per_seed"]) == 3
        assert row["cost"]["params"] > 0 and row["cost"]["latency_ms"] > 0
        assert os.path.exists(os.path.join(row["artifact"], "model.safetensors"))
        if row["stage"] != "baseline":
            assert row["gate"]["n"] == 3 and row["reason"].startswith(row["decision"])
    # the incumbent is an accepted candidate (or the baseline when nothing was accepted)
    assert result.incumbent["decision"] in ("accepted", "baseline")
    accepted = [r for r in result.candidates if r["decision"] == "accepted"]
    if accepted:
        assert result.incumbent["id"] == accepted[-1]["id"] or result.incumbent in accepted
    # lineage: stage 2 candidates descend from the incumbent after stage 1
    stage1_winner = (
        result.candidates[0]["id"]
        if not any(r["decision"] == "accepted" for r in result.candidates[1:3])
        else next(r["id"] for r in result.candidates[1:3] if r["decision"] == "accepted")
    )
    assert rows["name=mlp, hidden=[16]"]["parent_id"] == stage1_winner
    assert result.pareto and set(result.pareto) <= {r["id"] for r in result.candidates}

    # every seed keeps its 30 test rows' pseudo-values, and the gate counts them
    def row_table(row):
        results = store.seed_results(row["id"])
        assert all(len(results[s]["rows"]["accuracy"]) == 30 for s in results)
        return [results[s]["rows"]["accuracy"] for s in row["quality"]["units"]]

    cand = rows["epochs=60"]
    crossed = paired_compare(
        rows["baseline"]["quality"]["per_seed"],
        cand["quality"]["per_seed"],
        rows=(row_table(rows["baseline"]), row_table(cand)),
    )
    assert crossed.row_groups == 30 and cand["gate"]["low"] == pytest.approx(crossed.low)
    assert "test rows" in cand["reason"] and "of the variance" in cand["reason"]
    doc = result.to_dict()
    assert doc["incumbent"] == result.incumbent["id"]
    with pytest.raises(DataError, match="already finished"):
        pipeline.run(store=store, resume=result.run_id)


def test_a_fixed_test_set_is_gated_on_its_seeds_alone(store):
    """``evaluate.test_rows: fixed``: the test rows are all that is claimed about, so no seed
    keeps their pseudo-values and the gate's interval is the seeds' t-interval."""
    recipe = {
        **TINY,
        "evaluate": {"seeds": 3, "test_rows": "fixed"},
        "stages": [{"train_variants": {"candidates": [{"epochs": 60}]}}],
    }
    result = pipeline.run(recipe, store=store)
    base, cand = result.candidates
    assert all(r["rows"] is None for r in store.seed_results(cand["id"]).values())
    plain = paired_compare(base["quality"]["per_seed"], cand["quality"]["per_seed"])
    assert cand["gate"]["low"] == pytest.approx(plain.low) and "test rows" not in cand["reason"]


@pytest.mark.slow  # a whole pipeline run
def test_constraints_keep_a_violating_candidate_out(store):
    recipe = {
        **TINY,
        "constraints": {"max_params": 20},
        "stages": [
            {
                "architecture": {
                    "candidates": [{"name": "mlp", "hidden": [64]}],
                    "train": {"epochs": 60},
                }
            }
        ],
    }
    result = pipeline.run(recipe, store=store)
    mlp = result.candidates[1]
    assert mlp["decision"] == "rejected" and "violates constraints (params" in mlp["reason"]
    assert result.incumbent["label"] == "baseline"
    assert mlp["id"] not in result.pareto


def test_bad_recipe_writes_nothing(store):
    with pytest.raises(ConfigError, match="unknown model"):
        pipeline.run({**TINY, "model": {"name": "nope"}}, store=store)
    assert store.runs() == []
    with pytest.raises(DataError, match="no run"):
        pipeline.run(store=store, resume="missing")


def _count(db, sql):
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # the run has not created its tables yet
        return 0


def _start(tmp_path, recipe, *args):
    """The CLI running ``recipe`` in a subprocess on a fresh SQLite ledger: (process, url, db)."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidian.cli", "run", str(path), "--store", url, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background (`pytest … &`) inherits SIGINT *ignored*, and
        # Python then never installs its Ctrl-C handler: restore the default for the child.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return proc, url, db


def _wait_for(db, until_sql, proc):
    """Wait until ``until_sql`` counts > 0 (however busy the machine), failing the test if the
    run ends first or nothing happens for ten minutes."""
    deadline = time.time() + 600
    while _count(db, until_sql) < 1:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before: {until_sql}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"nothing came in ten minutes: {until_sql}")
        time.sleep(0.05)


def _start_and_signal(tmp_path, recipe, until_sql, sig, *args):
    """Run the CLI on ``recipe`` in a subprocess; send ``sig`` once ``until_sql`` counts > 0."""
    proc, url, db = _start(tmp_path, recipe, *args)
    _wait_for(db, until_sql, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return url, proc.returncode, err


@pytest.mark.slow  # a whole pipeline run
def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path, capsys):
    recipe = {
        **TINY,
        "model": {"name": "mlp", "hidden": [64, 64]},
        "train": {"epochs": 150, "lr": 0.01, "batch_size": 16},
    }
    proc, url, db = _start(tmp_path, recipe)
    _wait_for(db, "SELECT count(*) FROM candidates WHERE status='done'", proc)
    store = Store(url)
    (run,) = store.runs()
    with pytest.raises(DataError, match=f"run '{run['id']}' is still running \\(pid {proc.pid}"):
        pipeline.run(store=store, resume=run["id"])  # a live run is not taken over
    proc.kill()
    proc.wait()
    (run,) = store.runs()
    before = {c["id"]: store.seed_results(c["id"]) for c in store.candidates(run["id"])}
    assert run["status"] == "running"  # killed: nobody could mark it
    assert stale(run) == f"its driver (pid {proc.pid} on {run['driver']['host']}) is gone"
    _, out, _ = run_cli(capsys, "runs", "--store", url)
    assert "stale:" in out  # ...and `tidian runs` says so
    _, out, _ = run_cli(capsys, "runs", "--store", url, "--json")
    assert json.loads(out)[0]["stale"] == stale(run)
    assert 1 <= sum(c["status"] == "done" for c in store.candidates(run["id"])) < 4

    result = pipeline.run(store=store, resume=run["id"])
    assert result.status == "finished"
    labels = [c["label"] for c in result.candidates]
    assert len(labels) == len(set(labels)) == 4
    for cand in result.candidates:
        seeds = store.seed_results(cand["id"])
        assert sorted(seeds) == [0, 1, 2]
        for seed, row in before.get(cand["id"], {}).items():  # finished seeds were kept
            assert seeds[seed]["id"] == row["id"] and seeds[seed]["seconds"] == row["seconds"]


def _progress_lines(out: str) -> list[str]:
    """The timed log lines of ``tidian run``'s output, without their time stamps."""
    return [line[9:].strip() for line in out.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]


@pytest.mark.slow  # a whole pipeline run
def test_cli_end_to_end_with_json(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, _ = run_cli(capsys, "recipe", "check", str(path))
    assert code == 0 and "ok" in out
    code, out, _ = run_cli(capsys, "run", str(path), "--store", url)
    assert code == 0 and "baseline" in out and "final" in out
    log = _progress_lines(out)  # output not a terminal: plain lines as things finish
    assert re.fullmatch(r"run [0-9a-f]{12} started: iris, metric accuracy, 3 seeds .*", log[0])
    seeds = [line for line in log if re.fullmatch(r"\[\d+/\d+\] #\d seed \d: .*", line)]
    assert len(seeds) == 4 * 3  # one line per finished seed of each candidate
    assert re.fullmatch(r"\[1/3\] #1 seed 0: accuracy \d\.\d{4} \(\d+\.\d s\)", seeds[0])
    for cid in range(2, 5):  # each candidate's summary and the gate's decision, in order
        summary = log.index(next(x for x in log if x.startswith(f"#{cid} ") and "[" in x))
        decision = next(x for x in log if re.match(rf"#{cid} (accepted|rejected): gain ", x))
        assert summary < log.index(decision)
    assert [x.split(" done;")[0] for x in log if " done; incumbent #" in x] == [
        "stage 0 baseline",
        "stage 1 train_variants",
        "stage 2 architecture",
    ]
    code, out, _ = run_cli(capsys, "runs", "--store", url, "--json")
    runs = json.loads(out)
    assert len(runs) == 1 and set(runs[0]) >= {"run_id", "status", "created", "recipe"}
    run_id = runs[0]["run_id"]
    assert runs[0]["task"] == "iris" and runs[0]["metric"] == "accuracy"
    final = Store(url).get_candidate(runs[0]["incumbent"])["quality"]
    assert runs[0]["final"] == final["mean"]
    assert runs[0]["gain"]["low"] <= runs[0]["gain"]["mean"] <= runs[0]["gain"]["high"]
    for argv in (["runs"], ["show", run_id]):  # 80 columns (a pipe): nothing is cut
        code, out, _ = run_cli(capsys, *argv, "--store", url)
        assert code == 0 and "…" not in out and run_id in out
        assert max(len(line) for line in out.splitlines()) <= 80
    assert f"{final['mean']:.4f}" in out and "name=mlp" in out and "hidden=[16]" in out
    code, out, _ = run_cli(capsys, "show", run_id, "--store", url, "--json")
    doc = json.loads(out)
    assert set(doc) >= {"run_id", "status", "incumbent", "candidates"}
    for cand in doc["candidates"]:
        assert set(cand) >= {"id", "parent", "stage", "decision", "reason", "quality", "cost"}
        assert set(cand["quality"]) >= {"metric", "mean", "ci_low", "ci_high", "per_seed"}
        assert set(cand["cost"]) >= {"params", "bytes", "latency_ms"}
    code, out, _ = run_cli(capsys, "compare", "1", "4", "--store", url)
    assert code == 0 and "accuracy" in out and "CI" in out
    code, out, _ = run_cli(
        capsys, "export", run_id, "--out", str(tmp_path / "best"), "--store", url
    )
    assert code == 0 and (tmp_path / "best" / "model.onnx").exists()
    assert (tmp_path / "best" / "manifest.json").exists()
    code, out, _ = run_cli(
        capsys,
        "export",
        run_id,
        "--out",
        str(tmp_path / "st"),
        "--format",
        "safetensors",
        "--store",
        url,
    )
    assert code == 0 and (tmp_path / "st" / "model.safetensors").exists()
    code, _, err = run_cli(capsys, "run", "--resume", run_id, "--store", url)
    assert code == 2 and "already finished" in err
    code, _, err = run_cli(
        capsys, "run", str(path), "--store", url, "--report", str(tmp_path / "no" / "r.html")
    )
    assert code == 2 and "does not exist" in " ".join(err.split())
    assert len(Store(url).runs()) == 1  # the bad report path was caught before the run
    code, out, _ = run_cli(capsys, "recipe", "schema")
    assert "train_variants" in json.dumps(json.loads(out)["properties"]["stages"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "task: iris\nmodel: {name: mlp}\nstages:\n  - architecture: {candidates: [{name: cnn}]}\n"
    )
    code, _, err = run_cli(capsys, "recipe", "check", str(bad))
    assert code == 2 and "stages[0].architecture.candidates[0].name" in " ".join(err.split())


def test_ctrl_c_marks_the_run_interrupted(tmp_path):
    recipe = {
        **TINY,
        "train": {"epochs": 400, "lr": 0.01, "batch_size": 8},
        "model": {"name": "mlp", "hidden": [64, 64]},
    }
    url, code, err = _start_and_signal(
        tmp_path, recipe, "SELECT count(*) FROM seed_results", signal.SIGINT
    )
    assert code == 130 and "--resume" in err
    (run,) = Store(url).runs()
    assert run["status"] == "interrupted"


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = set(), [pid]
    while todo:
        above = todo.pop()
        below = [p for p, parent in parents.items() if parent == above]
        found.update(below)
        todo.extend(below)
    return found


@pytest.mark.slow  # two whole pipeline runs and a resume
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_interrupts_the_run_and_ends_every_worker(tmp_path, sig):
    recipe = {
        **TINY,
        "model": {"name": "mlp", "hidden": [64, 64]},
        "train": {"epochs": 150, "lr": 0.01, "batch_size": 16},
    }
    proc, url, db = _start(tmp_path, recipe, "--jobs", "2")
    _wait_for(db, "SELECT count(*) FROM seed_results", proc)
    workers = _descendants(proc.pid)
    assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig and "interrupted" in err and "--resume" in err
    store = Store(url)
    (run,) = store.runs()
    assert run["status"] == "interrupted"
    # No process of the run outlives it (waited for, not slept on: the tracker ends on EOF).
    deadline = time.time() + 60
    while any(running(p) for p in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not [p for p in workers if running(p)]
    if sig != signal.SIGTERM:
        return  # (the resume below is the same for either signal)
    resumed = pipeline.run(store=store, resume=run["id"], jobs=2)
    whole = Store(f"sqlite:///{tmp_path / 'whole.db'}")  # the same recipe file, not stopped
    reference = pipeline.run(tmp_path / "recipe.yaml", store=whole, jobs=2)
    assert resumed.status == "finished"
    assert [c["label"] for c in resumed.candidates] == [c["label"] for c in reference.candidates]
    for a, b in zip(resumed.candidates, reference.candidates):
        assert a["quality"]["per_seed"] == b["quality"]["per_seed"]
        assert a["decision"] == b["decision"]


@pytest.mark.slow  # a whole pipeline run
def test_worker_processes_give_the_same_ledger(tmp_path):
    serial = pipeline.run(TINY, store=Store(f"sqlite:///{tmp_path / 'a.db'}"))
    parallel = pipeline.run(TINY, store=Store(f"sqlite:///{tmp_path / 'b.db'}"), jobs=2)
    assert [c["label"] for c in parallel.candidates] == [c["label"] for c in serial.candidates]
    for a, b in zip(serial.candidates, parallel.candidates):
        assert a["quality"]["per_seed"] == b["quality"]["per_seed"]
        assert a["decision"] == b["decision"]


def test_unloadable_task_or_wrong_metric_writes_nothing(store, tmp_path):
    with pytest.raises(DataError, match="neither a built-in task"):
        pipeline.run(
            {**TINY, "task": {"path": str(tmp_path / "missing.csv"), "target": "y"}}, store=store
        )
    with pytest.raises(ConfigError, match="metric 'rmse' is for values"):
        pipeline.run({**TINY, "evaluate": {"seeds": 2, "metric": "rmse"}}, store=store)
    assert store.runs() == []


@pytest.mark.parametrize(("jobs", "threads"), [("1", "1"), ("2", "2")])
def test_threads_per_job_are_set_recorded_with_every_seed_and_shown(
    tmp_path, capsys, jobs, threads
):
    path = iris_recipe(tmp_path / "r.yaml")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    before = torch.get_num_threads()
    code, _, _ = run_cli(
        capsys, "run", str(path), "--store", url, "--jobs", jobs, "--threads", threads
    )
    assert code in (0, None) and torch.get_num_threads() == before  # restored in this process
    store = Store(url)
    (run,) = store.runs()
    (baseline,) = store.candidates(run["id"])
    seeds = store.seed_results(baseline["id"]).values()
    assert [s["history"]["worker"]["threads"] for s in seeds] == [int(threads)] * 2
    code, out, _ = run_cli(capsys, "show", run["id"], "--store", url)
    assert f"{jobs} job(s) at a time, {threads} thread(s) each" in " ".join(out.split())
    code, _, _ = run_cli(capsys, "run", str(path), "--store", url, "--threads", "0")
    assert code == 2


def test_a_stage_that_cannot_apply_to_the_recipes_model_is_refused_before_training(tmp_path):
    """Structured pruning of a model it cannot prune (mixture-of-experts layers) fails at the
    check, naming the stage, with nothing trained and no run row; after a stage that may
    change the model's class (architecture) it is left to the stage."""
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    moe = {"name": "mlp", "hidden": [8], "moe_experts": 2}
    recipe = {
        "task": "iris",
        "model": moe,
        "train": {"epochs": 1},
        "evaluate": {"seeds": 2},
        "stages": [
            {"train_variants": {"candidates": [{"lr": 0.1}]}},
            {"prune": {"amount": 0.5, "finetune_epochs": 1}},
        ],
    }
    with pytest.raises(
        ConfigError,
        match=r"stages\[1\]\.prune: structured pruning of "
        r"mixture-of-experts layers is not supported.*found before training",
    ):
        pipeline.run(recipe, store=store)
    assert store.runs() == []
    # unstructured pruning of the same model is fine, and so is structured pruning reached
    # only after an architecture search (the model it gets is not known before the run)
    for stages in (
        [{"prune": {"amount": 0.5, "structured": False, "finetune_epochs": 1}}],
        [
            {"architecture": {"candidates": [{"name": "mlp", "hidden": [8]}]}},
            {"prune": {"amount": 0.5, "finetune_epochs": 1}},
        ],
    ):
        parsed = pipeline.load_recipe({**recipe, "stages": stages})
        pipeline._check_against_task(parsed, parsed.load_task())


def test_a_task_without_test_rows_is_refused_before_anything_trains(store, tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "label": rng.choice(["x", "y"], 60),
            "split": ["train"] * 45 + ["val"] * 15,  # no row marked test
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    x = rng.normal(size=(50, 3)).astype("float32")
    np.savez(tmp_path / "t.npz", x_train=x, y_train=np.arange(50) % 2, x_test=x[:0], y_test=[])
    tasks = [
        {"path": str(tmp_path / "t.csv"), "target": "label", "split_column": "split"},
        {"name": "iris", "test_size": 0},
        {"path": str(tmp_path / "t.npz")},
    ]
    for task in tasks:
        recipe = {"task": task, "model": {"name": "linear"}, "train": {"epochs": 1}}
        with pytest.raises(DataError, match="has no test rows"):
            pipeline.run(recipe, store=store)
    assert store.runs() == []  # refused before the ledger got a row
    with pytest.raises(DataError, match="has no test rows"):
        import tidian

        tidian.evaluate("linear", tidian.load_task("iris", test_size=0), {"epochs": 1}, seeds=2)


def test_a_text_column_that_is_also_the_target_is_refused(tmp_path):
    import tidian

    (tmp_path / "t.csv").write_text("label,other\n" + "good,1\nbad,2\n" * 20)
    with pytest.raises(DataError, match="'label' is both the text and the target"):
        tidian.load_task(str(tmp_path / "t.csv"), text="label", target="label")


def test_labels_a_split_cannot_hold_are_named_and_refused_before_training(store, tmp_path):
    import numpy as np
    import pandas as pd

    import tidian

    rng = np.random.default_rng(0)
    labels = ["ok"] * 40 + ["fraud"] * 19 + ["chargeback"]
    frame = pd.DataFrame({"a": rng.normal(size=60), "label": labels})
    frame.to_csv(tmp_path / "rare.csv", index=False)
    with pytest.raises(DataError, match=r"the class\(es\) \['chargeback'\] have a single row"):
        tidian.load_task(str(tmp_path / "rare.csv"), target="label")
    frame["split"] = (["train"] * 30 + ["val"] * 10) + (["train"] * 10 + ["test"] * 10)
    frame.loc[50:, "label"] = "refund"  # only in the test rows
    frame.to_csv(tmp_path / "unseen.csv", index=False)
    task = {"path": str(tmp_path / "unseen.csv"), "target": "label", "split_column": "split"}
    recipe = {"task": task, "model": {"name": "linear"}, "train": {"epochs": 1}}
    with pytest.raises(DataError, match=r"10 test row\(s\) carry label\(s\) \['refund'\]"):
        pipeline.run(recipe, store=store)
    assert store.runs() == []


@pytest.mark.slow  # a whole pipeline run
def test_a_regression_is_gated_at_a_percent_of_its_baseline_by_default(store):
    recipe = {
        "task": {"name": "synthetic", "kind": "regression", "n_samples": 300, "noise": 20.0},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 5, "lr": 0.01},
        "evaluate": {"seeds": 2},
        "stages": [{"quantize": {"mode": "fp16"}}],
    }
    result = pipeline.run(recipe, store=store)
    baseline, quantized = result.candidates[0], result.candidates[1]
    rmse = sum(baseline["quality"]["per_seed"]) / 2
    margin = float(re.search(r"margin ([0-9.e+-]+)", quantized["reason"]).group(1))
    assert baseline["quality"]["metric"] == "rmse"
    assert margin == pytest.approx(0.01 * rmse, rel=1e-3)  # 1%, not 0.01 rmse units
    # written as points, an rmse margin cannot be read: refused before anything trains
    with pytest.raises(ConfigError, match="points are hundredths of a fraction metric"):
        pipeline.run({**recipe, "evaluate": {"seeds": 2, "margin": "1pt"}}, store=store)
    assert len(store.runs()) == 1


def test_a_tolerance_in_the_old_points_reading_is_refused_before_training(store):
    recipe = {**TINY, "stages": [{"compress": {"tolerance": 0.5, "trials": 2}}]}
    with pytest.raises(ConfigError, match=r"stages\[0\].compress.tolerance: 0.5 in accuracy"):
        pipeline.run(recipe, store=store)
    assert store.runs() == []


@pytest.mark.parametrize(
    "stage", [{"tune": {"trials": 2, "space": {"lr": {"float": [0.001, 0.1]}}}}, {"calibrate": {}}]
)
def test_a_stage_that_chooses_on_validation_needs_validation_rows(store, stage):
    recipe = {**TINY, "task": {"name": "iris", "val_size": 0}, "stages": [stage]}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.\w+: chooses on the validation split"):
        pipeline.run(recipe, store=store)
    assert store.runs() == []  # refused before the baseline trained


@pytest.mark.slow  # a whole pipeline run
def test_of_candidates_equal_in_quality_the_cheaper_is_chosen_and_it_is_said(store):
    """Two architectures both clearly better than a barely trained baseline and alike on
    validation: the one 370 times smaller and faster on ONNX Runtime becomes the incumbent,
    even listed second (the best validation mean alone would pick the first)."""
    recipe = {
        "task": "iris",
        "model": {"name": "linear"},
        "train": {"epochs": 1, "lr": 0.00001},
        "evaluate": {"seeds": 4, "confidence": 0.9},
        "deploy": {"runtime": "onnxruntime"},
        "stages": [
            {
                "architecture": {
                    "candidates": [
                        {"name": "mlp", "hidden": [256, 256]},
                        {"name": "mlp", "hidden": [8]},
                    ],
                    "train": {"epochs": 60, "lr": 0.01},
                }
            }
        ],
    }
    result = pipeline.run(recipe, store=store)
    big, small = (c for c in result.candidates if c["stage"] == "architecture")
    assert big["decision"] == small["decision"] == "accepted"
    assert big["quality"]["val_mean"] >= small["quality"]["val_mean"]  # first on validation
    assert result.incumbent["id"] == small["id"]
    assert (
        f"; not chosen: #{small['id']} has the same accuracy on validation as #{big['id']}"
        in (big["reason"])
    )
    assert "; chosen: the same accuracy on validation" in small["reason"]
    assert "× smaller on onnxruntime" in small["reason"]


@pytest.mark.slow  # two whole pipeline runs
def test_a_stage_chooses_on_validation_and_gates_its_choice_alone(tmp_path):
    """Three candidates: by default the one with the best validation mean is the only one
    gated, alone at the full level, and the others say which was chosen instead; with
    ``select: holm`` every one is gated on test with Holm's correction, the adjusted
    interval beside the plain one."""
    stage = {"train_variants": {"candidates": [{"epochs": 60}, {"epochs": 30}, {"lr": 0.0001}]}}
    base = {**TINY, "stages": [stage]}
    runs = {
        select: pipeline.run(
            {**base, "evaluate": {"seeds": 3, "select": select}},
            store=Store(f"sqlite:///{tmp_path / select}.db", artifacts=tmp_path / select),
        )
        for select in ("validation", "holm")
    }
    rows = [c for c in runs["validation"].candidates if c["stage"] == "train_variants"]
    best = max(rows, key=lambda r: r["quality"]["val_mean"])
    assert best["quality"]["val_mean"] > runs["validation"].baseline["quality"]["val_mean"]
    assert "; chosen on validation from 3 candidates and gated alone" in best["reason"]
    assert best["gate"]["p_adjusted"] == best["gate"]["p_value"]  # no correction
    assert best["gate"]["adjusted_low"] is None and "Holm" not in best["reason"]
    for row in rows:
        if row is not best:
            assert row["decision"] == "rejected"
            assert row["reason"].startswith(
                f"rejected: not chosen: #{best['id']} has the better validation accuracy "
                f"({best['quality']['val_mean']:.4g} against {row['quality']['val_mean']:.4g}); "
                "alone on test: gain "
            )
            assert "not chosen" in _verdict(row) and f"#{best['id']}" in _verdict(row)
    # 60 epochs gain about +33 points, accepted alone at the full α
    assert best["decision"] == "accepted" and runs["validation"].incumbent["id"] == best["id"]
    # the same seeds under Holm: the same scores, every candidate gated and corrected
    holm = [c for c in runs["holm"].candidates if c["stage"] == "train_variants"]
    assert [r["quality"]["per_seed"] for r in holm] == [r["quality"]["per_seed"] for r in rows]
    p = [r["gate"]["p_value"] for r in holm]
    assert min(r["gate"]["p_adjusted"] for r in holm) == pytest.approx(min(1, 3 * min(p)))
    # the chosen one's p alone is the one Holm would have tripled
    same = next(r for r in holm if r["label"] == best["label"])
    assert same["gate"]["p_value"] == pytest.approx(best["gate"]["p_value"])
    assert same["gate"]["p_adjusted"] == pytest.approx(min(1, 3 * best["gate"]["p_value"]))
    accepted_under_holm = [r for r in holm if r["gate"]["p_adjusted"] < r["gate"]["alpha"]]
    assert (runs["holm"].incumbent["id"] == runs["holm"].baseline["id"]) == (
        not accepted_under_holm
    )
    for row in holm:
        assert "Holm p=" in row["reason"] and "adjusted for 3)" in row["reason"]
        assert "chosen" not in row["reason"]
        assert row["gate"]["adjusted_low"] <= row["gate"]["low"]
