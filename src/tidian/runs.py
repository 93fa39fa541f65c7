"""What is done with a recorded run: its candidates' saved models, and exporting one.

These read the ledger (a :class:`~tidian.store.Store`) and the run's artifacts folder; they
sit above ``export`` (which knows models and files, not runs) and beside the pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tidian.evaluation.stats import paired_compare
from tidian.exceptions import DataError, bad_value
from tidian.export import (
    EXPORT_FORMAT,
    FORMATS,
    MANIFEST,
    OnnxModel,
    compare_outputs,
    example_inputs,
    export_onnx,
    file_digest,
    task_manifest,
)
from tidian.metrics import greater_is_better
from tidian.models.io import SPEC, WEIGHTS, load_model
from tidian.recipe import CONFIRM_STAGE, stored_recipe
from tidian.store import stale
from tidian.store.artifacts import committed, exists, join, local, writing


def short_text(value: Any) -> str:
    """A recipe's task or a config as people write it: ``penguins (missing=drop)``,
    ``lr=0.01, hidden=[32, 32]`` — never a Python repr."""
    if isinstance(value, dict):
        rest = {k: v for k, v in value.items() if k != "name" and v not in (None, {}, [])}
        inner = ", ".join(f"{k}={short_text(v)}" for k, v in rest.items())
        if "name" in value:
            return f"{value['name']} ({inner})" if inner else str(value["name"])
        return inner
    if isinstance(value, list | tuple):
        return "[" + ", ".join(short_text(v) for v in value) + "]"
    return str(value)


def paired_gain(
    a: list[float] | None,
    b: list[float] | None,
    metric: str,
    correction: float = 0.0,
    rows: tuple[Any, Any] | None = None,
) -> dict[str, Any] | None:
    """b − a over the same seeds (or CV units, with their ``correction``), with its 95% CI
    (None when either is missing or unpaired); ``rows``: both sides' test-row pseudo-values
    (``Store.row_table``), so that the interval is the gate's."""
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return None
    cmp = paired_compare(
        a,
        b,
        metric=metric,
        greater_is_better=greater_is_better(metric),
        correction=correction,
        rows=rows,
    )
    return {"mean": cmp.mean, "low": cmp.low, "high": cmp.high, "n": cmp.n, "p": cmp.p_ttest}


def candidate_rows(store: Any, pair: tuple[Any, Any], metric: str) -> tuple[Any, Any]:
    """Both candidates' test-row pseudo-values of ``metric`` for :func:`paired_gain`."""
    return tuple(
        store.row_table(row["id"], metric, (row.get("quality") or {}).get("units") or [])
        for row in pair
    )


def stage_note(report: dict[str, Any] | None) -> str:
    """What a stage did not do, and why, as the log, the tables and the report say it: skipped
    (its premise, the time limit), or the candidates the time limit left untrained ("" if none)."""
    note = report or {}
    if note.get("skipped"):
        return f"skipped: {note['skipped']}"
    if note.get("cut"):
        return f"{note['cut']['why']}; not trained: {', '.join(note['cut']['candidates'])}"
    return ""


