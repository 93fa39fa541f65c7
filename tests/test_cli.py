import json
import subprocess
import sys

import pytest

from tidian.cli import main


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


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
