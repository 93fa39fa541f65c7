"""How often the gate accepts a change that is no change (A/A), and how often it detects a real one.

Real trainings of a small MLP on the breast-cancer task (fixed split; a seed sets the initial
weights and the data order). Each experiment gates k seeds of a candidate against k seeds of
the incumbent, exactly as the pipeline does, and experiments never share a training:

* A/A: the "candidate" is the incumbent's config again on fresh seeds. The gate must accept
  at most 5% of these at 95% confidence (by design it aims at 2.5%: a one-sided test at
  α = (1 − confidence) / 2, the lower end of the two-sided CI above zero).
* Power: the candidate trains longer (a real, modest improvement), paired by seed with the
  incumbent like in the pipeline; the true gain is estimated from all pairs together.

Rates come with Wilson 95% intervals.

    python bench/gate_calibration.py [--experiments 400] [--seeds 5] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tidian
from common import print_table, wilson
from tidian.evaluation.gate import gate

MODEL = {"name": "mlp", "hidden": [16]}
INCUMBENT = {"epochs": 8, "lr": 0.003}
IMPROVED = {"epochs": 15, "lr": 0.003}


def scores(task, config, seeds, jobs):
    result = tidian.evaluate(MODEL, task, config, seeds=seeds, metrics=["accuracy"], n_jobs=jobs)
    return np.asarray(result.scores("accuracy"))


def accepted(incumbent, candidate) -> bool:
    d = gate(list(incumbent), {"c": list(candidate)}, metric="accuracy", greater_is_better=True)
    return d["c"].accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    k, n = args.seeds, args.experiments
    task = tidian.load_task("breast_cancer")
    start = time.perf_counter()
    a = scores(task, INCUMBENT, list(range(2 * k * n)), args.jobs)
    b = scores(task, IMPROVED, list(range(k * n)), args.jobs)
    seconds = time.perf_counter() - start

    aa = sum(
        accepted(a[2 * k * e : 2 * k * e + k], a[2 * k * e + k : 2 * k * (e + 1)]) for e in range(n)
    )
    power = sum(accepted(a[k * e : k * (e + 1)], b[k * e : k * (e + 1)]) for e in range(n))
    gain = tidian.summarize(b - a[: k * n])
    rows = []
    for label, hits, target in (
        ("A/A (no real change): accepted", aa, "<= 5%"),
        (
            f"real gain {gain.mean:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}]: detected",
            power,
            "as high as possible",
        ),
    ):
        low, high = wilson(hits, n)
        rows.append([label, f"{hits}/{n}", f"{hits / n:.1%}", f"[{low:.1%}, {high:.1%}]", target])
    print_table(
        f"Gate calibration: mlp [16] on breast_cancer, {k} seeds per side, {n} independent "
        f"experiments each ({len(a) + len(b)} trainings, {seconds:.0f} s)",
        ["experiment", "accepted", "rate", "Wilson 95% CI", "target"],
        rows,
        note=f"incumbent {INCUMBENT}, improved candidate {IMPROVED}; gate at 95% confidence.",
    )


if __name__ == "__main__":
    main()
