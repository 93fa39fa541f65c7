import json
import subprocess
import sys

import pytest

from conftest import run_cli as run


def test_tasks_lists_builtins(capsys):
    code, out, _ = run(capsys, "tasks")
    assert code == 0
    for name in ("mnist1d", "digits", "breast_cancer", "wine", "iris", "penguins", "synthetic"):
        assert name in out
    assert "3600" in out  # mnist1d's training rows


def test_models_lists_the_zoo_with_options(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    for name in ("linear", "mlp", "cnn1d", "cnn2d", "gru", "lstm", "transformer"):
        assert name in out
    assert "kernel_size" in out and "bidirectional" in out


def test_evaluate_prints_quality_and_cost(capsys):
    code, out, _ = run(
        capsys,
        "evaluate",
        "--task",
        "iris",
        "--model",
        "mlp",
        "-o",
        "hidden=[8]",
        "--seeds",
        "2",
        "--epochs",
        "5",
        "-t",
        "lr=0.01",
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["task"] == "iris" and doc["seeds"] == [0, 1]
    acc = doc["summary"]["test"]["accuracy"]
    assert len(acc["values"]) == 2 and acc["low"] <= acc["mean"] <= acc["high"]
    assert doc["cost"]["params"] == 4 * 8 + 8 + 8 * 3 + 3
    assert doc["config"]["lr"] == 0.01


def test_evaluate_table_output(capsys):
    code, out, _ = run(
        capsys, "evaluate", "--task", "wine", "--model", "linear", "--seeds", "2", "--epochs", "3"
    )
    assert code == 0
    assert "accuracy *" in out and "CI low" in out and "latency" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--task", "iris", "--model", "cnn"], "unknown model 'cnn'"),
        (["evaluate", "--task", "iris", "--model", "mlp", "-o", "widht=3"], "did you mean 'width'"),
        (["evaluate", "--task", "irs"], "did you mean iris"),
        (["evaluate", "--task", "iris", "-t", "optimizer=adm"], "train.optimizer"),
        (["evaluate", "--task", "iris", "-t", "lr"], "key=value"),
        (["evaluate", "--task", "iris", "--model", "cnn2d"], "does not take vector inputs"),
    ],
)
def test_bad_input_exits_2_with_one_message(capsys, argv, message):
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_console_script_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "tidian.cli", "evaluate", "--task", "nope.csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "neither a built-in task" in done.stderr


@pytest.mark.parametrize("json_flag", [["--json"], []])
def test_output_that_cannot_be_written_is_an_error_not_a_silent_success(tmp_path, json_flag):
    """`tidian runs` into a full disk (/dev/full): exit 1 with one message, not exit 0 having
    written nothing and not a traceback."""
    store = f"sqlite:///{tmp_path / 'l.db'}"
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "tidian.cli", "runs", "--store", store, *json_flag],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: could not write the output: No space left on device"


def test_a_log_file_gets_each_progress_line_as_it_happens(tmp_path):
    from rich.console import Console

    from tidian.cli import _Log, _progress

    path = tmp_path / "run.log"
    with path.open("w") as file:
        log = _Log(Console(file=file))
        assert not log.out.is_terminal
        row = {"id": 3, "stage": "architecture", "label": "name=mlp, hidden=[8]"}
        log("seeds_started", {"total": 2, "done": 0})
        log(
            "seed_done",
            {
                "candidate": row,
                "seed": 1,
                "metric": "accuracy",
                "seconds": 1.25,
                "scores": {"test": {"accuracy": 0.5}},
            },
        )
        # read while the file is still open: the line is there, not in a buffer
        assert (
            path.read_text().splitlines()[-1].endswith("[1/2] #3 seed 1: accuracy 0.5000 (1.2 s)")
        )
        bars = _progress(Console(file=file))  # other commands' progress: plain lines too
        with bars:
            task = bars.add_task("flips of every candidate", total=3)
            for _ in range(3):
                bars.advance(task)
        lines = path.read_text().splitlines()
        assert lines[-2].endswith("flips of every candidate: 0/3")
        assert lines[-1].endswith("flips of every candidate: 3/3")  # the end always shows


def test_help_reads_as_sentences_without_type_noise(capsys):
    code, out, _ = run(capsys, "runs", "--help")
    assert code == 0 and "<bool>" not in out
    # the docstring is re-flowed into whole lines, not broken where the source broke it
    assert "whose driver died without a word (SIGKILL" in " ".join(out.split())
    assert not any(line.strip().startswith("(SIGKILL") for line in out.splitlines())
    assert "--json" in out and "Print JSON" in out


def test_signed_numbers_never_show_plus_or_minus_zero():
    from tidian.cli import _signed

    assert [_signed(v) for v in (0.0, -0.0, 2.5e-9, -1.5)] == ["0", "0", "+2.5e-09", "-1.5"]
    assert _signed(-0.00001, ".4f") == "0" and _signed(0.01234, ".4f") == "+0.0123"


def test_tasks_and_configs_read_as_short_text():
    from tidian.runs import short_text

    assert short_text({"name": "penguins", "missing": "drop"}) == "penguins (missing=drop)"
    assert short_text("iris") == "iris"
    assert short_text({"path": "d.csv", "target": "y"}) == "path=d.csv, target=y"
    assert short_text({"name": "mlp", "hidden": [32, 32]}) == "mlp (hidden=[32, 32])"


