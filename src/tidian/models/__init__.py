"""The model zoo: plain ``torch.nn.Module`` families built by name for a task.

Importing this package registers every built-in family (``models.zoo``).
"""

from tidian.models.base import MODELS, Signature
from tidian.models.io import load_model, read_spec, save_model, seed_folder
from tidian.models.spec import (
    ModelSpec,
    count_parameters,
    create_model,
    model_spec,
    register_model,
    set_output_scale,
    set_spec,
)
from tidian.models.zoo import describe_models

__all__ = [
    "MODELS",
    "ModelSpec",
    "Signature",
    "count_parameters",
    "create_model",
    "describe_models",
    "load_model",
    "model_spec",
    "read_spec",
    "register_model",
    "save_model",
    "seed_folder",
    "set_output_scale",
    "set_spec",
]