def confirmed_gain(confirmation: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's confirmed gain shaped as :func:`paired_gain`'s, with ``confirmed`` and whether
    it ``held``; None when the run has no confirmation's gate."""
    g = (confirmation or {}).get("gate")
    if not g:
        return None
    return {
        "mean": g["gain"],
        "low": g["low"],
        "high": g["high"],
        "n": g["n"],
        "p": g["p_value"],
        "confirmed": True,
        "held": confirmation["held"],
    }


def best_found(candidates: list[dict[str, Any]], final_id: int | None) -> dict[str, Any] | None:
    """The candidate a search without a gate would ship: the finished one with the best
    validation mean (AutoGluon's way of choosing) — leaving out a refit and what is made from
    it (they trained on the validation rows, their scores there would be in-sample) and the
    confirmation's re-runs. None when that is the final model, or nothing has a validation
    score. Its test score and its gate's verdict say what the gate declined to claim."""
    refit: set[int] = set()
    for c in sorted(candidates, key=lambda c: c["id"]):  # a parent comes before its children
        if c["stage"] == "refit" or c.get("parent_id") in refit:
            refit.add(c["id"])
    scored = [
        c
        for c in candidates
        if c["id"] not in refit
        and c["stage"] != CONFIRM_STAGE
        and c["status"] == "done"
        and (c.get("quality") or {}).get("val_mean") is not None
    ]
    if not scored:
        return None
    sign = 1 if greater_is_better(scored[0]["quality"]["metric"]) else -1
    best = max(scored, key=lambda c: (sign * c["quality"]["val_mean"], -c["id"]))
    return None if best["id"] == final_id else best


def gain_text(gain: dict[str, Any] | None) -> str:
    """A paired gain as tables show it: ``+0.3493 [+0.2990, +0.3997]`` (— when none)."""
    if not gain:
        return "—"
    return f"{gain['mean']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}]"


def age_text(then: datetime, now: datetime | None = None) -> str:
    """How long ago ``then`` (naive UTC, as the store keeps times) was: ``40 s``, ``12 min``,
    ``3 h``, ``5 d``."""
    seconds = max(((now or datetime.now(UTC).replace(tzinfo=None)) - then).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def overview(store: Any) -> list[dict[str, Any]]:
    """One line per run of ``store``, newest first, with what a runs table shows: status (or
    why a run marked running is stale), task, metric, baseline and final quality, the paired
    gain with its CI, stages, and when it was created."""
    out = []
    for run in reversed(store.runs()):
        recipe = run["recipe"] or {}
        rows = {r["id"]: r for r in store.candidates(run["id"])}
        base = next((r for r in rows.values() if r["stage"] == "baseline"), None)
        final = rows.get(run["incumbent_id"])
        bq, fq = (base or {}).get("quality") or {}, (final or {}).get("quality") or {}
        metric = (
            fq.get("metric") or bq.get("metric") or (recipe.get("evaluate") or {}).get("metric")
        )
        confirmed = run.get("confirmation") or {}
        gain = confirmed_gain(confirmed)  # the headline: fresh seeds, unseen rows
        if gain is None and base and final and base["id"] != final["id"] and metric:
            gain = paired_gain(
                bq.get("per_seed"),
                fq.get("per_seed"),
                metric,
                fq.get("correction") or 0.0,
                candidate_rows(store, (base, final), metric),
            )
        out.append(
            {
                "run_id": run["id"],
                "status": run["status"],
                "stale": stale(run),
                "created": run["created"].isoformat(),
                "age": age_text(run["created"]),
                "driver": run["driver"],
                "heartbeat": run["heartbeat"].isoformat() if run["heartbeat"] else None,
                "task": short_text(recipe.get("task")),
                "model": (recipe.get("model") or {}).get("name"),
                "stages": [next(iter(s)) for s in recipe.get("stages", [])],
                "metric": metric,
                "baseline": bq.get("mean"),
                "final": fq.get("mean"),
                "gain": gain,  # confirmed (fresh seeds, holdout) when the run has one
                "confirmation": confirmed.get("summary") or confirmed.get("skipped"),
                "incumbent": run["incumbent_id"],
                "recipe": recipe,
            }
        )
    return out


def run_task(store: Any, run_id: str) -> Any:
    """The task run ``run_id`` was made on, loaded here from its recipe."""
    return stored_recipe(store.run(run_id)["recipe"]).load_task()


def candidate_artifact(
    store: Any, run_id: str, candidate: str | int, purpose: str
) -> tuple[dict[str, Any], Path]:
    """Candidate ``candidate`` of run ``run_id`` ('best': the incumbent) and the folder of its
    saved model (first seed); a clear error when it has none. ``purpose`` names the need."""
    run = store.run(run_id)
    if candidate == "best":
        cid = run["incumbent_id"]
        if cid is None:
            raise DataError(f"run {run_id} has no incumbent yet; give --candidate ID.")
    else:
        try:
            cid = int(candidate)
        except (TypeError, ValueError):
            raise bad_value("candidate", "'best' or a candidate id", candidate) from None
    row = store.get_candidate(cid)
    if row["run_id"] != run_id:
        raise DataError(f"candidate {cid} belongs to run {row['run_id']}, not {run_id}.")
    artifact = row["artifact"]
    if not artifact or not committed(artifact) or not exists(join(artifact, WEIGHTS)):
        where = f"at {str(artifact)!r}" if artifact else f"(status {row['status']!r})"
        raise DataError(
            f"candidate {cid} of run {run_id} has no saved model {where}; {purpose} needs its "
            f"weights: finish the run with `tidian run --resume {run_id}`, or work where the "
            "run's artifacts folder is."
        )
    return row, local(artifact)


def export_candidate(
    store: Any, run_id: str, candidate: str | int, out: str | Path, fmt: str = "onnx"
) -> dict[str, Any]:
    """Write candidate ``candidate`` ('best' = the run's incumbent) of run ``run_id`` to the
    folder ``out`` as ONNX (checked against torch on the task's test inputs; the check is
    stored in the ledger) or safetensors, with a ``manifest.json`` carrying the task's
    preprocessing and labels. Returns the manifest."""
    if fmt not in FORMATS:
        raise bad_value("format", f"one of {FORMATS}", fmt)
    row, artifact = candidate_artifact(store, run_id, candidate, "export")
    cid = row["id"]
    task = run_task(store, run_id)
    out = Path(out)
    _check_replaceable(out)
    quantized = artifact / "model.onnx"
    check: dict[str, Any] | None = None
    # The whole folder is written aside and swapped in at once: a reader (``predict``, a
    # server) sees the old export or the new one, never a model beside another's manifest.
    with writing(out) as tmp:
        if fmt == "onnx":
            files = ["model.onnx"]
            if quantized.exists():
                # An int8 model is checked for agreement with its float source, not equality.
                shutil.copyfile(quantized, tmp / files[0])
                inputs = example_inputs(task, 256)
                check = compare_outputs(
                    load_model(artifact), OnnxModel(tmp / files[0]), inputs, np.inf
                ).to_dict()
            else:
                check = export_onnx(load_model(artifact), task, tmp / files[0]).to_dict()
        else:
            files = [WEIGHTS, SPEC]
            for name in files:
                shutil.copyfile(artifact / name, tmp / name)
        manifest = {
            "format": EXPORT_FORMAT,
            "file": files[0],
            # what predict checks before it trusts the pair: the model files' SHA-256
            "digests": {name: file_digest(tmp / name) for name in files},
            "runtime": "onnxruntime" if fmt == "onnx" else "torch",
            "run": run_id,
            "candidate": cid,
            "label": row["label"],
            "stage": row["stage"],
            "quantized": quantized.exists() and fmt == "onnx",
            "quality": {
                k: (row["quality"] or {}).get(k) for k in ("metric", "mean", "ci_low", "ci_high")
            },
            "export_check": check,
            "task": task_manifest(task),
        }
        if fmt == "safetensors" and quantized.exists():
            manifest["note"] = (
                "this candidate is deployed as int8 ONNX; the safetensors file is its float source"
            )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if check is not None:
        cost = dict(row["cost"] or {})
        cost["export_check"] = check
        store.update_candidate(cid, cost=cost)
    return manifest


# What an export folder may hold: it is replaced whole, so anything else in it would be lost.
EXPORT_FILES = {MANIFEST, "model.onnx", WEIGHTS, SPEC}


def _check_replaceable(out: Path) -> None:
    """Refuse an ``out`` that a new export cannot replace whole without losing something: a
    file, or a folder holding files that are not a tidian export's; and one we cannot write."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{str(out)!r} is a file; give a folder for the export.")
    if out.is_dir():
        others = sorted(set(os.listdir(out)) - EXPORT_FILES)
        if others:
            raise DataError(
                f"{str(out)!r} holds files that are not a tidian export ({', '.join(others[:5])}"
                f"{', …' if len(others) > 5 else ''}); an export replaces its folder whole: "
                "give a new or empty folder."
            )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise DataError(f"cannot write to {str(parent)!r}: {err}") from None
