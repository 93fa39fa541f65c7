"""Artifacts by URL: a run whose weights live on S3 — a real S3 endpoint on 127.0.0.1 (moto's
server) — trains in worker processes, then exports, reports and predicts from there; writes
are all-or-nothing; remote folders are read through a local cache."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import tidian.pipeline as pipeline
from tidian.exceptions import DataError
from tidian.executors import LocalExecutor
from tidian.export import predict_file
from tidian.report import collect
from tidian.runs import export_candidate
from tidian.store import Store
from tidian.store.artifacts import committed, join, local, writing

RECIPE = {
    "task": "iris",
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"epochs": 5, "batch_size": 16},
    "evaluate": {"seeds": 2},
    "deploy": {"runtime": "onnxruntime"},
    "stages": [
        {"prune": {"amount": 0.5, "finetune_epochs": 1}},
        {"quantize": {"mode": "dynamic"}},
    ],
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 endpoint on 127.0.0.1 (moto in server mode) with a bucket ``tidian-test``; the
    AWS variables point every process started here at it."""
    pytest.importorskip("s3fs")
    from tidian.executors.distributed import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while True:  # until it answers
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            assert server.poll() is None, "moto's server did not start"
            time.sleep(0.05)
    env = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }.items():
        env.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("tidian-test")
    yield "s3://tidian-test"
    env.undo()
    server.terminate()
    server.wait()


def test_a_run_on_s3_trains_exports_reports_and_predicts(s3, tmp_path):
    import s3fs

    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=f"{s3}/runs")
    with LocalExecutor(2) as workers:  # other processes write the seeds' artifacts
        result = pipeline.run(RECIPE, store=store, executor=workers)
    assert result.status == "finished"
    assert not (tmp_path / "tidian-runs").exists()  # nothing went to the local folder
    fs = s3fs.S3FileSystem()
    for c in result.candidates:
        assert c["artifact"].startswith(f"{s3}/runs/{result.run_id}/")
        for seed in (0, 1):
            folder = str(join(c["artifact"].rsplit("/", 1)[0], f"seed-{seed}"))
            assert committed(folder)
            assert fs.exists(folder[5:] + "/model.safetensors")
    # export and predict from the bucket
    manifest = export_candidate(store, result.run_id, "best", tmp_path / "export")
    assert manifest["export_check"]["passed"] or manifest["quantized"]
    from tidian.tasks import load_task

    task = load_task("iris")
    np.savez(tmp_path / "x.npz", x=task.test.x[:5])
    predictions = predict_file(tmp_path / "export", tmp_path / "x.npz")
    assert len(predictions) == 5 and set(predictions["prediction"]) <= set(task.class_names)
    # the report's analyses load the final model's seeds from the bucket
    data = collect(store, result.run_id)
    assert "analyses" not in data["skipped"] and data["confusion"]


def test_a_remote_artifact_is_whole_or_absent(s3, tmp_path):
    target = f"{s3}/whole/seed-0"
    with pytest.raises(RuntimeError), writing(target) as folder:
        (folder / "a.txt").write_text("half")
        raise RuntimeError("the writer dies before committing")
    assert not committed(target)
    with pytest.raises(DataError, match="no complete artifact"):
        local(target)
    with writing(target) as folder:
        (folder / "a.txt").write_text("first")
    first = local(target)
    assert (first / "a.txt").read_text() == "first"
    with writing(target) as folder:  # a second attempt replaces the first
        (folder / "a.txt").write_text("second")
    second = local(target)
    assert (second / "a.txt").read_text() == "second" and second != first
    assert local(target) == second  # fetched once per commit


def test_local_artifacts_are_renamed_into_place(tmp_path):
    target = tmp_path / "c" / "seed-0"
    with pytest.raises(RuntimeError), writing(target) as folder:
        (folder / "a.txt").write_text("x")
        raise RuntimeError("stop")
    assert not target.exists() and list((tmp_path / "c").iterdir()) == []  # no temp left
    with writing(target) as folder:
        (folder / "a.txt").write_text("x")
    assert (target / "a.txt").read_text() == "x" and local(target) == target
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
