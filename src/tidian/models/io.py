"""Saving and loading models as safetensors weights plus a JSON spec — never pickle.

A saved model is a folder::

    model.safetensors   the state dict (parameters and buffers)
    tidian.json         {"format": "tidian-model/1", "model": {name, options, signature} | null,
                         "structure": {module path: replacement record}}

A compressed zoo model (units pruned, layers factorised) rebuilds from its spec, then is
conformed to the saved tensor shapes and replacement records (``compression.surgery``).

Zoo models rebuild from the spec alone. A user's own module is saved the same way with
``"model": null``; loading it needs the user's factory: ``load_model(path, factory=MyNet)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model
from torch import nn

from tidian.exceptions import ConfigError, DataError
from tidian.models.spec import ModelSpec, create_model, model_spec, set_spec
from tidian.models.structure import conform, structure_of
from tidian.store.artifacts import join, local

FORMAT = "tidian-model/1"
WEIGHTS, SPEC = "model.safetensors", "tidian.json"


def candidate_folder(run_directory: str | Path, candidate_id: int) -> str | Path:
    """Where a run keeps a candidate's models (its seeds' folders): a path or a URL."""
    return join(run_directory, f"candidate-{candidate_id}")


def seed_folder(candidate: str | Path, seed: int) -> str | Path:
    """Where a run keeps one seed's model of a candidate (every seed is kept): a path, or a
    URL when the run's artifacts are remote (``store.artifacts``)."""
    return join(candidate, f"seed-{seed}")


def save_model(
    model: nn.Module, path: str | Path, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to folder ``path`` (created if needed); returns the folder. A model
    may carry ``library_files`` (file name → bytes): the model in its library's own format
    (a tree family's LightGBM text, XGBoost JSON, CatBoost binary), written beside the
    weights so a user can go on in that library; tidian itself never reads them."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    spec = model_spec(model)
    files = dict(getattr(model, "library_files", None) or {})
    doc = {
        "format": FORMAT,
        "model": spec.to_dict() if spec else None,
        "torch": torch.__version__,
        "metadata": metadata or {},
        "structure": structure_of(model),
        "library_files": sorted(files),
    }
    for name, data in files.items():
        (folder / _plain_name(name)).write_bytes(data)
    # safetensors' save_model de-duplicates tied tensors that a plain state dict would reject.
    st_save_model(model.cpu(), str(folder / WEIGHTS))
    (folder / SPEC).write_text(json.dumps(doc, indent=2, sort_keys=True))
    return folder


def _description(path: str | Path) -> dict[str, Any]:
    spec_file = local(path) / SPEC
    try:
        return json.loads(spec_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(
            f"{str(spec_file)!r} cannot be read as a tidian model spec: {err}"
        ) from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """What was saved with a model (``save_model(..., metadata=)``), without loading it."""
    return _description(path).get("metadata") or {}


def read_spec(path: str | Path) -> dict[str, Any]:
    """The zoo spec ``{name, options, signature}`` of a saved model (without loading it); a
    remote artifact is fetched first (``store.artifacts.local``)."""
    doc = _description(path)
    if not doc.get("model"):
        raise ConfigError(f"{str(path)!r} holds a user-defined model without a zoo spec.")
    return doc["model"]


def load_model(path: str | Path, *, factory: Callable[[], nn.Module] | None = None) -> nn.Module:
    """Rebuild a saved model: from its zoo spec, or by calling ``factory()`` for a user module.
    ``path`` may be a remote artifact's URL (fetched once into the local cache)."""
    folder = local(path)
    spec_file, weights = folder / SPEC, folder / WEIGHTS
    if not spec_file.exists() or not weights.exists():
        raise DataError(
            f"{str(folder)!r} is not a saved tidian model: it needs {SPEC} and "
            f"{WEIGHTS} (written by tidian.save_model)."
        )
    try:
        doc = json.loads(spec_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{str(spec_file)!r} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{str(spec_file)!r} is not a tidian model description (a JSON object).")
    if doc.get("format") != FORMAT:
        raise DataError(
            f"{str(spec_file)!r} has format {doc.get('format')!r}; this tidian reads {FORMAT!r}."
        )
    if factory is not None:
        model = factory()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"factory must return a torch.nn.Module; got {type(model).__name__}.")
    elif doc.get("model"):
        spec = _model_spec(doc["model"], spec_file)
        model = create_model(spec.name, spec.signature, **spec.options)
    else:
        raise ConfigError(
            f"{str(folder)!r} holds a user-defined model; pass the function that "
            "builds it: load_model(path, factory=MyModel)."
        )
    structure = doc.get("structure") or {}
    from safetensors import SafetensorError, safe_open

    try:
        if structure:
            with safe_open(str(weights), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            conform(model, shapes, structure)
        missing, unexpected = st_load_model(model, str(weights), strict=False)
    except SafetensorError as err:  # a truncated or malformed file: header, offsets, JSON
        raise DataError(
            f"{str(weights)!r} is not a readable safetensors file ({err}); save the model again."
        ) from None
    except RuntimeError as err:
        raise DataError(f"the weights in {str(weights)!r} do not fit the model: {err}") from None
    if missing or unexpected:
        raise DataError(
            f"the weights in {str(weights)!r} do not fit the model: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
        )
    if doc.get("model") and factory is None:
        set_spec(model, _model_spec(doc["model"], spec_file))
    if hasattr(model, "library_files"):  # kept, so that saving the model again keeps them
        named = [folder / _plain_name(n) for n in doc.get("library_files") or []]
        model.library_files = {p.name: p.read_bytes() for p in named if p.is_file()}
    return model.eval()


def _plain_name(name: Any) -> str:
    """A library file's name: a plain file name in the model's folder, nothing else."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (SPEC, WEIGHTS):
        raise DataError(f"library file name {name!r}: a plain file name is expected.")
    return name


def _model_spec(data: Any, where: Path) -> ModelSpec:
    """The ``model`` entry of a tidian.json, checked: its keys are ModelSpec's."""
    try:
        return ModelSpec(**data)
    except TypeError as err:
        raise DataError(f"{str(where)!r}: the model entry is malformed ({err}).") from None
