"""``collect``: everything a run's report shows, as plain JSON-ready data read from the store
(and, for the analyses, computed from the saved models on the task's test split).

The render layer (:mod:`tidian.report.render`) only formats this; tests check the numbers
here against the ledger. ``tidian report RUN --json`` prints it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tidian.evaluation.analysis import error_analysis, flips
from tidian.evaluation.attribution import (
    agreement,
    attribute,
    differentiable,
    permutation_importance,
)
from tidian.evaluation.calibration import reliability
from tidian.exceptions import ConfigError, TidianError, bad_value
from tidian.export import OnnxModel
from tidian.metrics import greater_is_better, predict
from tidian.models import model_spec
from tidian.models.io import WEIGHTS, candidate_folder, load_model, seed_folder
from tidian.recipe import CONFIRM_STAGE, stored_recipe
from tidian.runs import best_found, candidate_rows, paired_gain
from tidian.stages import STAGES
from tidian.store.artifacts import committed, exists, join, local

FORMAT = "tidian-report/1"
Progress = Callable[[str, int, int], None]  # (what, done, total)


def _brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The candidate fields a report shows."""
    if row is None:
        return None
    q, c = row.get("quality") or {}, row.get("cost") or {}
    label = f"{row['model']['name']} (baseline)" if row["stage"] == "baseline" else row["label"]
    return {
        "id": row["id"],
        "parent": row["parent_id"],
        "stage": row["stage"],
        "position": row["stage_position"],
        "label": label,
        "status": row["status"],
        "decision": row["decision"],
        "reason": row["reason"],
        "quality": {
            "metric": q.get("metric"),
            "mean": q.get("mean"),
            "low": q.get("ci_low"),
            "high": q.get("ci_high"),
            "per_seed": q.get("per_seed"),
            "units": q.get("units"),
            "val_mean": q.get("val_mean"),
            "folds": q.get("folds"),
            "correction": q.get("correction") or 0.0,
        },
        "cost": {
            "runtime": c.get("runtime"),
            "params": c.get("params"),
            "bytes": c.get("size_bytes"),
            "dense_bytes": c.get("dense_bytes"),
            "latency_ms": c.get("latency_ms"),
            "latency_p95_ms": c.get("latency_p95_ms"),
            "throughput": c.get("throughput"),
            "batch_size": c.get("batch_size"),
        },
        "gate": row.get("gate"),
    }


def _headline(store: Any, base: dict | None, final: dict | None, metric: str) -> dict[str, Any]:
    out: dict[str, Any] = {"baseline": base, "final": final, "metric": metric}
    if base and final:
        out["gain"] = paired_gain(
            base["quality"]["per_seed"],
            final["quality"]["per_seed"],
            metric,
            final["quality"]["correction"],
            candidate_rows(store, (base, final), metric),
        )
        bl, fl = base["cost"]["latency_ms"], final["cost"]["latency_ms"]
        bb, fb = base["cost"]["bytes"], final["cost"]["bytes"]
        out["speedup"] = bl / fl if bl and fl else None
        out["size_ratio"] = bb / fb if bb and fb else None
        out["same_runtime"] = base["cost"]["runtime"] == final["cost"]["runtime"]
    return out


def _stages(store: Any, stages: list[dict], rows: list[dict], metric: str) -> tuple[list, list]:
    """Per stage: its candidates; and the waterfall: each stage's step for the incumbent.

    A stage that changed the incumbent contributes the paired gain of the new incumbent over
    the old one (on the recipe's metric); a stage that did not contributes nothing, and the
    waterfall still shows its best candidate's gain with the reason it was turned down."""
    by_id = {r["id"]: r for r in rows}
    out, waterfall = [], []
    for st in stages:
        cands = [_brief(r) for r in rows if r["stage_position"] == st["position"]]
        out.append(
            {
                "position": st["position"],
                "name": st["name"],
                "config": st["config"],
                "status": st["status"],
                "incumbent_before": st["incumbent_before"],
                "incumbent_after": st["incumbent_after"],
                "report": st["report"],
                "candidates": cands,
            }
        )
        if st["name"] == "baseline":
            continue
        before = by_id.get(st["incumbent_before"])
        after = by_id.get(st["incumbent_after"])
        changed = after is not None and before is not None and after["id"] != before["id"]
        if changed:
            shown = after
        else:  # the candidate that came closest, to show what was turned down
            done = [r for r in rows if r["stage_position"] == st["position"] and r["gate"]]
            shown = max(done, key=lambda r: r["gate"].get("gain", -math.inf), default=None)
        step = (
            paired_gain(
                (before or {}).get("quality", {}).get("per_seed"),
                (shown or {}).get("quality", {}).get("per_seed"),
                metric,
                (shown or {}).get("quality", {}).get("correction") or 0.0,
                candidate_rows(store, (before, shown), metric),
            )
            if shown and before and (shown.get("quality") or {}).get("metric") == metric
            else None
        )
        waterfall.append(
            {
                "position": st["position"],
                "stage": st["name"],
                "candidate": shown["id"] if shown else None,
                "label": shown["label"] if shown else None,
                "accepted": changed,
                "gain": step,
                "reason": (shown or {}).get("reason")
                or (
                    (st.get("report") or {}).get("skipped")
                    and f"skipped: {st['report']['skipped']}"
                )
                or "no candidate finished",
                "latency_ratio": (
                    after["cost"]["latency_ms"] / before["cost"]["latency_ms"]
                    if changed and after.get("cost") and before.get("cost")
                    else None
                ),
            }
        )
    return out, waterfall


