"""Building blocks shared by the zoo: input adapters, norms, activations, the output head.

Every zoo model is a plain ``nn.Module`` taking the task's raw input tensor and returning
``(batch, n_outputs)``: class logits, or values for regression. Input adapters turn each input
kind into what a family consumes, so that one family works on every kind where it makes sense:

* ``FlatInput``     → (batch, features): vectors as they are, sequences/images flattened,
                      text as the mean of its token embeddings (padding excluded);
* ``SequenceInput`` → (batch, length, channels) plus a padding mask: vectors as a 1-channel
                      sequence, images as a sequence of rows, text as token embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from tidian.exceptions import ConfigError, bad_value
from tidian.registry import Registry

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}
NORMS = ("none", "batch", "layer")


@dataclass(frozen=True)
class Signature(Mapping[str, Any]):
    """What a model's shape depends on; saved with its weights so it can be rebuilt.

    ``Task.signature()`` returns one and a registered model's builder receives one. Read it
    as attributes (``sig.input_shape``) or as a read-only mapping (``sig["input_shape"]``,
    ``dict(sig)``); ``Signature.of(task_or_dict)`` makes one.
    """

    input_kind: str
    input_shape: tuple[int, ...]
    target_kind: str
    n_outputs: int
    vocab_size: int | None = None

    @classmethod
    def of(cls, task: Any) -> Signature:
        if isinstance(task, Signature):
            return task
        if isinstance(task, dict):
            data = dict(task)
        elif hasattr(task, "signature"):
            return cls.of(task.signature())
        else:
            raise bad_value("task", "a tidian Task or a model signature", type(task).__name__)
        data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """As JSON data (``input_shape`` a list)."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def __getitem__(self, key: str) -> Any:
        if key not in _SIGNATURE_FIELDS:
            raise KeyError(f"{key!r}: a model signature has {', '.join(_SIGNATURE_FIELDS)}")
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_SIGNATURE_FIELDS)

    def __len__(self) -> int:
        return len(_SIGNATURE_FIELDS)


_SIGNATURE_FIELDS = tuple(f.name for f in fields(Signature))


def check_choice(param: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise bad_value(param, f"one of {tuple(choices)}", value)


def check_positive_int(param: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_value(param, f"an integer >= {minimum}", value)
    return value


def check_dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise bad_value("dropout", "a probability in [0, 1)", value)
    return float(value)


def activation(name: str) -> nn.Module:
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]()


def norm_layer(kind: str, channels: int, layout: str) -> nn.Module:
    """A normalisation layer for features ``(N, C)`` (layout 'features') or maps ``(N, C, ...)``.

    For maps, 'layer' is GroupNorm with one group: LayerNorm over channels and positions, which
    unlike ``nn.LayerNorm`` does not fix the map size.
    """
    check_choice("norm", kind, NORMS)
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels) if layout == "map2d" else nn.BatchNorm1d(channels)
    return nn.LayerNorm(channels) if layout == "features" else nn.GroupNorm(1, channels)


def refuse(name: str, sig: Signature, inputs: tuple[str, ...], instead: str) -> ConfigError:
    return ConfigError(
        f"model {name!r} does not take {sig.input_kind} inputs (it takes {', '.join(inputs)}). "
        f"For {sig.input_kind} inputs try {instead}."
    )


