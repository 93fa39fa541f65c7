"""Ensembles against the single best model: vote, averaging, fitted weights, stacking and
greedy selection, on mnist1d and digits.

Each data set is one tidian run: a baseline, an ``architecture`` stage of diverse models (the
single best is the incumbent after it), then an ``ensemble`` stage over the run's 4 best
candidates on validation with every combination. All candidates share the same 5 seeds, so
each ensemble's gain over the single best is paired; latency is batch 1 on ONNX Runtime (one
thread), the ensemble as one graph.

    python bench/ensembles.py [--seeds 5] [--jobs 2] [--only mnist1d|digits]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tidian
import tidian.recipe
from common import print_table

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
}


def recipe(setting: dict, seeds: int) -> dict:
    return {
        "task": setting["task"],
        "model": setting["model"],
        "train": setting["train"],
        "evaluate": {"seeds": seeds},
        "deploy": {"runtime": "onnxruntime"},
        "stages": [
            {"architecture": {"candidates": setting["candidates"], "train": setting["arch_train"]}},
            {"ensemble": {"members": "top", "k": 4, "combine": COMBINE}},
        ],
    }


def _members(store, cid: int) -> str:
    """Members per seed (greedy drops the ones it never picks): mean over seeds."""
    counts = []
    for r in store.seed_results(cid).values():
        steps = r["history"].get("transform", {}).get("steps", [])
        report = next((s["ensemble"] for s in steps if "ensemble" in s), None)
        counts.append(len(report.get("kept", [])) or report["members"] if report else 1)
    return f"{sum(counts) / len(counts):.1f}" if counts else "1"


def run(name: str, seeds: int, jobs: int) -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        store = tidian.Store(f"sqlite:///{Path(folder) / 'ledger.db'}")
        result = tidian.run(recipe(SETTINGS[name], seeds), store=store, jobs=jobs)
        kept = {c["id"]: _members(store, c["id"]) for c in result.candidates}
    minutes = (time.perf_counter() - start) / 60
    ens_stage = next(s for s in result.stages if s["name"] == "ensemble")
    single = next(c for c in result.candidates if c["id"] == ens_stage["incumbent_before"])
    rows = []
    for c in result.candidates:
        q, cost = c["quality"], c["cost"]
        members = kept[c["id"]]
        gate = c.get("gate") or {}
        gain = (
            f"{gate['gain']:+.4f} [{gate['low']:+.4f}, {gate['high']:+.4f}]"
            if c["stage"] == "ensemble"
            else ("single best" if c["id"] == single["id"] else "")
        )
        rows.append(
            [
                f"#{c['id']} {c['label'] if c['stage'] != 'baseline' else 'baseline'}"[:60],
                f"{q['mean']:.4f} [{q['ci_low']:.4f}, {q['ci_high']:.4f}]",
                str(members),
                f"{cost['latency_ms'] * 1000:.1f}",
                gain,
                c["decision"] or "",
            ]
        )
    print_table(
        f"Ensembles on {name}: {seeds} seeds, {minutes:.1f} min with {jobs} workers",
        [
            "candidate",
            "accuracy (95% CI)",
            "members (mean)",
            "µs (ORT)",
            "gain vs single best",
            "gate",
        ],
        rows,
        note="ensembles: the 4 best candidates on validation, seed by seed; weighted, stacking "
        "and greedy fitted on the validation split.",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", choices=sorted(SETTINGS))
    args = parser.parse_args()
    for name in [args.only] if args.only else SETTINGS:
        run(name, args.seeds, args.jobs)


if __name__ == "__main__":
    main()