def _pareto(rows: list[dict], front: list[int], incumbent: int | None) -> list[dict[str, Any]]:
    return [
        {
            "id": r["id"],
            "label": _brief(r)["label"],
            "stage": r["stage"],
            "quality": r["quality"]["mean"],
            "latency_ms": r["cost"]["latency_ms"],
            "bytes": r["cost"]["size_bytes"],
            "params": r["cost"]["params"],
            "front": r["id"] in front,
            "incumbent": r["id"] == incumbent,
            "decision": r["decision"],
        }
        for r in rows
        if r["status"] == "done" and r.get("quality") and r.get("cost")
    ]


def _curve_mean(histories: list[dict[str, Any]], key: str) -> list[float | None]:
    """Mean over seeds per epoch (seeds that stopped early drop out of later epochs)."""
    columns: dict[int, list[float]] = {}
    for h in histories:
        for row in h.get("epochs", []):
            if key in row and row[key] is not None:
                columns.setdefault(int(row["epoch"]), []).append(float(row[key]))
    if not columns:
        return []
    return [
        float(np.mean(columns[e])) if e in columns else None for e in range(1, max(columns) + 1)
    ]


def _curves(store: Any, rows: list[dict], metric: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        histories = [r["history"] for r in store.seed_results(row["id"]).values()]
        series = {
            key: _curve_mean(histories, key) for key in ("train_loss", "val_loss", f"val_{metric}")
        }
        if any(series.values()):
            out.append(
                {
                    "candidate": row["id"],
                    "label": _brief(row)["label"],
                    "train_loss": series["train_loss"],
                    "val_loss": series["val_loss"],
                    "val_metric": series[f"val_{metric}"],
                    "metric": metric,
                    "seeds": len(histories),
                }
            )
    return out


def _lineage(rows: list[dict]) -> dict[str, Any]:
    return {
        "nodes": [
            {
                "id": r["id"],
                "label": _brief(r)["label"],
                "stage": r["stage"],
                "position": r["stage_position"],
                "decision": r["decision"] or r["status"],
                "parent": r["parent_id"],
            }
            for r in rows
        ],
        "edges": [[r["parent_id"], r["id"]] for r in rows if r["parent_id"] is not None],
    }


def _outputs(folder: Path, task: Any) -> np.ndarray:
    """Test outputs of a saved candidate on the runtime it deploys on (int8 ONNX when it was
    quantised; the torch model otherwise)."""

    if (folder / "model.onnx").exists():
        return OnnxModel(folder / "model.onnx").predict(task.test.x)
    return predict(load_model(folder), task.test.x)


def _seed_models(run: dict[str, Any], cid: int, seeds: list[int]) -> dict[int, Path]:
    """The saved model folders of candidate ``cid`` for ``seeds`` that exist."""

    folder = candidate_folder(run["directory"], cid)
    found = {s: seed_folder(folder, s) for s in seeds}
    return {s: local(f) for s, f in found.items() if committed(f) and exists(join(f, WEIGHTS))}


def _candidate_flips(
    store: Any,
    run: dict[str, Any],
    rows: list[dict],
    task_of: Any,
    seeds: list[int],
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """For every finished candidate with a parent: the test rows it newly gets right and newly
    gets wrong against its parent (the incumbent when it was proposed), each seed's model
    against the parent's model of the same seed, summed over ``seeds``."""

    todo = [r for r in rows if r["parent_id"] is not None and r["status"] == "done"]
    ids = sorted({c for r in todo for c in (r["id"], r["parent_id"])})
    out: dict[str, dict[str, Any]] = {}
    for k, seed in enumerate(seeds):
        task = task_of(seed)
        cache: dict[int, np.ndarray | None] = {}  # each model's test outputs, once per seed
        for i, cid in enumerate(ids):
            progress("flips of every candidate", k * len(ids) + i, len(seeds) * len(ids))
            found = _seed_models(run, cid, [seed])
            cache[cid] = _outputs(found[seed], task) if found else None
        for row in todo:
            mine, parent = cache[row["id"]], cache[row["parent_id"]]
            if mine is None or parent is None:
                continue
            f = flips(task.test.y, parent, mine)
            entry = out.setdefault(
                str(row["id"]),
                {"against": row["parent_id"], "seeds": [], "newly_right": 0, "newly_wrong": 0},
            )
            entry["seeds"].append(seed)
            entry["newly_right"] += len(f["newly_right"])
            entry["newly_wrong"] += len(f["newly_wrong"])
            entry["net"] = entry["newly_right"] - entry["newly_wrong"]
    progress("flips of every candidate", len(seeds) * len(ids), len(seeds) * len(ids))
    return out


def _analyses(
    store: Any,
    run: dict[str, Any],
    task_of: Any,
    final: dict[str, Any],
    base: dict[str, Any] | None,
    rows: list[dict],
    examples: int,
    progress: Progress,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Confusion, reliability, error analysis, flips and attributions of the final model.
    ``task_of(seed)`` is the task each seed was trained and tested on (with cross-validation,
    its unit: pooled over units, the confusion matrix is out-of-fold)."""

    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    models = _seed_models(run, final["id"], sorted(store.seed_results(final["id"])))
    if not models:
        reason = (
            f"no saved model for candidate {final['id']} under {run['directory']!r} "
            "(the run's artifacts folder is needed; resume or re-run to recreate it)"
        )
        return out, {"analyses": reason}
    seeds = list(models)
    outputs, ys = [], []
    for i, seed in enumerate(seeds):
        progress("test outputs of the final model", i, len(seeds))
        outputs.append(_outputs(models[seed], task_of(seed)))
        ys.append(task_of(seed).test.y)
    progress("test outputs of the final model", len(seeds), len(seeds))
    first = task_of(seeds[0])
    if first.target_kind == "classes":
        pooled_y, pooled = np.concatenate(ys), np.concatenate(outputs)
        out["reliability"] = {**reliability(pooled_y, pooled), "seeds": len(outputs)}
        errors = error_analysis(first, outputs[0])
        errors["seed"] = seeds[0]
        out["errors"] = errors
        matrix = np.zeros((first.n_classes, first.n_classes), dtype=np.int64)
        np.add.at(matrix, (pooled_y, pooled.argmax(1)), 1)
        out["confusion"] = {
            "classes": list(first.class_names),
            "matrix": matrix.tolist(),
            "seeds": len(outputs),
        }
        if base is not None and base["id"] != final["id"]:
            found = _seed_models(run, base["id"], [seeds[0]])
            if found:
                out["flips"] = {
                    **flips(first.test.y, _outputs(found[seeds[0]], first), outputs[0]),
                    "seed": seeds[0],
                    "against": base["id"],
                }
        out["candidate_flips"] = _candidate_flips(store, run, rows, task_of, seeds, progress)
    else:
        skipped["confusion"] = "a regression task has no confusion matrix or reliability diagram"
        y = first.test.y
        residual = outputs[0].reshape(len(y), -1)[:, 0] - y
        out["residuals"] = {
            "mean": float(residual.mean()),
            "std": float(residual.std()),
            "worst": [
                {"row": int(i), "target": float(y[i]), "error": float(residual[i])}
                for i in np.argsort(-np.abs(residual))[:10]
            ],
        }
    try:
        out["attributions"] = explain_examples(
            models[seeds[0]], first, examples=examples, progress=progress
        )
    except TidianError as err:
        skipped["attributions"] = str(err)
    return out, skipped


def explain_examples(
    folder: Path,
    task: Any,
    *,
    examples: int = 3,
    rows: list[int] | None = None,
    n_steps: int = 64,
    internal_batch_size: int = 256,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Attributions of a saved model for a few test examples (the first ``examples`` rows, or
    ``rows``), their agreement, and permutation importance for tabular tasks."""

    model = load_model(folder).eval()
    n = len(task.test)
    rows = list(range(min(examples, n))) if rows is None else [int(r) for r in rows]
    bad = [r for r in rows if not 0 <= r < n]
    if bad:
        raise bad_value("rows", f"test rows in 0..{n - 1}", bad)
    if not differentiable(model, task.test.x):
        return _gradient_free(model, task, progress)
    step = (lambda i, k: progress("attributions", i, k)) if progress else None
    result = attribute(
        model,
        task.test.x[rows],
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        progress=step,
    )
    agree = agreement(result["integrated_gradients"], result["saliency"])
    classes = task.class_names if task.target_kind == "classes" else None
    vocab = task.vocab if task.input_kind == "text" else None
    items = []
    for k, r in enumerate(rows):
        item = {
            "row": r,
            "label": classes[int(task.test.y[r])] if classes else float(task.test.y[r]),
            "predicted": classes[result["target"][k]]
            if classes
            else float(result["outputs"][k].reshape(-1)[0]),
            "integrated_gradients": result["integrated_gradients"][k].tolist(),
            "saliency": result["saliency"][k].tolist(),
            "delta": float(result["delta"][k]),
            "relative_delta": float(result["relative_delta"][k]),
            "spearman": agree["spearman"][k],
            "top_overlap": agree["top_overlap"][k],
        }
        if task.input_kind == "sequence":  # drawn with its attribution on one time axis
            item["input"] = np.asarray(task.test.x[r], dtype=float).tolist()
        if vocab is not None:
            ids = task.test.x[r]
            item["tokens"] = [vocab[int(t)] if int(t) < len(vocab) else str(int(t)) for t in ids]
        items.append(item)
    out = {
        "input_kind": task.input_kind,
        "input_shape": list(task.input_shape),
        "feature_names": list(task.feature_names) if task.feature_names else None,
        "n_steps": n_steps,
        "examples": items,
        "agreement": {k: agree[k] for k in ("mean_spearman", "mean_top_overlap", "top")},
    }
    if task.input_kind == "vector":
        if progress:
            progress("permutation importance", 0, 1)
        out["permutation"] = permutation_importance(model, task)
    return out


def _gradient_free(model: Any, task: Any, progress: Progress | None) -> dict[str, Any]:
    """A model without input gradients (trees): permutation importance alone, on tables."""
    spec = model_spec(model)
    why = (
        f"{spec.options.get('source') or spec.name if spec else type(model).__name__} is a tree "
        "model: piecewise constant, so its input gradients are zero and Integrated Gradients "
        "and saliency say nothing about it"
    )
    if task.input_kind != "vector":
        raise ConfigError(f"{why}; permutation importance is for tabular (vector) tasks.")
    if progress:
        progress("permutation importance", 0, 1)
    return {
        "input_kind": task.input_kind,
        "input_shape": list(task.input_shape),
        "feature_names": list(task.feature_names) if task.feature_names else None,
        "examples": [],
        "gradient_free": why + "; permutation importance below.",
        "permutation": permutation_importance(model, task),
    }


def _learning_curves(stages: list[dict]) -> list[dict[str, Any]]:
    return [
        {"position": st["position"], **st["report"]["learning_curve"]}
        for st in stages
        if (st.get("report") or {}).get("learning_curve")
    ]


def _multitask(store: Any, rows: list[dict], stages: set[str]) -> list[dict[str, Any]]:
    """Per multi-task candidate (of the ``stages`` that declare this section), each further
    target's test score (mean over seeds) beside the same base model trained on that target
    alone, from the seeds' reports."""
    out = []
    for row in rows:
        if row["stage"] not in stages or row["status"] != "done":
            continue
        targets: dict[str, dict[str, Any]] = {}
        for result in store.seed_results(row["id"]).values():
            for step in result["history"].get("transform", {}).get("steps", []):
                for name, score in (step.get("multitask") or {}).get("targets", {}).items():
                    t = targets.setdefault(
                        name, {"metric": score["metric"], "multitask": [], "single_task": []}
                    )
                    t["multitask"].append(score["multitask"])
                    if "single_task" in score:
                        t["single_task"].append(score["single_task"])
        for t in targets.values():
            for key in ("multitask", "single_task"):
                t[f"{key}_mean"] = float(np.mean(t[key])) if t[key] else None
        out.append({"candidate": row["id"], "label": row["label"], "targets": targets})
    return out


def _tuning(stages: list[dict]) -> list[dict[str, Any]]:
    return [
        {
            "position": st["position"],
            "stage": st["name"],
            "importances": st["report"]["importances"],
            "trials": st["report"].get("trials"),
        }
        for st in stages
        if (st.get("report") or {}).get("importances")
    ]


# Report sections that stages feed; a stage declares the ones it feeds (``Stage.sections``),
# and a section is collected only for runs with such a stage.
SECTIONS: dict[str, Callable[[Any, list[dict], list[dict], set[str]], list[dict[str, Any]]]] = {
    "tuning": lambda store, stages, rows, names: _tuning(stages),
    "learning_curves": lambda store, stages, rows, names: _learning_curves(stages),
    "multitask": lambda store, stages, rows, names: _multitask(store, rows, names),
}


def _sections(store: Any, stages: list[dict], rows: list[dict]) -> dict[str, Any]:
    feeding: dict[str, set[str]] = {section: set() for section in SECTIONS}
    for st in stages:
        if st["name"] in STAGES:  # a stage a newer tidian may have added is left out
            for section in STAGES.get(st["name"]).sections:
                feeding[section].add(st["name"])
    return {
        section: make(store, stages, rows, feeding[section]) if feeding[section] else []
        for section, make in SECTIONS.items()
    }


def _reproduce(run: dict[str, Any]) -> dict[str, Any]:
    env = run.get("environment") or {}
    recipe_yaml = yaml.safe_dump(run["recipe"], sort_keys=False)
    return {
        "command": env.get("command"),
        "recipe_yaml": recipe_yaml,
        "rerun": "tidian run recipe.yaml   # with the recipe below saved as recipe.yaml",
    }


def collect(
    store: Any,
    run_id: str,
    *,
    analyses: bool = True,
    examples: int = 3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The report's data for run ``run_id`` of ``store``. ``analyses=False`` reads the ledger
    only (no model is loaded); otherwise the final model's test outputs give the confusion
    matrix, reliability diagram, error analysis, flips against the baseline and attributions
    for ``examples`` test rows. Analyses that cannot be made are listed under ``skipped``
    with the reason."""

    progress = progress or (lambda what, done, total: None)
    run = store.run(run_id)
    # the confirmation's re-runs are the headline's, not candidates of a stage
    rows = [r for r in store.candidates(run_id) if r["stage"] != CONFIRM_STAGE]
    stages = store.stages(run_id)
    by_id = {r["id"]: r for r in rows}
    base_row = next((r for r in rows if r["stage"] == "baseline"), None)
    final_row = by_id.get(run["incumbent_id"])
    metric = ((base_row or {}).get("quality") or {}).get("metric") or (
        run["recipe"].get("evaluate") or {}
    ).get("metric")
    base, final = _brief(base_row), _brief(final_row)
    stage_data, waterfall = _stages(store, stages, rows, metric) if metric else ([], [])
    shown = [r for r in (base_row, final_row) if r and r["status"] == "done"]
    data: dict[str, Any] = {
        "format": FORMAT,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": {
            "id": run["id"],
            "status": run["status"],
            "created": run["created"].isoformat(timespec="seconds"),
            "finished": run["finished"].isoformat(timespec="seconds") if run["finished"] else None,
            "error": run["error"],
            "store": store.display_url(),
            "directory": run["directory"],
        },
        "metric": metric,
        "greater_is_better": greater_is_better(metric) if metric else True,
        "headline": {
            **_headline(store, base, final, metric),
            "confirmation": run.get("confirmation"),
            # the best candidate on validation when the gate did not keep it
            "found": _brief(best_found(rows, run["incumbent_id"])),
        },
        "stages": stage_data,
        "waterfall": waterfall,
        "pareto": _pareto(rows, run["pareto"] or [], run["incumbent_id"]),
        "curves": _curves(store, list({r["id"]: r for r in shown}.values()), metric)
        if metric
        else [],
        "lineage": _lineage(rows),
        **_sections(store, stages, rows),
        "environment": run.get("environment"),
        "reproduce": _reproduce(run),
        "skipped": {},
    }
    if run.get("environment") is None:
        data["skipped"]["environment"] = "this run was made before runs recorded their environment"
    try:
        recipe = stored_recipe(run["recipe"])
        task = recipe.load_task()
        data["task"] = task.summary()
    except TidianError as err:
        data["task"] = None
        data["skipped"]["analyses"] = f"the run's task cannot be loaded here: {err}"
        return data
    if not analyses:
        data["skipped"]["analyses"] = "not requested (--no-analyses)"
    elif final_row is None or final_row["status"] != "done":
        data["skipped"]["analyses"] = "the run has no finished incumbent yet"
    else:
        cv = recipe.cv()
        units: dict[int, Any] = {}

        def task_of(seed: int) -> Any:
            if cv is None:
                return task
            if seed not in units:
                units[seed] = cv.task(task, seed)
            return units[seed]

        found, skipped = _analyses(store, run, task_of, final, base, rows, examples, progress)
        data.update(found)
        data["skipped"].update(skipped)
    return data


def to_json(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with NaN/inf replaced by None (strict JSON for browsers and ``--json``)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    return clean(data)
