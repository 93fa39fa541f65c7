"""tidian — upgrade machine-learning models and prove each upgrade.

The public API lives here; submodules are implementation details::

    import tidian
    task = tidian.load_task("mnist1d")
    result = tidian.evaluate({"name": "cnn1d", "width": 32}, task, {"epochs": 20}, seeds=5)
    print(result["accuracy"])          # mean ± 95% CI over seeds
"""

from tidian import _startup
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

__version__ = "0.1.0"

_startup.done()

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
