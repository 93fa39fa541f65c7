"""Loading a large CSV as a task against pandas reading it: wall time and peak memory.

A 2,000,000 × 12 CSV (about 200 MB: ten numeric columns, a five-value category, a 3-class
label) is generated once into --dir. Each measurement runs in a fresh process, after its
imports, alternating pandas and tidian so that machine load hits both alike:

* pandas: ``pd.read_csv(path)`` — the floor: every loader has to read the file;
* tidian: ``tidian.load_task(path, target="label")`` — read, types guessed, target encoded,
  stratified split, numbers standardised and the category one-hot, all with training statistics.

Memory is the process's peak resident size (``ru_maxrss``) less its size after the imports.
Target: tidian at most 2× pandas in time and in memory (medians over the repeats).

    python bench/csv_load.py [--rows 2000000] [--repeats 3] [--dir /tmp/tidian-csv]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import print_table

MEASURE = """
import json, resource, sys, time
import pandas as pd
import sklearn.model_selection  # imported by the split when first used: not counted either
from tidian.tasks import load_task  # with what it imports (torch…): not counted as loading

def rss_mb():
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

before = rss_mb()
start = time.perf_counter()
if sys.argv[1] == "pandas":
    shape = pd.read_csv(sys.argv[2]).shape
else:
    task = load_task(sys.argv[2], target="label")
    shape = (len(task.train) + len(task.val) + len(task.test), task.train.x.shape[1])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "memory_mb": peak - before, "shape": shape}))
"""


def make_csv(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    columns = {f"x{i}": rng.normal(size=rows).round(6) for i in range(10)}
    columns["colour"] = np.array(["red", "green", "blue", "black", "white"])[
        rng.integers(0, 5, rows)
    ]
    columns["label"] = np.array(["a", "b", "c"])[rng.integers(0, 3, rows)]
    pd.DataFrame(columns).to_csv(path, index=False)


def measure(what: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, what, str(path)], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"{what} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/tidian-csv"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"table-{args.rows}.csv"
    if not path.exists():
        print(f"writing {path} …", flush=True)
        make_csv(path, args.rows)
    runs: dict[str, list[dict]] = {"pandas": [], "tidian": []}
    for _ in range(args.repeats):
        for what in runs:
            runs[what].append(measure(what, path))
    median = {
        what: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "memory_mb")}
        for what, rs in runs.items()
    }
    rows = [
        [
            what,
            f"{median[what]['seconds']:.2f}",
            f"{median[what]['memory_mb']:.0f}",
            f"{median[what]['seconds'] / median['pandas']['seconds']:.2f}×",
            f"{median[what]['memory_mb'] / median['pandas']['memory_mb']:.2f}×",
        ]
        for what in runs
    ]
    print_table(
        f"Loading {path.name} ({path.stat().st_size / 1e6:.0f} MB), medians of {args.repeats}",
        ["reader", "seconds", "peak MB over imports", "time vs pandas", "memory vs pandas"],
        rows,
        note="target: tidian ≤ 2× pandas in time and memory",
    )


if __name__ == "__main__":
    main()
