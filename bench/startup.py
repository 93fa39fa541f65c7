"""How long the command line takes to start: `tidian --help`, and `tidian recipe check` (which
loads the registries: torch, scikit-learn), each a fresh process, medians of --repeats.

Target: `tidian --help` under 1 s (median of 5).

    python bench/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_table

COMMAND = str(Path(sys.executable).with_name("tidian"))


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([COMMAND, *argv], capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        recipe = Path(folder) / "recipe.yaml"
        recipe.write_text("task: iris\nmodel: {name: mlp}\n")
        commands = {
            "tidian --help": ["--help"],
            "tidian recipe check": ["recipe", "check", str(recipe)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # alternated: machine load hits both alike
            for name, argv in commands.items():
                times[name].append(seconds(argv))
    rows = [
        [name, f"{statistics.median(t):.2f}", f"{min(t):.2f}", f"{max(t):.2f}"]
        for name, t in times.items()
    ]
    print_table(
        f"Command-line start-up, {args.repeats} runs each",
        ["command", "median s", "min s", "max s"],
        rows,
        note="target: tidian --help under 1 s (median)",
    )


if __name__ == "__main__":
    main()