class TokenEmbedding(nn.Module):
    """Token ids (N, L) → embeddings (N, L, D) and a mask that is True at real tokens."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = ids != 0
        # An empty text would mask every position (attention then yields NaN): keep the first.
        # (Written without in-place ops so the TorchScript ONNX exporter takes it.)
        first = mask[:, :1] | ~mask.any(1, keepdim=True)
        mask = torch.cat([first, mask[:, 1:]], dim=1)
        return self.embedding(ids), mask


class FlatInput(nn.Module):
    """Any input kind → (N, features)."""

    def __init__(self, sig: Signature, embed_dim: int = 64) -> None:
        super().__init__()
        self.embed = None
        if sig.input_kind == "text":
            self.embed = TokenEmbedding(
                sig.vocab_size or 2, check_positive_int("embed_dim", embed_dim)
            )
            self.out_features = embed_dim
        else:
            self.out_features = 1
            for d in sig.input_shape:
                self.out_features *= d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is None:
            return x.flatten(1)
        vectors, mask = self.embed(x)
        return masked_mean(vectors, mask)


class SequenceInput(nn.Module):
    """Any input kind except nothing → (N, L, C) and an optional padding mask (True = real)."""

    def __init__(self, sig: Signature, embed_dim: int = 64) -> None:
        super().__init__()
        self.kind = sig.input_kind
        self.embed = None
        shape = sig.input_shape
        if self.kind == "text":
            self.embed = TokenEmbedding(
                sig.vocab_size or 2, check_positive_int("embed_dim", embed_dim)
            )
            self.length, self.channels = shape[0], embed_dim
        elif self.kind == "vector":
            self.length, self.channels = shape[0], 1
        elif self.kind == "sequence":
            self.length, self.channels = shape
        else:  # image (C, H, W): a sequence of H rows of C*W values
            self.length, self.channels = shape[1], shape[0] * shape[2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.embed is not None:
            return self.embed(x)
        if self.kind == "vector":
            return x.unsqueeze(-1), None
        if self.kind == "image":
            return x.permute(0, 2, 1, 3).flatten(2), None
        return x, None


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    if mask is None:
        return x.mean(dim)
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim) / weights.sum(dim).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    if mask is None:
        return x.amax(dim)
    return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(dim)


class Head(nn.Module):
    """The output layer. For regression it maps to the training targets' scale.

    The network learns unit-scale outputs; ``y = raw * scale + shift`` with ``shift``/``scale``
    set from the training targets by ``create_model`` (buffers, so they are saved with the
    weights). Without it a target in the thousands makes every initialisation far off.
    """

    def __init__(self, in_features: int, sig: Signature) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, sig.n_outputs)
        self.regression = sig.target_kind == "values"
        self.register_buffer("shift", torch.zeros(sig.n_outputs))
        self.register_buffer("scale", torch.ones(sig.n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        if self.regression:
            out = out * self.scale + self.shift
        return out


# The zoo, filled by the family modules (mlp, cnn, rnn, transformer) as they are imported.
MODELS: Registry[Any] = Registry("model", listing="tidian models")

# Inputs that flatten to a table of numbers: what the library-trained families take.
TABLES = ("vector", "sequence", "image")
# A library-fitted family's registration: tables; trainable=False: the torch loop cannot
# train it; fitted=True: train_new has its library fit it (its module's ``fit_with``)
FITTED = {"inputs": TABLES, "trainable": False, "fitted": True}


def refuse_multi_target(sig: Signature, family: str) -> None:
    """Refuse a family that predicts one value on a task with several targets."""
    if sig.target_kind == "values" and sig.n_outputs > 1:
        raise ConfigError(
            f"model {family!r} predicts one value; this task has {sig.n_outputs} targets. "
            "Use a network (mlp), or one task per target."
        )


def class_weight_option(sig: Signature, family: str, value: Any) -> dict[str, Any]:
    """A scikit-learn family's ``class_weight`` as its keyword ({} when unset): ``balanced``
    (weights inverse to the classes' frequencies) on a task with classes, else refused."""
    if value is None:
        return {}
    if sig.target_kind == "values":
        raise ConfigError(f"{family} class_weight: this task predicts values, not classes.")
    if value != "balanced":
        raise bad_value(f"{family} class_weight", "'balanced' or null", value)
    return {"class_weight": value}


def refuse_unseen_classes(task: Any, seen: int, source: str) -> None:
    """Refuse a library model that saw fewer (or more) classes than the task has (one class
    seen: a library that reports a single output, which the caller lays out itself)."""
    if task.target_kind == "classes" and seen not in (1, task.n_classes):
        raise ConfigError(
            f"the {source} model saw a different number of classes than the task has "
            f"({seen} against {task.n_classes}): every class must occur in the training split."
        )


def refuse_disagreement(
    family: str, library: str, mine: np.ndarray, theirs: Any, outputs: str = "predictions"
) -> None:
    """Refuse a model converted to tensors whose outputs ``mine`` differ from its library's
    own ``theirs`` on the same rows (relative to 1 + |theirs|, above 1e-4)."""
    theirs = np.asarray(theirs, dtype=np.float64).reshape(mine.shape)
    error = np.abs(np.asarray(mine, dtype=np.float64) - theirs)
    if error.size and float((error / (1 + np.abs(theirs))).max()) > 1e-4:
        raise ConfigError(
            f"the {family} model converted to tensors disagrees with {library}'s own {outputs} "
            f"(max |difference| {float(error.max()):.3g}); it was not kept."
        )


# Training options that change a model its library trains (a tree family): its seed alone.
LIBRARY_TRAIN_KEYS = frozenset({"seed_stream"})


def trained_by_library(name: str) -> bool:
    """Whether zoo model ``name`` is trained by its own library, not tidian's training loop
    (a tree family; a trained ``trees`` model cannot be trained at all): the torch training
    options (lr, epochs, losses…) do not change it. Unknown names: False."""
    return name in MODELS and MODELS.entry(name).meta.get("trainable", True) is False


def library_ignores(name: str, keys: Any) -> bool:
    """Whether changing the training options ``keys`` leaves zoo model ``name`` as it was:
    its library trains it, and none of them is one that reaches the library."""
    return trained_by_library(name) and not set(keys) & LIBRARY_TRAIN_KEYS
