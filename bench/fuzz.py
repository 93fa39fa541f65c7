"""The full fuzz campaign: every recipe mutant checked, 60 of those that pass run, every
malformed data file and damaged model folder (tests/fuzzing.py); counts per kind and outcome.

Outcomes: ran (exit 0), clear (one message, exit 2), and the failures: traceback, hang (past
the case's time limit), memory (MemoryError under a 4 GB address-space cap), crash (any other
end). Target: 0 failures. The test suite runs the reduced form (tests/test_fuzz.py).

    python bench/fuzz.py [--form full|reduced] [--seed 0] [--out fuzz.jsonl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import print_table

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from fuzzing import BAD, OUTCOMES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--form", choices=("full", "reduced"), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tidian-fuzz-") as folder:
        out = args.out or Path(folder) / "results.jsonl"
        subprocess.run(
            [
                sys.executable,
                str(TESTS / "fuzzing.py"),
                "--form",
                args.form,
                "--seed",
                str(args.seed),
                "--out",
                str(out),
                "--workdir",
                str(Path(folder) / "work"),
            ],
            check=False,
        )
        records = [json.loads(line) for line in out.read_text().splitlines()]
    done = [r for r in records if "outcome" in r]
    begun = [r["started"] for r in records if "started" in r]
    if len(begun) > len(done):  # the driver itself died (a hang no alarm could end)
        done.append({"case": begun[-1], "kind": "?", "outcome": "hang"})
    counts: dict[str, Counter] = {}
    for r in done:
        counts.setdefault(r["kind"], Counter())[r["outcome"]] += 1
    rows = [
        [kind, str(sum(c.values())), *(str(c[o]) for o in OUTCOMES)]
        for kind, c in sorted(counts.items())
    ]
    total = Counter(r["outcome"] for r in done)
    rows.append(["all", str(len(done)), *(str(total[o]) for o in OUTCOMES)])
    print_table(
        f"Fuzz campaign ({args.form}, seed {args.seed}), {time.monotonic() - started:.0f} s",
        ["input", "cases", *OUTCOMES],
        rows,
        note="target: 0 traceback, hang, memory, crash",
    )
    for r in done:
        if r["outcome"] in BAD:
            print(f"{r['outcome']}: {r['case']}: {str(r.get('message', ''))[-300:]}")


if __name__ == "__main__":
    main()
