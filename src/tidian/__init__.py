"""tidian — upgrade machine-learning models and prove each upgrade.

The public API lives here; submodules are implementation details::

    import tidian
    task = tidian.load_task("mnist1d")
    result = tidian.evaluate({"name": "cnn1d", "width": 32}, task, {"epochs": 20}, seeds=5)
    print(result["accuracy"])          # mean ± 95% CI over seeds
"""

import importlib
from typing import TYPE_CHECKING, Any

from tidian import _startup  # noqa: F401 - quiet Ctrl-C while the command starts

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from tidian.compression import PruneConfig, prune_
    from tidian.compression.lowrank import LowRankConfig, lowrank_
    from tidian.compression.quantize import QuantizeConfig, quantize_model
    from tidian.evaluation import (
        METRICS,
        Cost,
        Evaluation,
        PairedComparison,
        SeedRun,
        Summary,
        classification_report,
        compare,
        confidence_interval,
        confusion_matrix,
        evaluate,
        measure_cost,
        paired_compare,
        predict,
        score,
        summarize,
    )
    from tidian.exceptions import (
        ConfigError,
        DataError,
        DependencyError,
        TidianError,
        UnknownNameError,
    )
    from tidian.export import OnnxModel, export_onnx, predict_file
    from tidian.models import (
        MODELS,
        ModelSpec,
        Signature,
        count_parameters,
        create_model,
        describe_models,
        load_model,
        model_spec,
        register_model,
        save_model,
    )
    from tidian.pipeline import RunResult, run
    from tidian.recipe import Recipe, RecipeError, load_recipe
    from tidian.registry import Registry, import_plugins
    from tidian.stages import STAGES, Proposal, Stage
    from tidian.store import Store, StoreError
    from tidian.tasks import TASKS, Split, Task, array_task, load_task
    from tidian.training import LOSSES, OPTIMIZERS, History, PlainStep, TrainConfig, fit

# The public names, each imported from its module on first use (PEP 562): `import tidian`
# and the command line start without loading torch or scikit-learn (seconds), which the
# commands that need them import when they run.
_EXPORTS = {
    "PruneConfig": "tidian.compression",
    "prune_": "tidian.compression",
    "LowRankConfig": "tidian.compression.lowrank",
    "lowrank_": "tidian.compression.lowrank",
    "QuantizeConfig": "tidian.compression.quantize",
    "quantize_model": "tidian.compression.quantize",
    "METRICS": "tidian.evaluation",
    "Cost": "tidian.evaluation",
    "Evaluation": "tidian.evaluation",
    "PairedComparison": "tidian.evaluation",
    "SeedRun": "tidian.evaluation",
    "Summary": "tidian.evaluation",
    "classification_report": "tidian.evaluation",
    "compare": "tidian.evaluation",
    "confidence_interval": "tidian.evaluation",
    "confusion_matrix": "tidian.evaluation",
    "evaluate": "tidian.evaluation",
    "measure_cost": "tidian.evaluation",
    "paired_compare": "tidian.evaluation",
    "predict": "tidian.evaluation",
    "score": "tidian.evaluation",
    "summarize": "tidian.evaluation",
    "ConfigError": "tidian.exceptions",
    "DataError": "tidian.exceptions",
    "DependencyError": "tidian.exceptions",
    "TidianError": "tidian.exceptions",
    "UnknownNameError": "tidian.exceptions",
    "OnnxModel": "tidian.export",
    "export_onnx": "tidian.export",
    "predict_file": "tidian.export",
    "MODELS": "tidian.models",
    "ModelSpec": "tidian.models",
    "Signature": "tidian.models",
    "count_parameters": "tidian.models",
    "create_model": "tidian.models",
    "describe_models": "tidian.models",
    "load_model": "tidian.models",
    "model_spec": "tidian.models",
    "register_model": "tidian.models",
    "save_model": "tidian.models",
    "RunResult": "tidian.pipeline",
    "run": "tidian.pipeline",
    "Recipe": "tidian.recipe",
    "RecipeError": "tidian.recipe",
    "load_recipe": "tidian.recipe",
    "Registry": "tidian.registry",
    "import_plugins": "tidian.registry",
    "STAGES": "tidian.stages",
    "Proposal": "tidian.stages",
    "Stage": "tidian.stages",
    "Store": "tidian.store",
    "StoreError": "tidian.store",
    "TASKS": "tidian.tasks",
    "Split": "tidian.tasks",
    "Task": "tidian.tasks",
    "array_task": "tidian.tasks",
    "load_task": "tidian.tasks",
    "LOSSES": "tidian.training",
    "OPTIMIZERS": "tidian.training",
    "History": "tidian.training",
    "PlainStep": "tidian.training",
    "TrainConfig": "tidian.training",
    "fit": "tidian.training",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tidian' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "METRICS",
    "MODELS",
    "OPTIMIZERS",
    "STAGES",
    "TASKS",
    "ConfigError",
    "Cost",
    "DataError",
    "DependencyError",
    "Evaluation",
    "History",
    "LowRankConfig",
    "ModelSpec",
    "OnnxModel",
    "PairedComparison",
    "PlainStep",
    "Proposal",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "RecipeError",
    "Registry",
    "RunResult",
    "SeedRun",
    "Signature",
    "Split",
    "Stage",
    "Store",
    "StoreError",
    "Summary",
    "Task",
    "TidianError",
    "TrainConfig",
    "UnknownNameError",
    "__version__",
    "array_task",
    "classification_report",
    "compare",
    "confidence_interval",
    "confusion_matrix",
    "count_parameters",
    "create_model",
    "describe_models",
    "evaluate",
    "export_onnx",
    "fit",
    "import_plugins",
    "load_model",
    "load_recipe",
    "load_task",
    "lowrank_",
    "measure_cost",
    "model_spec",
    "paired_compare",
    "predict",
    "predict_file",
    "prune_",
    "quantize_model",
    "register_model",
    "run",
    "save_model",
    "score",
    "summarize",
]
