"""Apply a chain of compression steps to one seed of a trained candidate, and score it.

A *transform* is plain data: a list of one-key steps, ``[{"prune": {...}}, {"quantize": {...}}]``,
applied in order to the parent's weights for a seed (and fine-tuned with that seed), so the
compressed candidate is paired seed by seed with its parent — the gate's paired test stays
valid. Quantisation produces an ONNX Runtime model and must be the last step.

The unit of work, :func:`run_transform`, runs in a worker process: it loads the parent seed's
saved model, applies the steps, scores validation and test on the runtime the result is
deployed on (ONNX Runtime for a quantised model, torch otherwise) and writes the seed's
artifact folder (atomically: a temporary folder renamed into place).
"""

from __future__ import annotations

import json
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

from tidian.compression.lowrank import LowRankConfig, lowrank_
from tidian.compression.prune import PruneConfig, prune_
from tidian.compression.quantize import QuantizeConfig, quantize_model
from tidian.exceptions import ConfigError, bad_value

ONNX_FILE = "model.onnx"
REPORT_FILE = "compression.json"
STEP_CONFIGS = {"prune": PruneConfig, "lowrank": LowRankConfig, "quantize": QuantizeConfig}
# Steps that change a trained model without compressing it (registered by their stage).
OTHER_STEPS = ("calibrate",)
# Steps that build a new model from the parent (as its teacher) rather than change it; they
# come first in a transform.
NEW_MODEL_STEPS = ("distill", "transfer", "ensemble", "clean", "multitask")


def _validate(kind: str, config: dict[str, Any]) -> None:
    if kind == "distill":
        from tidian.stages.distill import DistillConfig

        DistillConfig(**{k: v for k, v in config.items() if k != "folders"})
    elif kind == "calibrate":
        from tidian.stages.calibrate import CalibrateConfig

        CalibrateConfig(**config)
    elif kind == "ensemble":
        from tidian.stages.ensemble import EnsembleConfig

        EnsembleConfig(
            members=config.get("members"),
            k=config.get("k"),
            combine=config.get("combine"),
            weights=config.get("weights"),
        )
    elif kind == "multitask":
        if not isinstance(config.get("model"), dict) or "weighting" not in config:
            raise bad_value("multitask step", "{model: ..., train: ..., weighting: ...}", config)
    elif kind == "clean":
        if config.get("action") not in ("remove", "downweight", "clip") or "rows" not in config:
            raise bad_value(
                "clean step", "{rows: [...], action: remove | downweight | clip}", config
            )
    elif kind == "transfer":
        from tidian.stages.transfer import STRATEGIES

        if config.get("strategy") not in STRATEGIES or not config.get("source"):
            raise bad_value("transfer step", "{source: ..., strategy: ...}", config)
    else:
        STEP_CONFIGS[kind](**config)


def check_steps(steps: Any, allow_empty: bool = False) -> list[dict[str, dict[str, Any]]]:
    """Validate a transform: known step kinds, valid configs, quantisation only last."""
    if not isinstance(steps, list) or not (steps or allow_empty):
        raise bad_value(
            "transform", "a non-empty list of {distill|prune|lowrank|quantize: {...}}", steps
        )
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or len(step) != 1:
            raise bad_value(f"transform[{i}]", "a one-key mapping {kind: config}", step)
        ((kind, config),) = step.items()
        if kind not in STEP_CONFIGS and kind not in NEW_MODEL_STEPS + OTHER_STEPS:
            kinds = (*NEW_MODEL_STEPS, *STEP_CONFIGS, *OTHER_STEPS)
            raise bad_value(f"transform[{i}]", f"one of {kinds}", kind)
        if kind in NEW_MODEL_STEPS and i:
            raise ConfigError(
                f"{kind} must be the first step of a transform: it trains a new model."
            )
        if kind == "quantize" and i != len(steps) - 1:
            raise ConfigError(
                "quantize must be the last compression step: it produces an ONNX Runtime "
                "model that torch steps (prune, lowrank) cannot change."
            )
        _validate(kind, config or {})
        out.append({kind: dict(config or {})})
    return out


