"""Ensembles against the single best model: vote, averaging, fitted weights, stacking and
greedy selection, on mnist1d, digits and (tree families) breast_cancer.

Each data set is one tidian run: a baseline, an ``architecture`` stage of diverse models (the
single best is the incumbent after it), then an ``ensemble`` stage over the run's 4 best
candidates on validation with every combination. All candidates share the same 5 seeds, so
each ensemble's gain over the single best is paired; latency is batch 1 on ONNX Runtime (one
thread), the ensemble as one graph.

The combinations fitted on validation (weighted, stacking, greedy) are scored there out of
fold (cross-fitted); the table shows both validation figures, so what the in-sample one
overstates is visible. ``--select validation`` (the default) chooses one combination on the
cross-fitted validation scores and gates it alone; ``--select holm`` gates all five on test
with Holm's correction — run both to see what the choice buys.

    python bench/ensembles.py [--seeds 5] [--jobs 2] [--only mnist1d|digits|breast_cancer]
        [--select validation|holm]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tidian
import tidian.recipe
from common import print_table
from tidian.stages.ensemble import FOLDS

COMBINE = ["vote", "average", "weighted", "stacking", "greedy"]
# mnist1d: the built-in default recipe's baseline and architectures, plus a smaller CNN
_DEFAULT = tidian.recipe.DEFAULT_RECIPE
_ARCH = next(s["architecture"] for s in _DEFAULT["stages"] if "architecture" in s)
_CNN = _ARCH["candidates"][0]
SETTINGS = {
    "mnist1d": {
        "task": "mnist1d",
        "model": _DEFAULT["model"],
        "train": _DEFAULT["train"],
        "candidates": [
            _CNN,
            {**_CNN, "width": 16, "kernel_size": 7},
            *_ARCH["candidates"][1:],
        ],
        "arch_train": _ARCH["train"],
    },
    "digits": {
        "task": "digits",
        "model": {"name": "mlp", "hidden": [128]},
        "train": {"optimizer": "adam", "lr": 0.003, "epochs": 40, "batch_size": 64},
        "candidates": [
            {"name": "cnn2d", "width": 16},
            {"name": "mlp", "hidden": [256, 128], "dropout": 0.2},
            {"name": "linear"},
        ],
        "arch_train": {},
    },
    "breast_cancer": {  # a table: the tree families and an MLP against a linear baseline
        "task": "breast_cancer",
        "model": {"name": "linear"},
        "train": {"optimizer": "adam", "lr": 0.01, "epochs": 60, "batch_size": 32},
        "candidates": [
            {"name": "lightgbm"},
            {"name": "catboost"},
            {"name": "extra_trees"},
            {"name": "mlp", "hidden": [128, 64], "dropout": 0.1},
        ],
        "arch_train": {},
    },
}


def recipe(setting: dict, seeds: int, select: str) -> dict:
    return {
        "task": setting["task"],
        "model": setting["model"],
        "train": setting["train"],
        "evaluate": {"seeds": seeds, "select": select},
        "deploy": {"runtime": "onnxruntime"},
        "stages": [
            {"architecture": {"candidates": setting["candidates"], "train": setting["arch_train"]}},
            {"ensemble": {"members": "top", "k": 4, "combine": COMBINE}},
        ],
    }


def _reports(store, cid: int) -> list[dict]:
    """The ensemble step's report of every seed (empty for other candidates)."""
    out = []
    for r in store.seed_results(cid).values():
        steps = r["history"].get("transform", {}).get("steps", [])
        out += [s["ensemble"] for s in steps if "ensemble" in s]
    return out


def _members(reports: list[dict]) -> str:
    """Members per seed (greedy drops the ones it never picks): mean over seeds."""
    counts = [len(r.get("kept", [])) or r["members"] for r in reports]
    return f"{sum(counts) / len(counts):.1f}" if counts else "1"


def _validation(candidate: dict, reports: list[dict]) -> str:
    """The validation mean; for a combination fitted there, in-sample → cross-fitted."""
    said = [r["validation"] for r in reports if "validation" in r]
    if said and len(said) == len(reports):
        inside = sum(v["in_sample"] for v in said) / len(said)
        return f"{inside:.4f} → {sum(v['cross_fitted'] for v in said) / len(said):.4f}"
    val = candidate["quality"].get("val_mean")
    return "" if val is None else f"{val:.4f}"


def _verdict(candidate: dict) -> str:
    """The decision; for an ensemble, its p-value (Holm-adjusted under select: holm) and
    whether the stage chose it on validation."""
    gate = candidate.get("gate") or {}
    decision = candidate["decision"] or ""
    if candidate["stage"] != "ensemble" or "p_adjusted" not in gate:
        return decision
    reason = candidate["reason"] or ""
    chosen = "chosen on validation" in reason and "not chosen" not in reason
    holm = "Holm p=" in reason
    p = f"{'Holm ' if holm else ''}p={gate['p_adjusted'] if holm else gate['p_value']:.3g}"
    return f"{decision}{' (chosen)' if chosen else ''}, {p}"


def run(name: str, seeds: int, jobs: int, select: str) -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        store = tidian.Store(f"sqlite:///{Path(folder) / 'ledger.db'}")
        result = tidian.run(recipe(SETTINGS[name], seeds, select), store=store, jobs=jobs)
        reports = {c["id"]: _reports(store, c["id"]) for c in result.candidates}
    minutes = (time.perf_counter() - start) / 60
    ens_stage = next(s for s in result.stages if s["name"] == "ensemble")
    single = next(c for c in result.candidates if c["id"] == ens_stage["incumbent_before"])
    rows = []
    for c in result.candidates:
        q, cost = c["quality"], c["cost"]
        members = _members(reports[c["id"]])
        gate = c.get("gate") or {}
        gain = (
            f"{gate['gain']:+.4f} [{gate['low']:+.4f}, {gate['high']:+.4f}]"
            if c["stage"] == "ensemble"
            else ("single best" if c["id"] == single["id"] else "")
        )
        rows.append(
            [
                f"#{c['id']} {c['label'] if c['stage'] != 'baseline' else 'baseline'}"[:60],
                _validation(c, reports[c["id"]]),
                f"{q['mean']:.4f} [{q['ci_low']:.4f}, {q['ci_high']:.4f}]",
                str(members),
                f"{cost['latency_ms'] * 1000:.1f}",
                gain,
                _verdict(c),
            ]
        )
    print_table(
        f"Ensembles on {name}: {seeds} seeds, select {select}, {minutes:.1f} min with {jobs} "
        "workers",
        [
            "candidate",
            "validation",
            "test accuracy (95% CI)",
            "members (mean)",
            "µs (ORT)",
            "gain vs single best",
            "gate",
        ],
        rows,
        note="ensembles: the 4 best candidates on validation, seed by seed; weighted, stacking "
        "and greedy fitted on the validation split (their validation: in-sample → cross-fitted "
        f"over {FOLDS} folds, the figure the stage chooses on).",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", choices=sorted(SETTINGS))
    parser.add_argument("--select", choices=["validation", "holm"], default="validation")
    args = parser.parse_args()
    for name in [args.only] if args.only else SETTINGS:
        run(name, args.seeds, args.jobs, args.select)


if __name__ == "__main__":
    main()
