"""tidian's no-recipe default against AutoGluon-Tabular on the same rows and the same time
limit: breast_cancer, wine, digits (64 flat features), penguins, the affairs data
(statsmodels) and diabetes (regression).

For each set, tidian runs the recipe ``tidian recipe suggest`` makes for it (the tree
families, an MLP, a tuning stage, a weighted ensemble of the best five, int8) under
``--time-limit``, and the run's rows — its training rows, its validation rows, its test rows
and the holdout its confirmation scores — are handed to AutoGluon (``--autogluon PYTHON``: a
Python whose environment has ``autogluon.tabular``; it runs ``bench/autogluon_side.py``)
with the validation rows as its tuning data, the same time limit and ``--preset``
(medium_quality), ``--fits`` times with different seeds.

Compared on the same rows, the holdout, which no stage of tidian's run reads (the test rows
when the set is too small for one): tidian's confirmed accuracy of its final model (fresh
seeds, trained on the training rows, scored on the holdout; when no stage kept a change the
run has no confirmation, and the baseline is trained here on the same fresh seeds and scored
on those rows, as the confirmation would) with its 95% interval, against AutoGluon's mean over
its fits on those rows. The gap has its own 95% interval over the rows (``paired_gap``: the
two sides' row-group pseudo-values differenced group by group, as a gate counts rows) and is
also given in rows: on 36–270 rows one row is 0.4–2.8 points. Then
wall time, the deployed model's size (tidian: the final's file; AutoGluon: its predictor
folder) and batch-1 latency (tidian: ONNX Runtime, one thread; AutoGluon: ``predict`` on a
one-row DataFrame). The issue's target: within 0.2 point of AutoGluon or above on at least
5 of 6 sets, at ≤ 1 ms and ≤ 1 MB.

Beside the proven final, the table shows what tidian's search *found*: the candidate with the
best validation mean over the whole run (the way AutoGluon picks, no gate), its test score
over the run's seeds and its gap to AutoGluon on the test rows — chosen without the test
rows, so an honest estimate, but not a gain any gate accepted. A small table's recipe
evaluates by cross-validation (every row outside the holdout is a test row once): its test
score is then over all those rows and has no AutoGluon counterpart ("— (CV)").

    python bench/vs_autogluon.py [--time-limit 5m] [--jobs 2] [--sets digits,wine]
        [--autogluon /path/to/ag-env/bin/python] [--fits 3] [--preset medium_quality]
        [--keep DIR]   # each set's ledger kept in DIR/SET (`tidian show` reads it)
        [--max-bytes 1MB] [--max-latency-ms 1]   # the target's cost limits, given to tidian
                                                 # as `tidian run --max-bytes …` gives them

The affairs data needs ``statsmodels`` (``pip install statsmodels``); without it that set is
left out and the table says so. Everything else ships with tidian's dependencies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tidian
from common import print_table
from tidian.metrics import row_pseudo_values
from tidian.pipeline import result as run_result
from tidian.recipe import load_recipe
from tidian.runs import best_found
from tidian.suggest import suggest_recipe

SETS = ("breast_cancer", "wine", "digits", "penguins", "affairs", "diabetes")
HERE = Path(__file__).resolve().parent


def table_task(name: str, folder: Path) -> dict | None:
    """The set as tidian reads it: a built-in name, or a CSV written here."""
    if name in ("breast_cancer", "wine", "penguins"):
        return {"name": name}
    if name == "digits":  # the 8×8 images as 64 numbers: a table, not an image task
        from sklearn.datasets import load_digits

        data = load_digits(as_frame=True).frame.rename(columns={"target": "y"})
        data["y"] = data["y"].map(lambda d: f"digit{d}")
    elif name == "diabetes":
        from sklearn.datasets import load_diabetes

        data = load_diabetes(as_frame=True).frame.rename(columns={"target": "y"})
    elif name == "affairs":
        try:
            from statsmodels.datasets import fair
        except ImportError:
            return None
        data = fair.load_pandas().data
        data["y"] = np.where(data.pop("affairs") > 0, "yes", "no")
    else:
        raise SystemExit(f"unknown set {name!r}; choose from {', '.join(SETS)}")
    path = folder / f"{name}.csv"
    data.to_csv(path, index=False)
    return {"path": str(path), "target": "y"}


def baseline_on(parsed, task, rows, metric: str, jobs: int) -> tuple:
    """The recipe's baseline trained on the run's training rows with the confirmation's
    fresh seeds and scored on ``rows`` (the holdout, else the test split): what the
    confirmation measures for the baseline, for a run whose stages kept nothing (it has no
    confirmation). With cross-validation the run's own scores are over every row, which
    AutoGluon is not scored on."""
    evaluation = tidian.evaluate(
        parsed.model,
        task.replace(test=rows),
        parsed.train,
        seeds=parsed.confirm_seeds(),
        metric=metric,
        n_jobs=jobs,
    )
    score = evaluation.summary["test"][metric]
    return score.mean, score.low, score.high, evaluation.row_table(metric)


def run_tidian(
    task: dict, limit: str, jobs: int, folder: Path, constraints: dict | None = None
) -> dict:
    recipe, _ = suggest_recipe(task)
    recipe["budget"] = {"time": limit}
    store = tidian.Store(f"sqlite:///{folder / 'ledger.db'}")
    start = time.perf_counter()
    # the cost limits as `tidian run --max-bytes/--max-latency-ms` records them
    outcome = tidian.run(recipe, store=store, jobs=jobs, constraints=constraints)
    wall = time.perf_counter() - start
    final = outcome.incumbent
    full = run_result(store, outcome.run_id)
    confirmed = None
    if full.confirmation and "final" in full.confirmation:
        confirmed = next(c for c in full.confirmations if c["id"] == full.confirmation["final"])
    parsed = load_recipe(recipe)
    task_, holdout, _ = parsed.load_tasks()
    metric = final["quality"]["metric"]
    rows = holdout if holdout is not None else task_.test
    if confirmed:
        quality = confirmed["quality"]
        mean, low, high = quality["mean"], quality["ci_low"], quality["ci_high"]
        groups = store.row_table(confirmed["id"], metric, full.confirmation["seeds"])
    else:  # nothing kept: the baseline as the confirmation would score it
        mean, low, high, groups = baseline_on(parsed, task_, rows, metric, jobs)
    cost = final["cost"]
    # the best on validation (refits left out), as `tidian show` names it; or the final itself
    found = best_found(full.candidates, final["id"]) or final
    return {
        "recipe": recipe,
        "found": {"label": found["label"], "mean": found["quality"]["mean"]},
        "cv": parsed.evaluate.folds is not None,
        "label": final["label"],
        "rows": "holdout" if holdout is not None else "test",  # AutoGluon's side names them
        "count": len(rows),
        "y": rows.y,
        "metric": metric,
        # per seed, the compared rows' group pseudo-values (metrics.row_pseudo_values)
        "groups": groups,
        "mean": mean,
        "low": low,
        "high": high,
        "seconds": wall,
        "bytes": cost.get("size_bytes"),
        "latency_ms": cost.get("latency_ms"),
        "runtime": cost.get("runtime"),
        "task": task_,
        "holdout": holdout,
    }


def paired_gap(mine: dict, fits: list[dict], classes: bool) -> tuple[float, float, float]:
    """tidian − AutoGluon on the compared rows (AutoGluon − tidian for an error metric, so
    that positive is tidian ahead), with a 95% t-interval over the rows' groups: each side's
    row-group pseudo-values (the ones a gate counts: ``metrics.row_pseudo_values``), tidian's
    averaged over its seeds and AutoGluon's over its fits, differenced group by group. It
    says how far the gap could be the rows' luck, holding both sides' seeds fixed."""
    from scipy import stats

    y = np.asarray(mine["y"])
    theirs = []
    for fit in fits:
        predicted = np.asarray(fit["predicted"][mine["rows"]])
        outputs = (
            np.eye(int(max(y.max(), predicted.max())) + 1)[predicted]
            if classes
            else predicted.reshape(-1, 1)
        )
        theirs.append(row_pseudo_values(y, outputs, [mine["metric"]])[mine["metric"]])
    diff = np.mean(mine["groups"], axis=0) - np.mean(theirs, axis=0)
    diff = diff if classes else -diff
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    return float(diff.mean()), float(diff.mean() - half), float(diff.mean() + half)


def run_autogluon(python: str, mine: dict, limit_s: float, fits: int, preset: str, folder: Path):
    task, holdout = mine["task"], mine["holdout"]
    empty = np.zeros((0, *task.test.x.shape[1:]), dtype=np.float32)
    data = folder / "rows.npz"
    # the labels as tidian encoded them: AutoGluon sees the very same rows and classes
    np.savez(
        data,
        x_train=task.train.x,
        y_train=task.train.y,
        x_val=task.val.x,
        y_val=task.val.y,
        x_test=task.test.x,
        y_test=task.test.y,
        x_holdout=holdout.x if holdout is not None else empty,
        y_holdout=holdout.y if holdout is not None else np.zeros(0),
        kind=np.array(task.target_kind),
    )
    out = subprocess.run(
        [python, str(HERE / "autogluon_side.py"), str(data), str(limit_s), str(fits), preset],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"AutoGluon's side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", default="5m")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--autogluon", help="a Python with autogluon.tabular installed")
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--preset", default="medium_quality")
    parser.add_argument("--keep", help="a folder to keep each set's tidian ledger in")
    parser.add_argument("--max-bytes", help="tidian's cost limit on size (as tidian run's)")
    parser.add_argument("--max-latency-ms", type=float, help="tidian's limit on batch-1 latency")
    args = parser.parse_args()
    given = {"max_bytes": args.max_bytes, "max_latency_ms": args.max_latency_ms}
    constraints = {k: v for k, v in given.items() if v is not None} or None
    from tidian.recipe import parse_duration

    limit_s = parse_duration(args.time_limit, "--time-limit")
    rows, missing = [], []
    for name in args.sets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            task = table_task(name, folder)
            if task is None:
                missing.append(f"{name}: needs statsmodels (pip install statsmodels)")
                continue
            keep = Path(args.keep) / name if args.keep else folder
            keep.mkdir(parents=True, exist_ok=True)
            mine = run_tidian(task, args.time_limit, args.jobs, keep, constraints)
            classes = mine["task"].target_kind == "classes"
            scale = 100 if classes else 1
            row = [
                name,
                f"{mine['mean'] * scale:.2f} [{mine['low'] * scale:.2f}, "
                f"{mine['high'] * scale:.2f}] ({mine['count']} {mine['rows']} rows)",
                mine["label"][:28],
                f"{mine['seconds']:.0f} s",
                f"{(mine['bytes'] or 0) / 1024:.1f} kB",
                f"{(mine['latency_ms'] or 0) * 1e3:.0f} µs",
                f"{mine['found']['mean'] * scale:.2f} ({mine['found']['label'][:24]})",
            ]
            if args.autogluon:
                fits = run_autogluon(args.autogluon, mine, limit_s, args.fits, args.preset, folder)
                theirs = np.mean([f[mine["rows"]] for f in fits]) * scale
                gap = (mine["mean"] * scale - theirs) * (1 if classes else -1)
                in_rows = gap * mine["count"] / 100  # a gap in points as rows: 1 row = 100/count
                _, low, high = paired_gap(mine, fits, classes)
                on_test = np.mean([f["test"] for f in fits]) * scale
                found = (mine["found"]["mean"] * scale - on_test) * (1 if classes else -1)
                row += [
                    f"{theirs:.2f}",
                    f"{gap:+.2f} [{low * scale:+.2f}, {high * scale:+.2f}]"
                    + (f" ({in_rows:+.1f} rows)" if classes else ""),
                    "— (CV)" if mine["cv"] else f"{found:+.2f}",
                    f"{np.mean([f['seconds'] for f in fits]):.0f} s",
                    f"{np.mean([f['bytes'] for f in fits]) / 1024:.0f} kB",
                    f"{np.median([f['latency_ms'] for f in fits]) * 1e3:.0f} µs",
                ]
            rows.append(row)
            print(
                json.dumps({"set": name, "row": row}, ensure_ascii=False), file=sys.stderr
            )  # progress, one line a set
    headers = ["set", "tidian (95% CI; rows)", "tidian final", "wall", "size", "batch-1"]
    headers += ["found: best on validation (test)"]
    if args.autogluon:
        headers += ["AutoGluon mean", "tidian − AG", "found − AG (test)", "AG wall", "AG size"]
        headers += ["AG batch-1"]
    print_table(
        f"tidian's suggested recipe vs AutoGluon {args.preset}, time limit {args.time_limit}"
        + (f", tidian's cost limits {constraints}" if constraints else ""),
        headers,
        rows,
        note="accuracy in % (diabetes: RMSE, lower is better; 'tidian − AG' is then AG − "
        "tidian so that positive is tidian ahead). tidian: the confirmed final on the "
        "holdout (fresh seeds; the baseline on the same seeds when no stage kept a change); "
        "AutoGluon is scored on the same rows; the gap's interval is over those rows "
        "(paired by row group), and '(k rows)' is the gap counted in rows. Latency: tidian on "
        "ONNX Runtime (1 thread), AutoGluon's predict on a one-row DataFrame. found: the run's "
        "candidate with the best validation mean (no gate), its test score over the run's "
        "seeds (with cross-validation: over the CV units); found − AG compares it with "
        "AutoGluon on the test rows."
        + ("".join(f"\nleft out: {m}" for m in missing))
        + ("" if args.autogluon else "\nAutoGluon not run: pass --autogluon PYTHON."),
    )


if __name__ == "__main__":
    main()