def apply_steps(
    model: Any,
    steps: list[dict[str, dict[str, Any]]],
    task: Any,
    *,
    train: Any,
    seed: int,
    metric: str,
    onnx_path: Path,
) -> tuple[Any, Path | None, list[dict[str, Any]]]:
    """Apply ``steps`` to ``model`` in place; returns (model, ONNX file or None, reports)."""
    reports, onnx = [], None
    for step in check_steps(steps, allow_empty=True):
        ((kind, config),) = step.items()
        if kind == "distill":
            from tidian.stages.distill import distill_

            model, report = distill_(model, config, task, train=train, seed=seed)
        elif kind == "calibrate":
            from tidian.stages.calibrate import calibrate_

            model, report = calibrate_(model, config, task, train=train, seed=seed)
        elif kind == "ensemble":
            from tidian.stages.ensemble import ensemble_

            model, report = ensemble_(model, config, task, train=train, seed=seed, metric=metric)
        elif kind == "multitask":
            from tidian.stages.multitask import multitask_

            model, report = multitask_(model, config, task, train=train, seed=seed)
        elif kind == "clean":
            from tidian.stages.clean import clean_

            model, report = clean_(model, config, task, train=train, seed=seed)
        elif kind == "transfer":
            from tidian.stages.transfer import transfer_

            model, report = transfer_(model, config, task, train=train, seed=seed)
        elif kind == "prune":
            model, report = prune_(model, config, task, train=train, seed=seed)
        elif kind == "lowrank":
            model, report = lowrank_(model, config, task, train=train, seed=seed)
        else:
            model, report = quantize_model(
                model, task, config, onnx_path, metric=metric, train=train, seed=seed
            )
            onnx = onnx_path
        reports.append({kind: report})
    return model, onnx, reports


def run_transform(
    parent: str,
    steps: list[dict[str, dict[str, Any]]],
    task: Any,
    train: dict[str, Any],
    seed: int,
    metrics: list[str],
    out: str,
) -> Any:
    """Worker: compress seed ``seed`` of the model saved at ``parent`` into folder ``out``."""
    import torch

    from tidian.evaluation.evaluate import SeedRun, score_splits
    from tidian.evaluation.metrics import predict
    from tidian.export import OnnxModel
    from tidian.models.io import load_model, save_model
    from tidian.training.loop import History

    start = time.perf_counter()
    torch.manual_seed(seed)
    parent_dir = Path(parent)
    first = next(iter(steps[0])) if steps else None
    needs_parent = first not in ("transfer", "clean", "multitask") and not (
        (first == "distill" and steps[0]["distill"].get("teacher") != "incumbent")
        or (
            first == "ensemble" and steps[0]["ensemble"].get("members") not in ("seeds", "boosting")
        )
    )
    if needs_parent and (parent_dir / ONNX_FILE).exists():
        raise ConfigError(
            "this candidate's parent is already quantised (an ONNX Runtime model), which "
            f"{first} cannot start from; put quantize last in the recipe."
        )
    model = load_model(parent_dir) if needs_parent else None
    target = Path(out)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model, onnx, reports = apply_steps(
        model, steps, task, train=train, seed=seed, metric=metrics[0], onnx_path=tmp / ONNX_FILE
    )
    # Scored on the runtime it deploys on: ONNX Runtime for a quantised model.
    scores = score_splits(
        task, OnnxModel(onnx).predict if onnx else partial(predict, model), metrics
    )
    save_model(model, tmp, metadata={"seed": seed, "transform": steps})
    (tmp / REPORT_FILE).write_text(json.dumps(reports, indent=2, default=str))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return SeedRun(
        seed, scores, History(None), time.perf_counter() - start, None, {"steps": reports}
    )
