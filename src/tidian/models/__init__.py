"""The model zoo: plain ``torch.nn.Module`` families built by name for a task."""

from tidian.models.base import MODELS, Signature
from tidian.models.io import load_model, save_model
from tidian.models.zoo import (
    ModelSpec,
    count_parameters,
    create_model,
    describe_models,
    model_spec,
    register_model,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "Signature",
    "count_parameters",
    "create_model",
    "describe_models",
    "load_model",
    "model_spec",
    "register_model",
    "save_model",
]
