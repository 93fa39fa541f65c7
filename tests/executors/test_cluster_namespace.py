"""Runs the tests marked ``cluster`` where they may run: in a fresh network namespace whose only
interface is loopback (Ray's servers listen on every interface of their node, even when told
127.0.0.1). ``unshare --net`` needs root (as in CI) or unprivileged user namespaces; where
neither is allowed the test is skipped, and fails instead with TIDIAN_REQUIRE_CLUSTER=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cluster_unavailable

HERE = Path(__file__).parent


@pytest.mark.slow  # starts Ray clusters and runs whole pipelines on them
@pytest.mark.cluster_wrapper
def test_the_cluster_tests_pass_in_a_private_network():
    try:
        import ray  # noqa: F401
    except ImportError:
        cluster_unavailable("Ray is not installed (pip install 'tidian[ray]')")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        cluster_unavailable("unshare and ip (util-linux, iproute2) are needed")
    private = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    probe = subprocess.run([*private, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        cluster_unavailable(f"cannot make a network namespace here: {probe.stderr.strip()}")
    command = [
        *private,
        "bash",
        str(HERE / "in_private_network.sh"),
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "cluster",
        "-p",
        "no:cacheprovider",
        "-rsfE",  # skipped, failed and errored tests named in the summary
        str(HERE.parent),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent.parent)
    # the inner session's failing tests first: a long Ray state dump can fill the tail
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    report = "\n".join(failed) + "\n" + done.stdout[-6000:] + done.stderr[-3000:]
    print(report)  # the inner session's summary, in this test's captured output
    assert done.returncode == 0, report
    assert " passed" in done.stdout and " failed" not in done.stdout, report