def test_messages_and_table_cells_print_brackets_as_written(capsys):
    from rich.console import Console

    from tidian.cli import _error, _Table
    from tidian.exceptions import DependencyError, require

    with pytest.raises(DependencyError) as err:
        require("tidian_no_such_module", "onnx", "export")
    _error(str(err.value))
    printed = " ".join(capsys.readouterr().err.split())
    assert "pip install 'tidian[onnx]'" in printed and "'tidian[all]'" in printed
    table = _Table(title="classes")
    table.add_column("class")
    table.add_row("[b]x")
    console = Console(width=80)
    console.print(table)
    assert "[b]x" in capsys.readouterr().out


def test_tasks_inspect_says_how_each_column_was_read(capsys, tmp_path):
    import pandas as pd

    path = tmp_path / "shop.csv"
    path.write_text(
        "amount;when;shop;label\n"
        + "".join(
            f"{i},5;2021-01-{i % 28 + 1:02d};{'ab'[i % 2]};{'xy'[i % 3 == 0]}\n" for i in range(40)
        )
    )
    assert pd.read_csv(path).shape[1] == 1  # pandas' default reads one column
    code, out, _ = run(capsys, "tasks", "inspect", str(path), "-o", "target=label")
    assert code == 0 and "separator ';'" in out
    for column, how in [
        ("amount", "number (decimal comma)"),
        ("when", "date → year, month, day, weekday"),
        ("shop", "category (2 values)"),
        ("label", "target (2 classes)"),
    ]:
        assert any(column in line and how in line for line in out.splitlines()), (column, out)
    doc = json.loads(run(capsys, "tasks", "inspect", str(path), "-o", "target=label", "--json")[1])
    assert doc["columns"]["amount"] == "number (decimal comma)" and doc["sep"] == ";"


def test_ctrl_c_while_the_command_starts_ends_it_quietly(tmp_path):
    import os
    import shutil
    import signal
    import time
    from pathlib import Path

    command = shutil.which("tidian") or str(Path(sys.executable).with_name("tidian"))
    proc = subprocess.Popen(
        [command, "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a suite started in the background (`make test &`) ignores SIGINT, and so would the
        # child (Python keeps an ignored SIGINT ignored): give it the default a terminal gives
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    maps = Path(f"/proc/{proc.pid}/maps")
    # torch's library is mapped while tidian's imports run (more follow it: scikit-learn…);
    # should they be done before the signal lands, the run itself is what is interrupted.
    while proc.poll() is None and "libtorch" not in maps.read_text():
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err


def test_the_command_line_starts_without_torch_or_scikit_learn():
    # `tidian --help` and the package import load neither (seconds each); the public names
    # are imported from their modules on first use, and name what they always named.
    code = (
        "import sys, tidian, tidian.cli\n"
        "heavy = [m for m in ('torch', 'sklearn', 'pandas', 'optuna') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from tidian.pipeline import run\n"
        "from tidian.tasks import load_task\n"
        "assert tidian.run is run and tidian.load_task is load_task\n"
        "assert set(tidian.__all__) <= set(dir(tidian))\n"
        "try:\n"
        "    tidian.no_such_name\n"
        "except AttributeError as err:\n"
        "    assert 'no_such_name' in str(err)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_evaluate_prints_a_file_name_that_looks_like_markup_as_written(capsys, tmp_path):
    rows = "".join(f"{i % 7},{(i * 3) % 5},{'ab'[i % 2]}\n" for i in range(60))
    path = tmp_path / "[b]x.csv"
    path.write_text("p,q,label\n" + rows)
    code, out, err = run(
        capsys, "evaluate", "--task", str(path), "--task-option", "target=label",
        "--model", "linear", "--epochs", "1", "--seeds", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "linear on [b]x —" in out


def test_run_s_cost_limits_are_recorded_in_the_recipe_and_keep_a_larger_model_out(tmp_path, capsys):
    """`tidian run --max-bytes/--max-latency-ms/--max-params` set the recipe's constraints
    (beside the ones it has): an MLP that beats a 3-epoch linear model is turned down for
    its size, and the run's recorded recipe says what the limits were."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "task: iris\nmodel: {name: linear}\ntrain: {epochs: 3, lr: 0.01}\n"
        "evaluate: {seeds: 3}\nconfirm: {seeds: 0}\nconstraints: {max_params: 100000}\n"
        "stages:\n  - architecture: {candidates: [{name: mlp, hidden: [64]}], "
        "train: {epochs: 60}}\n"
    )
    url = f"sqlite:///{tmp_path / 'c.db'}"
    code, _, err = run(capsys, "run", str(recipe), "--store", url, "--max-bytes", "1kB")
    assert code == 0, err
    from tidian.store import Store

    store = Store(url)
    (row,) = store.runs()
    assert row["recipe"]["constraints"] == {"max_params": 100000, "max_bytes": 1000}
    mlp = store.candidates(row["id"])[1]
    assert mlp["decision"] == "rejected"
    assert (
        "violates constraints (size_bytes" in mlp["reason"] and "> max_bytes 1000" in mlp["reason"]
    )
    # bad limits are refused before anything is written; a resumed run keeps its own
    for flag, value, message in [
        ("--max-bytes", "1 XB", "constraints.max_bytes: a positive size"),
        ("--max-latency-ms", "0", "constraints.max_latency_ms"),
    ]:
        code, _, err = run(capsys, "run", str(recipe), "--store", url, flag, value)
        assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err
    code, _, err = run(capsys, "run", "--resume", row["id"], "--store", url, "--max-params", "9")
    assert code == 2 and "uses the recipe it started with" in " ".join(err.split())
    assert len(store.runs()) == 1
