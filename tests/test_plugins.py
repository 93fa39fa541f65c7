"""A model of the user's own, in a package tidian has never seen: found by the command line
through `--import` or the `tidian.models` entry-point group, in worker processes too."""

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

import tidian
from tidian import ConfigError
from tidian.registry import PLUGIN_GROUP

# An SE-style model: features re-weighted by a squeeze/excite gate, then a head.
PLUGIN = '''
import torch
from torch import nn

import tidian


class SE(nn.Module):
    def __init__(self, features, classes, width):
        super().__init__()
        self.inp = nn.Linear(features, width)
        self.squeeze = nn.Linear(width, width // 2)
        self.excite = nn.Linear(width // 2, width)
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(h))))
        return self.out(h * gate)


@tidian.register_model("senet_plugin", inputs=("vector",))
def senet_plugin(sig, *, width=16):
    """An SE-gated MLP from a package tidian does not know."""
    return SE(sig["input_shape"][0], sig.n_outputs, width)
'''


def _package(root, entry_point: bool) -> None:
    (root / "tidian_senet").mkdir(parents=True)
    (root / "tidian_senet" / "__init__.py").write_text(PLUGIN)
    if entry_point:  # what `pip install` of a package declaring the entry point leaves
        info = root / "tidian_senet-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tidian-senet\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\nsenet = tidian_senet\n")


def _tidian(cwd, env, *argv, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "tidian.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow  # a whole pipeline run and four commands, each in its own process
@pytest.mark.parametrize("how", ["entry point", "--import"])
def test_a_run_of_a_model_from_another_package_exports_predicts_reports_and_serves(tmp_path, how):
    root = tmp_path / "plugin"
    _package(root, entry_point=how == "entry point")
    env = {**os.environ, "TIDIAN_ARTIFACTS": str(tmp_path / "runs")}
    env.pop("TIDIAN_IMPORT", None)
    if how == "entry point":  # installed: on the path, named by its entry point
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        cwd, first = tmp_path, []
    else:  # a module in the working directory, named on the command line
        cwd, first = root, ["--import", "tidian_senet"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "task: iris\nmodel: {name: senet_plugin, width: 8}\ntrain: {epochs: 2}\n"
        "evaluate: {seeds: 2}\n"
    )
    store = f"sqlite:///{tmp_path / 'l.db'}"

    # without the plugin the name is unknown: one clear message, before anything trains
    bare = _tidian(
        tmp_path, {**env, "PYTHONPATH": ""}, "run", str(recipe), "--store", store, check=False
    )
    assert bare.returncode == 2 and "unknown model 'senet_plugin'" in bare.stderr

    # two worker processes: each imports the plugin before its job
    _tidian(cwd, env, *first, "run", str(recipe), "--store", store, "--jobs", "2")
    runs = json.loads(_tidian(cwd, env, *first, "runs", "--store", store, "--json").stdout)
    (run,) = [r for r in runs if r["status"] == "finished"]
    run_id = run["run_id"]

    out = tmp_path / "export"
    _tidian(
        cwd,
        env,
        *first,
        "export",
        run_id,
        "--candidate",
        "best",
        "--out",
        str(out),
        "--store",
        store,
        "--format",
        "safetensors",
    )  # rebuilt from the spec: needs the plugin
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n"
        "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
    )
    predicted = _tidian(cwd, env, *first, "predict", str(out), str(rows)).stdout.splitlines()
    assert len(predicted) == 3 and predicted[0].startswith("prediction")

    report = json.loads(
        _tidian(cwd, env, *first, "report", run_id, "--store", store, "--json").stdout
    )
    assert "analyses" not in report["skipped"], report["skipped"]  # rebuilt, analysed
    assert report["confusion"]["seeds"] == 2 and report["errors"]

    serve = subprocess.Popen(
        [sys.executable, "-m", "tidian.cli", *first, "serve", "--port", "0", "--store", store],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        said = ""  # what the server prints, read until it names its port, however long
        while not (port := re.search(r"127\.0\.0\.1:(\d+)", said)):
            line = serve.stdout.readline()
            assert line, (said, serve.stderr.read())  # ended without serving
            said += line
        url = f"http://127.0.0.1:{port.group(1)}/runs/{run_id}.json"
        with urllib.request.urlopen(url, timeout=600) as answer:
            served = json.loads(answer.read())
        assert "analyses" not in served["skipped"] and served["confusion"]["seeds"] == 2
    finally:
        serve.terminate()
        serve.wait(timeout=60)


def test_a_module_that_cannot_be_imported_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('no GPU driver')\n")
    with pytest.raises(
        ConfigError,
        match=r"cannot import 'broken_plugin' \(--import\): "
        "RuntimeError: no GPU driver",
    ):
        tidian.import_plugins(["broken_plugin"])
    with pytest.raises(ConfigError, match="cannot import 'no_such_plugin'"):
        tidian.import_plugins(["no_such_plugin"])
