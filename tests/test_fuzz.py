"""The reduced fuzz campaign (tests/fuzzing.py): malformed recipes, data files and model
folders through the command line; none may end in a raw traceback, a hang or MemoryError."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fuzzing import BAD, cases

pytestmark = pytest.mark.slow


def test_the_reduced_campaign_covers_each_kind_of_input():
    kinds = Counter(case.kind for case in cases("reduced"))
    assert kinds["recipe"] >= 150 and kinds["data"] >= 50 and kinds["model"] >= 15
    assert kinds["run"] >= 6
    names = [case.name for case in cases("reduced")]
    assert len(names) == len(set(names))  # a case is found again by its name


def test_no_input_gets_a_traceback_a_hang_or_memory_error(tmp_path):
    out = tmp_path / "results.jsonl"
    driver = Path(__file__).with_name("fuzzing.py")
    done = subprocess.run(
        [sys.executable, str(driver), "--form", "reduced", "--out", str(out)],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=1800,  # the backstop: each case has its own limit
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    records = [r for r in lines if "outcome" in r]
    started = [r["started"] for r in lines if "started" in r]
    assert done.returncode == 0, (done.stderr[-3000:], started[-1:])
    assert len(records) == len(started) == len(cases("reduced"))
    bad = [
        f"{r['case']}: {r['outcome']} {r.get('message', '')[-300:]} {r.get('where', '')}"
        for r in records
        if r["outcome"] in BAD
    ]
    assert not bad, "\n".join(bad)
    counts = Counter(r["outcome"] for r in records)
    assert counts["clear"] >= 100 and counts["ran"] >= 10  # both sides are exercised
