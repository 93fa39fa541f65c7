"""How often the gate accepts a change that is no change (A/A), and how often it detects a real one.

Real trainings of a small MLP on the breast-cancer task (fixed split; a seed sets the initial
weights and the data order). Each experiment gates k seeds of a candidate against k seeds of
the incumbent, exactly as the pipeline does, and experiments never share a training:

* A/A: the "candidate" is the incumbent's config again on fresh seeds. The gate must accept
  at most 5% of these at 95% confidence (by design it aims at 2.5%: a one-sided test at
  α = (1 − confidence) / 2, the lower end of the two-sided CI above zero).
* Power: the candidate trains longer (a real, modest improvement), paired by seed with the
  incumbent like in the pipeline; the true gain is estimated from all pairs together.

Each is gated twice: on the seeds' variance alone, and on seeds × test rows (the pipeline's
gate: every seed is scored on the same 114 test rows, whose sampling adds to the variance;
``stats.mean_variance``). Rates come with Wilson 95% intervals.

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
    """Per-seed test accuracies and their test-row pseudo-values (seeds × row groups)."""
    result = tidian.evaluate(MODEL, task, config, seeds=seeds, metrics=["accuracy"], n_jobs=jobs)
    return np.asarray(result.scores("accuracy")), np.asarray(result.row_table("accuracy"))


def accepted(incumbent, candidate, rows: bool) -> bool:
    """The gate's verdict on seeds alone or, with ``rows``, on seeds × the test rows."""
    (a, a_rows), (b, b_rows) = incumbent, candidate
    d = gate(
        list(a),
        {"c": list(b)},
        metric="accuracy",
        greater_is_better=True,
        incumbent_rows=a_rows if rows else None,
        rows={"c": b_rows} if rows else None,
    )
    return d["c"].accepted


def part(side, start: int, stop: int):
    return side[0][start:stop], side[1][start:stop]


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

    gain = tidian.summarize(b[0] - a[0][: k * n])
    rows = []
    for counted in (False, True):
        aa = sum(
            accepted(
                part(a, 2 * k * e, 2 * k * e + k), part(a, 2 * k * e + k, 2 * k * (e + 1)), counted
            )
            for e in range(n)
        )
        power = sum(
            accepted(part(a, k * e, k * (e + 1)), part(b, k * e, k * (e + 1)), counted)
            for e in range(n)
        )
        for label, hits, target in (
            ("A/A (no real change): accepted", aa, "<= 5%"),
            (
                f"real gain {gain.mean:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}]: detected",
                power,
                "as high as possible",
            ),
        ):
            low, high = wilson(hits, n)
            rows.append(
                [
                    label,
                    "seeds × test rows" if counted else "seeds alone",
                    f"{hits}/{n}",
                    f"{hits / n:.1%}",
                    f"[{low:.1%}, {high:.1%}]",
                    target,
                ]
            )
    print_table(
        f"Gate calibration: mlp [16] on breast_cancer, {k} seeds per side, {n} independent "
        f"experiments each ({len(a[0]) + len(b[0])} trainings, {seconds:.0f} s)",
        ["experiment", "variance", "accepted", "rate", "Wilson 95% CI", "target"],
        rows,
        note=f"incumbent {INCUMBENT}, improved candidate {IMPROVED}; gate at 95% confidence; "
        "the same 114 test rows in every experiment (A/A: the same configuration, so its rows "
        "owe nothing to either side; bench/row_sampling.py draws the rows too).",
    )


if __name__ == "__main__":
    main()
