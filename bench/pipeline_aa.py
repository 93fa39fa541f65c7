"""Whole-pipeline A/A: how often a run's headline claims a lift that is not there, at selection
time and after confirmation — and, with --power, how often a real small gain is confirmed.

Each run is a whole `tidian run` of a small recipe on breast_cancer (an MLP [8], 4 epochs,
3 seeds, costs on torch): three candidates in two stages (--candidates sets the first stage's
count, default 2) that are the baseline itself with its
randomness re-drawn (`train.seed_stream`: the same model and training, another stream of
initial weights and data orders — a true gain of zero). A run claims a lift at selection time
when a stage accepted a candidate (the final model is not the baseline); its confirmed
headline claims one when the confirmation (the baseline and the final path on fresh seeds,
scored on the 85-row holdout no stage saw) holds up. Runs share no seed: run r uses seeds
from 20,000 + 23r, and its confirmation the next ones (--confirm-seeds, default 3, at most
20). With --power, the first stage's first candidate trains 8 epochs instead of 4 (a real
gain: the table's note gives its size, measured on every run's first candidate, unselected).
--select sets `evaluate.select`: validation (a stage chooses one candidate on validation and
gates it alone; the default) or holm (every candidate gated, Holm-corrected).
With --ensemble the second stage is an ensemble of the run's 3 best candidates (the baseline's
re-drawn copies) combined by fitted weights, greedy selection and stacking — each fitted on
validation and scored there out of fold — so the table shows how often a stage of fitted
combinations claims a lift and how often the confirmation holds it (averaging copies of one
model is a small real change, not an A/A).

With --folds K every candidate is evaluated by repeated K-fold cross-validation (the seeds
× K units, the corrected variance; what the suggested recipe does for a small table).

    python bench/pipeline_aa.py [--runs 200] [--workers 2] [--power] [--confirm-seeds 3]
        [--select validation|holm] [--candidates 2] [--ensemble] [--folds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from common import print_table, wilson

SEEDS = 3


def recipe(
    run: int,
    power: bool,
    confirm: int,
    select: str,
    candidates: int,
    ensemble: bool = False,
    folds: int | None = None,
) -> dict:
    first = [{"seed_stream": 1 + k} for k in range(candidates)]
    if power:
        first[0] = {"epochs": 8}
    second = (
        {"ensemble": {"members": "top", "k": 3, "combine": ["weighted", "greedy", "stacking"]}}
        if ensemble
        else {"train_variants": {"candidates": [{"seed_stream": candidates + 1}]}}
    )
    return {
        "task": "breast_cancer",
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 4, "batch_size": 32, "lr": 0.003},
        # run r's seeds, then room for its confirmation's (at most 20 per run)
        "evaluate": {
            "seeds": [20_000 + (SEEDS + 20) * run + i for i in range(SEEDS)],
            "select": select,
            # cross-validation as a small table's suggested recipe has it (repeated k-fold)
            **({"folds": folds, "repeated": True} if folds else {}),
        },
        "deploy": {"runtime": "torch"},
        "confirm": {"seeds": confirm},
        "stages": [
            {"train_variants": {"candidates": first}},
            second,
        ],
    }


def one_run(args: tuple[int, bool, int, str, str, int, bool, int | None]) -> dict:
    """One whole run in its own ledger: did it claim a lift, was it confirmed, by how much."""
    import tidian.pipeline as pipeline
    from tidian.store import Store

    run, power, confirm, folder, select, candidates, ensemble, folds = args
    store = Store(f"sqlite:///{folder}/run-{run}.db", artifacts=f"{folder}/runs-{run}")
    result = pipeline.run(
        recipe(run, power, confirm, select, candidates, ensemble, folds), store=store, threads=1
    )
    c = result.confirmation or {}
    # the first stage's first candidate against the baseline, seed by seed, unselected: an
    # unbiased estimate of its true gain (with --power, the real one; A/A: zero)
    first = next(r for r in result.candidates if r["stage_position"] == 1)
    gains = np.subtract(first["quality"]["per_seed"], result.baseline["quality"]["per_seed"])
    return {
        "run": run,
        "first_gain": float(gains.mean()),
        "claimed": result.incumbent["id"] != result.baseline["id"],
        "ensemble": any(
            r["stage"] == "ensemble" and r["decision"] == "accepted" for r in result.candidates
        ),
        "confirmed": bool(c.get("held")),
        "selection": (c.get("selection_gain") or {}).get("mean"),
        "confirmed_gain": (c.get("gate") or {}).get("gain"),
        "seeds": c.get("seeds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--power", action="store_true", help="one candidate holds a real gain")
    parser.add_argument("--confirm-seeds", type=int, default=SEEDS, help="at most 20")
    parser.add_argument("--select", choices=("validation", "holm"), default="validation")
    parser.add_argument("--candidates", type=int, default=2, help="in the first stage")
    parser.add_argument(
        "--ensemble", action="store_true", help="the second stage ensembles the 3 best"
    )
    parser.add_argument("--folds", type=int, help="cross-validation: each seed gives k units")
    args = parser.parse_args()
    if not 0 < args.confirm_seeds <= 20:
        parser.error("--confirm-seeds: 1 to 20 (runs keep 20 seeds apart)")
    if args.folds is not None and args.folds < 2:
        parser.error("--folds: 2 or more (each seed gives that many units)")
    if not 1 <= args.candidates <= 20:
        parser.error("--candidates: 1 to 20")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(args.workers) as pool:
        work = [
            (
                r,
                args.power,
                args.confirm_seeds,
                folder,
                args.select,
                args.candidates,
                args.ensemble,
                args.folds,
            )
            for r in range(args.runs)
        ]
        results = list(pool.map(one_run, work))
    seconds = time.perf_counter() - start
    n = len(results)
    confirmed_seeds = [tuple(r["seeds"]) for r in results if r["seeds"]]
    assert len(set(confirmed_seeds)) == len(confirmed_seeds), "runs share confirmation seeds"
    rows = []
    counts = [
        ("selection-time headline claims a lift", sum(r["claimed"] for r in results)),
        ("confirmed headline claims a lift", sum(r["confirmed"] for r in results)),
    ]
    if args.ensemble:
        counts.insert(0, ("the ensemble stage accepted one", sum(r["ensemble"] for r in results)))
    for label, hits in counts:
        low, high = wilson(hits, n)
        rows.append([label, f"{hits}/{n}", f"{hits / n:.1%}", f"[{low:.1%}, {high:.1%}]"])
    claimed = [r for r in results if r["claimed"]]
    note = ""
    if claimed:
        sel = np.mean([r["selection"] for r in claimed])
        conf = np.mean([r["confirmed_gain"] for r in claimed])
        which = ", ".join(str(r["run"]) for r in claimed[:12]) + (" …" if len(claimed) > 12 else "")
        note = (
            f"runs that claimed a lift at selection (run {which}): mean selection-time gain "
            f"{sel:+.4f}, the "
            f"same paths confirmed {conf:+.4f} (optimism of selection {sel - conf:+.4f}). "
        )
    true = np.mean([r["first_gain"] for r in results])
    note += f"The first candidate's mean gain over the baseline, unselected: {true:+.4f}. "
    kind = "power: a real gain (8 epochs against 4)" if args.power else "A/A: no real gain"
    if args.ensemble:
        kind += " in the first stage, then an ensemble of the 3 best (3 fitted combinations)"
    print_table(
        f"Whole-pipeline {kind}; {n} independent runs of {args.candidates} + "
        f"{3 if args.ensemble else 1} candidates in "
        f"2 stages, {SEEDS} seeds each"
        + (f" × {args.folds} folds (repeated)" if args.folds else "")
        + f", select: {args.select}, confirmed on "
        f"{args.confirm_seeds} fresh seeds and the holdout ({seconds:.0f} s)",
        ["headline", "runs", "rate", "Wilson 95% CI"],
        rows,
        note=note + "Target (A/A): confirmed <= 5%.",
    )


if __name__ == "__main__":
    main()
